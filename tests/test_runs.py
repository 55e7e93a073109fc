"""The run store: round trip, never overwrite, ids that cannot escape, broken folders, safe loading."""
import json
import os

import numpy as np
import pytest

from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.paths import runs_dir


def test_round_trip(artifacts):
    config = TrainConfig(epochs=2, data="synthetic", train_subset=10)
    path = runs.create_run(config)
    assert path.parent == runs_dir() and path.is_dir()
    history = {"loss": [1.5, 1.2], "accuracy": [0.4, 0.5], "val_loss": [1.4, float("nan")], "val_accuracy": [0.45, 0.5]}
    runs.write_history(path, history)
    runs.write_metrics(path, {"test_loss": 1.3, "test_accuracy": 0.5})
    runs.update_status(path, status="completed", finished_at=1e9 + 60)
    run = runs.load_run(path.name)
    assert run.broken is None and run.status == "completed"
    assert run.config == config
    assert run.history["loss"] == [1.5, 1.2] and np.isnan(run.history["val_loss"][1])  # NaN stored as null
    assert json.loads((path / "history.json").read_text())["val_loss"] == [1.4, None]
    assert (path / "history.csv").read_text().splitlines() == [
        "epoch,loss,accuracy,val_loss,val_accuracy", "1,1.5,0.4,1.4,0.45", "2,1.2,0.5,,0.5"]
    assert run.test_accuracy == 0.5 and run.epochs_done == 2
    assert not list(path.glob(".*tmp*")), "no temporary file left behind"


def test_runs_are_never_overwritten(artifacts):
    path = runs.create_run(TrainConfig(), run_id="fixed-id")
    with pytest.raises(runs.RunError, match="never overwritten"):
        runs.create_run(TrainConfig(epochs=3), run_id="fixed-id")
    assert runs.load_run("fixed-id").config == TrainConfig()
    assert path.is_dir()


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "/etc", "x/../../y", "", ".hidden", "a\\b", "a\x00b", "é"])
def test_run_ids_cannot_name_a_path_outside_the_runs_folder(artifacts, bad):
    with pytest.raises(runs.RunError, match="invalid run id|escapes"):
        runs.run_path(bad)
    with pytest.raises(runs.RunError):
        runs.load_run(bad)
    with pytest.raises(runs.RunError):
        runs.delete_run(bad)


def _finished_run(run_id="good"):
    path = runs.create_run(TrainConfig(epochs=1, data="synthetic"), run_id=run_id)
    runs.write_history(path, {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.1], "val_accuracy": [0.4]})
    runs.update_status(path, status="completed", finished_at=2e9)
    return path


@pytest.mark.parametrize("damage, reason", [
    (lambda p: (p / "status.json").write_text("{not json"), "status.json is not valid JSON"),
    (lambda p: (p / "status.json").unlink(), "status.json is missing"),
    (lambda p: (p / "config.json").write_text('{"epochs": "many"}'), "config.json"),
    (lambda p: (p / "config.json").write_bytes(b"\xff\xfe garbage"), "config.json"),
    (lambda p: (p / "history.json").write_text('{"loss": ["a"]}'), "history.json"),
    (lambda p: (p / "history.json").write_text("[1, 2]"), "history.json"),
])
def test_a_broken_run_is_listed_with_its_reason_and_the_rest_still_list(artifacts, damage, reason):
    _finished_run("good")
    damage(_finished_run("bad"))
    listed = {r.run_id: r for r in runs.list_runs()}
    assert set(listed) == {"good", "bad"}
    assert listed["good"].broken is None
    assert reason in listed["bad"].broken


def test_stray_files_and_folders_do_not_break_listing(artifacts):
    _finished_run("good")
    (runs_dir() / "empty-folder").mkdir()
    (runs_dir() / "a-file.txt").write_text("x")
    listed = {r.run_id: r for r in runs.list_runs()}
    assert set(listed) == {"good", "empty-folder"}
    assert "status.json is missing" in listed["empty-folder"].broken


def test_a_model_file_that_is_not_a_keras_archive_is_refused_clearly(artifacts):
    path = _finished_run()
    (path / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(runs.RunError, match="cannot load model.keras of run good"):
        runs.load_model("good")


def test_a_model_with_a_lambda_layer_is_refused_by_safe_mode(artifacts):
    import keras

    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Lambda(lambda x: x * 2),  # arbitrary Python code, stored as bytecode
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    path = _finished_run()
    model.save(path / "model.keras")
    with pytest.raises(runs.RunError, match="cannot load model.keras.*(unsafe|safe_mode|Lambda)"):
        runs.load_model("good")


def test_delete_removes_only_that_run_and_refuses_an_active_one(artifacts):
    _finished_run("keep")
    _finished_run("drop")
    runs.delete_run("drop")
    assert [r.run_id for r in runs.list_runs()] == ["keep"]
    live = runs.create_run(TrainConfig(), run_id="live")
    with runs.claim_run(live):  # its trainer holds the run's claim: it is training
        with pytest.raises(runs.RunError, match="still training"):
            runs.delete_run("live")
        assert live.is_dir()


def test_a_running_status_without_a_live_trainer_reads_as_interrupted(artifacts):
    path = runs.create_run(TrainConfig(), run_id="orphan")
    runs.update_status(path, pid=2**22 + 12345)  # no such process, and nobody holds the run's claim
    assert runs.load_run("orphan").status == "interrupted"
    runs.update_status(path, pid=os.getpid())  # a live process, but nobody holds the run's claim
    assert runs.load_run("orphan").status == "interrupted"
    with runs.claim_run(path):  # the control: held by a trainer, the same status reads running
        assert runs.load_run("orphan").status == "running"


def test_full_disk_is_reported_before_training(artifacts, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * 2**20, 5 * 2**20))
    with pytest.raises(runs.RunError, match="only 5 MB free"):
        runs.create_run(TrainConfig())


def test_a_run_is_named_tagged_and_annotated_in_its_own_file(artifacts):
    path = runs.create_run(TrainConfig(), run_id="named", name="  first   try ", tags="baseline, lr-sweep baseline")
    run = runs.load_run("named")
    assert (run.name, run.tags, run.title) == ("first try", ("baseline", "lr-sweep"), "first try")
    assert json.loads((path / runs.META_FILE).read_text()) == {"name": "first try", "tags": ["baseline", "lr-sweep"]}
    runs.update_status(path, status="stopped")  # the trainer's files never touch the name
    run = runs.update_meta("named", notes="lr 1e-3 was too high")
    assert (run.name, run.notes, run.tags) == ("first try", "lr 1e-3 was too high", ("baseline", "lr-sweep"))
    assert runs.update_meta("named", name="").title == "named"  # an empty name falls back to the id
    assert runs.load_run("named").notes == "lr 1e-3 was too high"


@pytest.mark.parametrize("fields, message", [
    ({"name": "x" * 81}, "name: at most 80"),
    ({"tags": "ok not/ok"}, "'not/ok' is not a tag"),
    ({"tags": [f"t{i}" for i in range(21)]}, "tags: at most 20"),
    ({"notes": "n" * 5001}, "notes: at most 5000"),
])
def test_bad_names_tags_and_notes_are_refused_with_the_field(artifacts, fields, message):
    runs.create_run(TrainConfig(), run_id="target")
    with pytest.raises(ValueError, match=message):
        runs.update_meta("target", **fields)
    with pytest.raises(ValueError, match=message.split(":")[0]):
        runs.create_run(TrainConfig(), run_id="never-made", **{k: v for k, v in fields.items() if k != "notes"}) \
            if "notes" not in fields else runs.clean_meta(**fields)
    assert not (runs_dir() / "never-made").exists()


def test_a_damaged_meta_file_costs_the_name_not_the_run(artifacts):
    path = runs.create_run(TrainConfig(), run_id="damaged", name="kept?")
    (path / runs.META_FILE).write_text("{not json")
    run = runs.load_run("damaged")
    assert run.broken is None and run.name == "" and run.title == "damaged"
