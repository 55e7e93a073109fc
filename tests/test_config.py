"""TrainConfig: the assignment's defaults, validation naming the field, JSON round trip."""
import json

import pytest

from cifar_core.config import TrainConfig


def test_defaults_are_the_assignments():
    c = TrainConfig()
    assert (c.epochs, c.batch_size, c.learning_rate, c.dropout, c.seed) == (25, 64, 0.001, 0.2, 7)
    assert c.train_subset is None and c.test_subset is None


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", 2.5), ("epochs", True), ("batch_size", 0), ("learning_rate", 0),
    ("learning_rate", float("nan")), ("learning_rate", 5), ("dropout", 1.0), ("dropout", -0.1),
    ("seed", -1), ("train_subset", 0), ("test_subset", -5), ("data", ""), ("data", 3),
])
def test_bad_values_fail_at_construction_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_json_round_trip():
    c = TrainConfig(epochs=3, learning_rate=0.0005, data="synthetic", train_subset=100)
    assert TrainConfig.from_dict(json.loads(c.to_json())) == c


def test_unknown_keys_are_refused():
    with pytest.raises(ValueError, match="unknown config field"):
        TrainConfig.from_dict({"epochs": 2, "epoch": 3})


def test_frozen():
    with pytest.raises(Exception):
        TrainConfig().epochs = 3  # type: ignore[misc]
