"""Training configuration: one frozen dataclass, validated at construction, saved with every run."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; the assignment's values are the defaults."""

    epochs: int = 25  # full passes over the training set
    batch_size: int = 64  # images per gradient step
    learning_rate: float = 0.001  # Adam's step size (Keras' default)
    dropout: float = 0.2  # drop rate of every Dropout layer
    seed: int = 7  # seeds Python, NumPy and TensorFlow, and the subset choice
    data: Optional[str] = None  # 'keras', 'synthetic' or a path; None: $CIFAR10_DATA, else 'keras'
    train_subset: Optional[int] = None  # use only this many training images (None: all)
    test_subset: Optional[int] = None  # validate and evaluate on this many test images (None: all)
    validation_batch_size: int = 256  # images per step when validating; does not change results

    def __post_init__(self) -> None:
        def need_int(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")

        need_int("epochs", 1, 1000)
        need_int("batch_size", 1, 8192)
        need_int("seed", 0, 2**31 - 1)
        need_int("validation_batch_size", 1, 8192)
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                need_int(name, 1, 10_000_000)
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 1:
            raise ValueError(f"learning_rate must be a number in (0, 1], got {lr!r}")
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {d!r}")
        if self.data is not None and (not isinstance(self.data, str) or not self.data.strip()):
            raise ValueError(f"data must be 'keras', 'synthetic' or a path, got {self.data!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, refusing unknown keys so a typo never passes silently."""
        if not isinstance(values, dict):
            raise ValueError(f"a config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
