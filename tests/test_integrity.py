"""Run integrity: a run's files never disagree with its history under resume, stop, a kill and
concurrent readers and writers; durations count work, not idle time; readers do only needed work.

Interleavings are driven with the trainer's fault-injection hooks and events, never sleeps."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cifar_core import data, runs, training
from cifar_core.insight import evaluation
from cifar_core.runs import store
from cifar_core.config import TrainConfig
from cifar_core.data import make_synthetic
from job_helpers import resume_job, start_job

ROOT = Path(__file__).resolve().parent.parent
QUICK = dict(batch_size=32, data="synthetic")


def _pause_at(job_hooks: dict, name: str):
    """Make the trainer wait at hook `name`; returns (reached, release) events."""
    reached, release = threading.Event(), threading.Event()

    def hook():
        reached.set()
        assert release.wait(60), f"the test never released the trainer at {name!r}"

    job_hooks[name] = hook
    return reached, release


def _status_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


# --- Stop against the job's own transitions ------------------------------------------------

def test_stop_while_preparing_ends_the_job_without_saving_an_untrained_model(artifacts, tiny_data):
    gates = {}
    job = start_job(TrainConfig(epochs=2, **QUICK), dataset=tiny_data,
                             on_created=lambda j: gates.update(zip(("reached", "release"),
                                                                   _pause_at(j.hooks, "prepared"))))
    assert gates["reached"].wait(120)
    assert job.snapshot().status == "preparing"
    assert job.stop() is True
    assert job.stop() is False  # already stopping: one transition, not two
    gates["release"].set()
    assert job.join(60)
    snap = job.snapshot()
    assert snap.status == "stopped" and "nothing was saved" in snap.message
    assert not snap.is_active and snap.history == {}
    run = runs.load_run(job.run_id)
    assert run.status == "stopped" and _status_json(run.path)["status"] == "stopped"
    assert run.model_path is None and run.metrics is None  # no untrained model saved or evaluated
    assert not (run.path / evaluation.PREDICTIONS_FILE).exists()


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_a_stop_landing_as_the_job_finishes_cannot_leave_it_stopping(artifacts, tiny_data):
    gates = {}
    job = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data,
                             on_created=lambda j: gates.update(zip(("reached", "release"),
                                                                   _pause_at(j.hooks, "finishing"))))
    assert gates["reached"].wait(120)  # trained, saved, evaluated; the final status is next
    assert job.snapshot().status == "running"
    assert job.stop() is True  # lands now: the job is still active
    assert _status_json(job.run_dir)["status"] == "running"  # only the trainer writes the run's status
    gates["release"].set()
    assert job.join(60)
    assert job.snapshot().status == "completed"  # every epoch was done: the trainer's status stands
    assert job.stop() is False  # and a Stop after the end changes nothing
    assert job.snapshot().status == "completed"
    assert _status_json(job.run_dir)["status"] == "completed"
    assert runs.load_run(job.run_id).status == "completed"
    again = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)  # Start is free again
    assert again.join(120) and again.snapshot().status == "completed"


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_many_stops_racing_the_end_of_many_jobs_never_leave_one_stopping(artifacts):
    """Stop pressed from several sessions at the moment a job ends, repeated: each job ends
    completed or stopped, in memory and on disk, and the next Start is never refused."""
    small = make_synthetic(64, 32, seed=3)
    for _ in range(3):
        gates = {}
        job = start_job(TrainConfig(epochs=1, batch_size=32, data="synthetic"), dataset=small,
                                 on_created=lambda j: gates.update(zip(("reached", "release"),
                                                                       _pause_at(j.hooks, "finishing"))))
        assert gates["reached"].wait(120)
        barrier = threading.Barrier(5)

        def press_stop():
            barrier.wait()
            job.stop()

        pressers = [threading.Thread(target=press_stop) for _ in range(4)]
        for t in pressers:
            t.start()
        barrier.wait()
        gates["release"].set()  # the trainer finishes while the Stops land
        for t in pressers:
            t.join()
        assert job.join(60)
        final = job.snapshot().status
        assert final in ("completed", "stopped") and _status_json(job.run_dir)["status"] == final


# --- cached predictions: safe writers, honest stamps -----------------------------------------

def test_concurrent_prediction_writers_never_fail_and_a_reader_sees_whole_consistent_files(artifacts):
    run_dir = runs.create_run(TrainConfig(**QUICK))
    path = run_dir / evaluation.PREDICTIONS_FILE
    labels = np.arange(500) % 10
    errors, reads = [], []
    done = threading.Event()

    def writer(k: int):
        probs = np.full((500, 10), k / 100, np.float32)  # each writer's content names the writer
        try:
            for _ in range(15):
                evaluation.save_predictions(run_dir, evaluation.TestPredictions(probs, labels), f"model-{k}")
        except Exception as exc:
            errors.append(exc)

    def reader():
        while not done.is_set():
            found = evaluation.read_predictions(path) if path.exists() else None
            if found is not None:
                preds, stamp = found
                reads.append((stamp, float(preds.probabilities[0, 0])))

    watcher = threading.Thread(target=reader)
    watcher.start()
    writers = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    watcher.join()
    assert not errors
    assert reads, "the reader never saw the file"
    for stamp, value in reads:  # stamp and arrays always come from the same writer
        assert stamp == f"model-{round(value * 100)}"
    assert not list(run_dir.glob(".*tmp*")), "a temporary file was left behind"


def test_predictions_are_labelled_with_the_model_that_made_them(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)
    assert job.join(120) and job.snapshot().status == "completed"
    run = runs.load_run(job.run_id)
    assert evaluation.load_cached_predictions(run.run_id) is not None  # the trainer's own
    model, stamp = runs.load_model_stamped(run.run_id)
    assert stamp == runs.model_stamp(run.path / "model.keras")
    runs.save_model(model, run.path / "model.keras")  # a newer model file replaces it
    assert evaluation.load_cached_predictions(run.run_id) is None  # no longer describes the model
    # predictions made with the old model object are not labelled with the new file's stamp
    evaluation.test_predictions(run.run_id, model=model, data=tiny_data, model_stamp=stamp)
    assert evaluation.load_cached_predictions(run.run_id) is None
    fresh = evaluation.test_predictions(run.run_id)  # loads the current file, stamps it with it
    assert evaluation.read_predictions(run.path / evaluation.PREDICTIONS_FILE)[1] == \
        runs.model_stamp(run.path / "model.keras")
    assert evaluation.load_cached_predictions(run.run_id).accuracy == fresh.accuracy


def test_a_copied_run_folder_keeps_its_cached_predictions(artifacts, tiny_data):
    import shutil

    job = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)
    assert job.join(120)
    shutil.copytree(job.run_dir, job.run_dir.with_name("copied-run"))
    assert evaluation.load_cached_predictions("copied-run") is not None


# --- resume after a kill: the loadable model is the history's last epoch --------------------

def _cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cifar_core", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.heavy
def test_a_resumed_run_killed_mid_training_serves_its_last_epoch_and_resumes_from_it(artifacts):
    env = dict(os.environ, CIFAR_ARTIFACTS_DIR=str(artifacts), CIFAR10_DATA="synthetic")
    common = ["--train-subset", "1500", "--test-subset", "300", "--batch-size", "32"]
    first = _cli("train", "--epochs", "1", *common, env=env)
    assert first.wait(300) == 0, first.stdout.read()
    (run,) = runs.list_runs()
    assert run.status == "completed" and (run.path / "model.keras").is_file()
    assert (run.path / evaluation.PREDICTIONS_FILE).is_file()

    resumed = _cli("resume", run.run_id, "--epochs", "50", env=env)
    deadline = time.monotonic() + 300
    while _status_json(run.path).get("epochs_done", 0) < 2:  # one more epoch checkpointed
        assert resumed.poll() is None and time.monotonic() < deadline, "the resumed run stopped early"
        time.sleep(0.05)
    resumed.send_signal(signal.SIGKILL)
    resumed.wait(30)

    run = runs.load_run(run.run_id)
    assert run.status == "interrupted" and run.epochs_done >= 2
    assert run.model_path == run.path / "checkpoint.keras"  # the pre-resume final model is retired
    assert not (run.path / evaluation.PREDICTIONS_FILE).exists() and run.metrics is None
    preds = evaluation.test_predictions(run.run_id)  # loads what Evaluate, Browse and Predict load
    assert float(preds.losses.mean()) == pytest.approx(run.history["val_loss"][-1], rel=1e-3)
    assert preds.accuracy == pytest.approx(run.history["val_accuracy"][-1], abs=1e-6)

    done = run.epochs_done
    again = _cli("resume", run.run_id, "--epochs", str(done + 1), env=env)
    assert again.wait(300) == 0, again.stdout.read()
    run = runs.load_run(run.run_id)
    assert run.status == "completed" and run.epochs_done == done + 1
    assert json.loads((run.path / "status.json").read_text())["resumed_from_epoch"] == done


# --- a resume changes nothing until training begins; one process trains a run folder ----------

def _folder_state(run_dir: Path) -> dict:
    """What a resume must not change before it trains: the run's files, byte for byte, and its model file."""
    files = {name: (run_dir / name).read_bytes() for name in ("status.json", "config.json", "metrics.json",
                                                              "history.json", evaluation.PREDICTIONS_FILE)}
    return {**files, "model": runs.model_stamp(run_dir / "model.keras"),
            "checkpoint": (run_dir / "checkpoint.keras").exists()}


def test_resuming_a_run_whose_data_source_moved_is_refused_and_the_run_kept(artifacts, tmp_path):
    from test_data import _write_official

    source = tmp_path / "cifar-10-batches-py"
    _write_official(source)
    job = start_job(TrainConfig(epochs=1, batch_size=32, data=str(source)))
    assert job.join(120) and job.snapshot().status == "completed", job.snapshot().error
    before = _folder_state(job.run_dir)
    source.rename(tmp_path / "moved")

    with pytest.raises(data.DataError, match="does not exist"):
        training.resume_job(job.run_id, epochs=2)
    assert _folder_state(job.run_dir) == before
    run = runs.load_run(job.run_id)
    assert run.status == "completed" and run.test_accuracy is not None and run.config.epochs == 1
    assert run.model_path == run.path / "model.keras"


def test_a_stop_while_a_resume_prepares_leaves_the_completed_run_as_it_was(with_run):
    run_dir = runs.run_path(with_run)
    before, accuracy = _folder_state(run_dir), runs.load_run(with_run).test_accuracy
    gates = {}
    job = resume_job(with_run, epochs=3, on_created=lambda j: gates.update(
        zip(("reached", "release"), _pause_at(j.hooks, "prepared"))))
    assert gates["reached"].wait(120)  # data and model ready, training not begun
    assert _folder_state(run_dir) == before
    with pytest.raises(runs.RunError, match=f"run {with_run} is being trained by another process"):
        runs.delete_run(with_run)  # the run reads completed, yet its resume holds its claim
    assert job.stop() is True
    gates["release"].set()
    assert job.join(60)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.message.endswith(f"run {with_run} is as it was")
    assert _folder_state(run_dir) == before  # status, config, metrics, model, predictions untouched
    run = runs.load_run(with_run)
    assert run.status == "completed" and run.test_accuracy == accuracy and run.epochs_done == 1
    again = resume_job(with_run, epochs=2)  # and the run resumes as before
    assert again.join(120) and again.snapshot().status == "completed", again.snapshot().error
    assert runs.load_run(with_run).epochs_done == 2


_HOLD_CLAIM = """
import sys
from cifar_core import runs
claim = runs.claim_run(runs.run_path(sys.argv[1]))
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_run_claimed_by_another_process_is_not_resumed_until_that_process_dies(with_run, artifacts):
    env = dict(os.environ, CIFAR_ARTIFACTS_DIR=str(artifacts))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, with_run], cwd=ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stdout.read()
        before = _folder_state(runs.run_path(with_run))
        with pytest.raises(runs.RunError, match=f"run {with_run} is being trained by another process"):
            training.resume_job(with_run, epochs=2)
        with pytest.raises(runs.RunError, match="being trained by another process"):
            runs.delete_run(with_run)
        assert _folder_state(runs.run_path(with_run)) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # no goodbye: the OS lets the lock go
        holder.wait(30)
    job = resume_job(with_run, epochs=2)
    assert job.join(120) and job.snapshot().status == "completed", job.snapshot().error


def test_another_process_cannot_resume_a_run_this_one_is_preparing_to_resume(with_run, artifacts):
    gates = {}
    job = resume_job(with_run, epochs=2, on_created=lambda j: gates.update(
        zip(("reached", "release"), _pause_at(j.hooks, "prepared"))))
    assert gates["reached"].wait(120)  # its status.json still says completed
    code = "import sys; from cifar_core import jobs; jobs.resume(sys.argv[1], epochs=5)"  # the product's way in
    other = subprocess.run([sys.executable, "-c", code, with_run], cwd=ROOT, capture_output=True, text=True,
                           env=dict(os.environ, CIFAR_ARTIFACTS_DIR=str(artifacts)), timeout=120)
    gates["release"].set()
    assert other.returncode != 0 and f"run {with_run} is being trained by another process" in other.stderr
    assert job.join(120) and job.snapshot().status == "completed", job.snapshot().error
    assert runs.load_run(with_run).config.epochs == 2  # this process's resume, not the other's


# --- durations -------------------------------------------------------------------------------

def test_an_interrupted_run_lasts_until_its_last_write_and_a_resume_skips_the_idle_gap(artifacts):
    path = runs.create_run(TrainConfig(**QUICK), run_id="timed")
    start = time.time() - 7200
    runs.update_status(path, started_at=start, pid=2**22 + 777)  # nobody holds its claim: interrupted
    runs.write_history(path, {"loss": [1.0]})
    for name in ("status.json", "history.json"):
        os.utime(path / name, (start + 600, start + 600))  # its trainer last wrote 10 minutes in
    run = runs.load_run("timed")
    assert run.status == "interrupted"
    assert run.duration_seconds == pytest.approx(600, abs=1)  # not the two hours until now

    # resumed an hour later, finished 5 minutes after that: 10 + 5 minutes of work
    runs.update_status(path, status="completed", prior_seconds=600.0, resumed_at=start + 4200,
                       finished_at=start + 4500)
    assert runs.load_run("timed").duration_seconds == pytest.approx(900, abs=1)


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_resume_records_the_time_already_spent(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)
    assert job.join(120)
    before = runs.load_run(job.run_id).duration_seconds
    resumed = resume_job(job.run_id, dataset=tiny_data, epochs=2)
    assert resumed.join(120) and resumed.snapshot().status == "completed"
    status = _status_json(job.run_dir)
    assert status["prior_seconds"] == pytest.approx(before)
    run = runs.load_run(job.run_id)
    assert run.duration_seconds == pytest.approx(before + status["finished_at"] - status["resumed_at"])


# --- readers do only the work they need -------------------------------------------------------

def test_listing_runs_reparses_only_files_that_changed(artifacts, monkeypatch):
    for i in range(5):
        path = runs.create_run(TrainConfig(**QUICK), run_id=f"run-{i}")
        runs.write_history(path, {"loss": [1.0, 0.5]})
    runs.list_runs()
    parsed = []
    real_loads = store.json.loads
    monkeypatch.setattr(store.json, "loads", lambda text, *a, **k: parsed.append(1) or real_loads(text, *a, **k))
    assert len(runs.list_runs()) == 5 and parsed == []  # nothing changed: nothing parsed
    runs.update_status(runs.run_path("run-3"), status="stopped", finished_at=time.time())
    parsed.clear()
    listed = {r.run_id: r for r in runs.list_runs()}
    assert listed["run-3"].status == "stopped" and len(parsed) == 1  # only the file that changed
    listed["run-3"].history["loss"].append(9.0)  # a caller mutating what it got...
    assert runs.load_run("run-3").history["loss"] == [1.0, 0.5]  # ...does not change the next read


def test_the_test_split_alone_equals_the_whole_sources_test_split(tmp_path, monkeypatch):
    from test_data import _write_image_folder, _write_official

    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    _write_official(tmp_path / "batches" / "cifar-10-batches-py")
    _write_image_folder(tmp_path / "imgs")
    for source in ("synthetic", str(tmp_path / "batches"), str(tmp_path / "imgs")):
        data._get_test_split.cache_clear()
        alone = data.get_test_split(source)
        whole = data.load_dataset(source)
        assert len(alone.x_train) == 0
        np.testing.assert_array_equal(alone.x_test, whole.x_test)
        np.testing.assert_array_equal(alone.y_test, whole.y_test)
        sub = alone.subset(None, 3, seed=7)
        np.testing.assert_array_equal(sub.y_test, whole.subset(5, 3, seed=7).y_test)  # same seeded subset
    data._get_test_split.cache_clear()


def test_the_keras_sources_test_split_is_read_from_its_download_without_tensorflow(tmp_path):
    from test_data import _write_official

    _, _, xt, yt = _write_official(tmp_path / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py")
    code = """
import sys
from cifar_core import data
d = data.get_test_split("keras")
print(d.x_test.shape, d.y_test.tolist(), d.x_test.sum(), "tensorflow" in sys.modules, "keras" in sys.modules)
"""
    env = dict(os.environ, KERAS_HOME=str(tmp_path), CIFAR_ARTIFACTS_DIR=str(tmp_path / "artifacts"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == f"(3, 32, 32, 3) {yt.tolist()} {xt.sum()} False False"
