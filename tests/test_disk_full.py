"""A disk that fills during a run: the job fails saying the disk is full and where, the last whole
checkpoint still loads, no half-written or temporary file is left, and the dashboard keeps serving.

Two ways to fill it. Always: fault injection at the write calls (Keras' model.save and the run
store's file writes fail with ENOSPC from the second checkpoint on). Where this machine lets a test
mount a tmpfs (root with mount rights; most containers forbid it): a real 40 MB filesystem that
another writer fills right after the first epoch is recorded, then is freed and the run resumed."""
from __future__ import annotations

import builtins
import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cifar_core.insight import evaluation
from cifar_core import runs, training
from cifar_core.runs import store
from cifar_core.config import TrainConfig
from job_helpers import resume_job, start_job

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(architecture="airbench", widths=(8, 16, 16), batch_size=32, data="synthetic")  # ~0.25 MB checkpoints
FULL_MESSAGE = (r"^the disk holding (?P<folder>\S+) is full \(No space left on device\) while (?P<doing>.+); "
                r"free space and resume the run$")


# --- what must hold however the disk filled ---------------------------------------------------

def assert_failed_as_disk_full(job: training.TrainingJob) -> str:
    """The job's live state says failed, with a message naming the run's folder and what it was
    doing (the file it was saving, when the store's writer failed). Returns it."""
    snap = job.snapshot()
    assert snap.status == "failed", (snap.status, snap.error)
    match = re.match(FULL_MESSAGE, snap.error or "")
    assert match, snap.error
    assert Path(match["folder"]) == job.run_dir and snap.history["loss"]
    assert snap.message == f"Failed: {snap.error}"
    return snap.error


def assert_nothing_half_written(run_dir: Path) -> None:
    """Every JSON file parses; no temporary file of the store's (.<name>.<pid>.<thread>.tmp[.keras])
    or of the predictions cache remains, nor the space the trainer set aside."""
    for path in run_dir.rglob("*.json"):
        json.loads(path.read_text())
    leftovers = [p.name for p in run_dir.rglob(".*") if ".tmp" in p.name or p.name == store.RESERVE_FILE]
    assert not leftovers, leftovers


def assert_last_checkpoint_serves(run_id: str, data, epochs_done: int) -> None:
    """The run lists as failed and its last whole checkpoint loads and predicts finite values."""
    (listed,) = [r for r in runs.list_runs() if r.run_id == run_id]
    assert listed.status == "failed" and listed.broken is None
    assert listed.epochs_done == epochs_done and listed.model_path == listed.path / "checkpoint.keras"
    model = runs.load_model(run_id)
    probs = evaluation.predict_test_set(model, data.x_test, 256)
    assert probs.shape == (len(data.x_test), 10) and np.isfinite(probs).all()
    assert np.isfinite(evaluation.TestPredictions(probs, data.y_test).losses.mean())


def assert_runs_page_shows(run_id: str, error: str) -> None:
    """The dashboard's Runs page renders, listing the run as failed with the message."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.proto.message for e in at.exception]
    table = at.dataframe[0].value
    (row,) = table[table["run"] == run_id].to_dict("records")
    assert row["status"] == "failed" and row["problem"] == error


# --- fault injection: always --------------------------------------------------------------------

class InjectedFullDisk:
    """Makes the disk 'fill' during model save number `fill_at`: that save writes part of its file
    and fails, and from then on every write of the run store fails too, until `free()`."""

    def __init__(self, monkeypatch, fill_at: int):
        import keras

        self.full = False
        self.saves = 0
        real_save, real_open = keras.Model.save, builtins.open

        def save(model, filepath, *args, **kwargs):
            self.saves += 1
            if self.saves >= fill_at:
                self.full = True
            if not self.full:
                return real_save(model, filepath, *args, **kwargs)
            with real_open(filepath, "wb") as f:
                f.write(b"PK\x03\x04" + bytes(1000))  # the start of a zip, as far as it got
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

        def open_(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return _FullFile(f) if self.full and any(m in mode for m in "wax+") else f

        monkeypatch.setattr(keras.Model, "save", save)
        monkeypatch.setattr(store, "open", open_, raising=False)  # write_text's open

    def free(self) -> None:
        self.full = False


class _FullFile:
    """A file on a full disk: the first part of a write lands, then ENOSPC."""

    def __init__(self, f):
        self._f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._f.close()

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._f.name)

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_disk_full_by_fault_injection_fails_the_job_and_keeps_the_last_checkpoint(artifacts, tiny_data,
                                                                                    monkeypatch):
    print("disk-full mode: fault injection (ENOSPC from model.save and the run store's writes)")
    disk = InjectedFullDisk(monkeypatch, fill_at=2)  # the second checkpoint (epoch 2) fills it
    job = start_job(TrainConfig(epochs=3, **SMALL), dataset=tiny_data)
    assert job.join(120)
    error = assert_failed_as_disk_full(job)
    assert "while saving checkpoint.keras;" in error

    # Not even status.json could be written: the file on disk is the last whole one ("running"),
    # and this process's readers still see the failure, never a run that trains forever.
    assert json.loads((job.run_dir / "status.json").read_text())["status"] == "running"
    run = runs.load_run(job.run_id)
    assert (run.status, run.error, run.epochs_done) == ("failed", error, 1)
    assert_nothing_half_written(job.run_dir)
    assert_last_checkpoint_serves(job.run_id, tiny_data, epochs_done=1)
    assert_runs_page_shows(job.run_id, error)

    disk.free()  # someone frees space: the next read writes the final status for every process
    assert runs.load_run(job.run_id).status == "failed"
    on_disk = json.loads((job.run_dir / "status.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == error
    assert_nothing_half_written(job.run_dir)


# --- a real full filesystem: where the machine allows a mount -----------------------------------

@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 40 MB tmpfs as the artifacts folder; skipped (with the reason) where mounting is forbidden."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        done = subprocess.CompletedProcess([], 1, "", str(exc))
    if done.returncode != 0:
        pytest.skip(f"disk-full mode: a real tmpfs cannot be mounted here ({done.stderr.strip()}); "
                    f"only the fault-injection test ran")
    print("disk-full mode: real tmpfs of 40 MB")
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(mount_point / "artifacts"))
    monkeypatch.setattr(runs, "MIN_FREE_BYTES", 2**20)  # the 200 MB a real run asks for is more than the disk
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(folder: Path) -> Path:
    """Another writer takes every free byte of `folder`'s filesystem; returns its file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (2**20, 4096, 1):
            try:
                while True:
                    f.write(bytes(chunk))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    assert shutil.disk_usage(folder).free < 4096
    return filler


def test_disk_full_on_a_real_filesystem_fails_the_job_and_the_run_resumes_once_freed(small_disk, tiny_data,
                                                                                      monkeypatch):
    filled = []
    real_update = runs.update_status

    def update_status(run_dir, **fields):  # the trainer records epoch 1: the disk fills right after
        current = real_update(run_dir, **fields)
        if fields.get("epochs_done") == 1 and not filled:
            filled.append(fill(small_disk))
        return current

    monkeypatch.setattr(runs, "update_status", update_status)
    job = start_job(TrainConfig(epochs=3, **SMALL), dataset=tiny_data)
    assert job.join(120)
    assert filled, "the disk was never filled"
    error = assert_failed_as_disk_full(job)

    # The space the run set aside took its final status: every process reads the failure.
    on_disk = json.loads((job.run_dir / "status.json").read_text())
    assert on_disk["status"] == "failed" and on_disk["error"] == error and on_disk["epochs_done"] == 1
    assert shutil.disk_usage(small_disk).free < 2**20  # still full while the dashboard reads it
    assert_nothing_half_written(job.run_dir)
    assert_last_checkpoint_serves(job.run_id, tiny_data, epochs_done=1)
    assert_runs_page_shows(job.run_id, error)

    filled[0].unlink()  # space freed: the run continues from its last whole epoch
    resumed = resume_job(job.run_id, dataset=tiny_data)
    assert resumed.join(120) and resumed.snapshot().status == "completed", resumed.snapshot().error
    run = runs.load_run(job.run_id)
    assert run.status == "completed" and run.epochs_done == 3 and run.metrics["test_accuracy"] > 0
    assert_nothing_half_written(job.run_dir)
