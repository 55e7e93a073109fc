"""The real trainer on tiny synthetic data: end to end, live state, stop, busy, failures, resume."""
import threading
import time

import numpy as np
import pytest

from cifar_core.insight import evaluation
from cifar_core import jobs, runs, trainer_lock, training
from cifar_core.config import TrainConfig
from cifar_core.data import make_synthetic
from cifar_core.training import publisher
from job_helpers import resume_job, start_job

QUICK = dict(batch_size=32, data="synthetic")


def wait_for(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_trains_end_to_end_and_saves_a_loadable_run(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=2, **QUICK), dataset=tiny_data)
    seen_running = []
    while job.is_alive:  # a client polling the live state, as the dashboard does
        snap = job.snapshot()
        if snap.status == "running" and snap.batch:
            seen_running.append(snap)
        time.sleep(0.02)
    snap = job.snapshot()
    assert snap.status == "completed", snap.error
    assert seen_running and seen_running[-1].batches_per_epoch == 19  # ceil(600 / 32)
    assert set(snap.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "train_seconds"}
    assert 0 < snap.history["train_seconds"][0] < snap.history["train_seconds"][1]
    assert all(len(v) == 2 for v in snap.history.values())
    assert len(snap.batch_loss) == 2 * 19 and snap.batch_steps[-1] == pytest.approx(2.0)
    assert snap.images_per_second and snap.images_per_second > 0
    # The synthetic classes are learnable: far above the 10% of chance after two epochs.
    assert snap.metrics["test_accuracy"] > 0.5
    assert snap.progress == 1.0

    run = runs.load_run(snap.run_id)
    assert run.status == "completed" and run.broken is None
    assert run.config == TrainConfig(epochs=2, **QUICK)
    assert run.history["val_accuracy"] == pytest.approx(snap.history["val_accuracy"])
    assert run.metrics["test_accuracy"] == pytest.approx(snap.metrics["test_accuracy"])
    assert (run.path / "history.csv").read_text().splitlines()[0] == "epoch,loss,accuracy,val_loss,val_accuracy,train_seconds"
    assert not (run.path / "checkpoint.keras").exists()  # the final model replaces the checkpoint

    model = runs.load_model(run.run_id)
    preds = evaluation.test_predictions(run.run_id, model=model, data=tiny_data)
    assert preds.accuracy == pytest.approx(run.metrics["test_accuracy"])
    # Keras' val_loss of the last epoch and our own loss from the cached predictions agree.
    assert float(preds.losses.mean()) == pytest.approx(run.history["val_loss"][-1], rel=1e-3)


def test_stop_mid_epoch_ends_within_a_batch_and_keeps_a_loadable_run(artifacts):
    data = make_synthetic(3000, 200, seed=2)
    job = start_job(TrainConfig(epochs=5, batch_size=16, **{"data": "synthetic"}), dataset=data)
    wait_for(lambda: job.snapshot().batch >= 5, what="five batches")
    at_stop = job.snapshot().batch
    job.stop()
    assert job.snapshot().status == "stopping"
    assert job.join(120)
    snap = job.snapshot()
    assert snap.status == "stopped"
    assert snap.epoch == 1 and snap.batch <= at_stop + 2  # within about one batch of the request
    assert snap.history == {}  # no epoch completed
    run = runs.load_run(snap.run_id)
    assert run.status == "stopped" and run.metrics is not None
    model = runs.load_model(run.run_id)
    assert model.predict(data.x_test[:2], verbose=0).shape == (2, 10)


def _training_now(run_id):
    """The job process has begun training (its live.json counts batches): a stop now is a mid-run one."""
    run = runs.load_run(run_id)
    snap = publisher.read(run)
    return snap is not None and snap.status == "running" and snap.batch > 0


@pytest.mark.heavy  # slow in the default run (durations, 2026-12-07): CI runs it
def test_a_second_start_is_refused_while_one_runs(artifacts):
    config = TrainConfig(epochs=3, batch_size=16, data="synthetic", train_subset=3000, test_subset=100)
    first = jobs.start(config)  # a job process of its own, holding the machine's trainer lock
    with pytest.raises(training.JobBusyError, match=f"training run {first.run_id}"):
        jobs.start(TrainConfig(epochs=1, data="synthetic"))
    assert trainer_lock.holder()["run_id"] == first.run_id
    assert [r.run_id for r in runs.list_runs()] == [first.run_id]  # the refused start made no run folder
    wait_for(lambda: _training_now(first.run_id), 180, "the first job to train")
    first.stop()
    assert first.wait(120) and runs.load_run(first.run_id).status == "stopped"
    # nothing is left to stop: the machine's trainer is free again
    assert trainer_lock.holder() is None and publisher.active_runs() == []


def test_simultaneous_starts_from_many_sessions_start_exactly_one_job(artifacts):
    config = TrainConfig(epochs=2, batch_size=16, data="synthetic", train_subset=2000, test_subset=100)
    barrier = threading.Barrier(8)
    started, refused = [], []

    def press_start():
        barrier.wait()
        try:
            started.append(jobs.start(config))
        except training.JobBusyError:
            refused.append(1)

    threads = [threading.Thread(target=press_start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1 and len(refused) == 7
    assert len(runs.list_runs()) == 1
    wait_for(lambda: _training_now(started[0].run_id), 180, "the job to train")
    started[0].stop()
    assert started[0].wait(120)


@pytest.mark.heavy
def test_many_readers_during_training_neither_crash_nor_corrupt_the_state(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=2, **QUICK), dataset=tiny_data)
    errors, reads = [], [0]

    def hammer():
        try:
            while job.is_alive:
                s = job.snapshot()
                assert len(s.batch_steps) == len(s.batch_loss) == len(s.batch_accuracy)
                assert len({len(v) for v in s.history.values()}) <= 1
                runs.list_runs()
                reads[0] += 1
        except Exception as exc:  # surfaced below; a thread's exception would be lost
            errors.append(exc)

    readers = [threading.Thread(target=hammer) for _ in range(6)]
    for r in readers:
        r.start()
    assert job.join(180)
    for r in readers:
        r.join()
    assert not errors and reads[0] > 50
    assert job.snapshot().status == "completed"
    assert runs.load_run(job.run_id).epochs_done == 2


def _poison_final_bias(run):
    """Fault injection: NaN in the last layer's bias makes every loss NaN from the first batch."""
    import keras

    model = keras.saving.load_model(run.path / "model.keras", safe_mode=True)
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel, np.full_like(bias, np.nan)])
    runs.save_model(model, run.path / "model.keras")


@pytest.mark.heavy
def test_nan_loss_fails_the_job_keeps_history_and_resume_continues_curves(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)
    assert job.join(120) and job.snapshot().status == "completed"
    first = runs.load_run(job.run_id)
    first_history = first.history
    good_model = (first.path / "model.keras").read_bytes()

    _poison_final_bias(first)
    failed = resume_job(job.run_id, dataset=tiny_data, epochs=3)
    assert failed.join(120)
    snap = failed.snapshot()
    assert snap.status == "failed" and "loss became nan" in snap.error and "terminated" in snap.error
    run = runs.load_run(job.run_id)
    assert run.status == "failed" and "loss became nan" in run.error
    assert run.epochs_done == 1  # the diverged epoch is not recorded; the good one is kept
    assert run.history["val_accuracy"] == pytest.approx(first_history["val_accuracy"])

    # resume continued from (and so retired into) checkpoint.keras: that is the file to repair
    assert not (run.path / "model.keras").exists() and (run.path / "checkpoint.keras").is_file()
    (run.path / "checkpoint.keras").write_bytes(good_model)
    resumed = resume_job(job.run_id, dataset=tiny_data, epochs=2)
    assert resumed.join(120) and resumed.snapshot().status == "completed"
    run = runs.load_run(job.run_id)
    assert run.status == "completed" and run.epochs_done == 2
    assert run.history["loss"][0] == pytest.approx(first_history["loss"][0])  # curves continue
    assert run.test_accuracy is not None


def test_a_data_error_fails_the_job_with_the_message_and_keeps_the_run(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)
    assert job.join(120)
    wrong_shape = type(tiny_data)(tiny_data.x_train[:, :16, :16], tiny_data.y_train,
                                  tiny_data.x_test, tiny_data.y_test, source="bad")
    failed = resume_job(job.run_id, dataset=wrong_shape, epochs=2)
    assert failed.join(120)
    snap = failed.snapshot()
    assert snap.status == "failed" and snap.error
    run = runs.load_run(job.run_id)
    assert run.status == "failed" and run.error == snap.error and run.epochs_done == 1
    assert runs.load_model(job.run_id) is not None  # what was learned before is still loadable


def test_resume_refuses_a_finished_run_without_more_epochs(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)
    assert job.join(120)
    with pytest.raises(runs.RunError, match="ask for more epochs"):
        training.resume_job(job.run_id, dataset=tiny_data)


def test_read_only_artifacts_fail_at_start_with_a_clear_message(artifacts, tiny_data):
    import os

    if os.geteuid() == 0:
        # root ignores permission bits; a regular file in the folder's place fails for everyone.
        artifacts.parent.mkdir(parents=True, exist_ok=True)
        artifacts.write_text("not a folder")
    else:
        artifacts.mkdir(parents=True)
        artifacts.chmod(0o500)
    with pytest.raises(runs.RunError, match="cannot write to the artifacts folder"):
        start_job(TrainConfig(epochs=1, **QUICK), dataset=tiny_data)
    with pytest.raises(runs.RunError, match="cannot write to the artifacts folder"):
        jobs.start(TrainConfig(epochs=1, **QUICK))  # the product's Start: refused before a job process
    assert publisher.active_runs() == []  # the refused starts left nothing training


def test_a_missing_data_source_is_refused_before_a_run_folder_exists(artifacts):
    from cifar_core.data import DataError

    with pytest.raises(DataError, match="does not exist"):
        training.new_job(TrainConfig(epochs=1, data=str(artifacts / "typo")))
    with pytest.raises(DataError, match="does not exist"):
        jobs.start(TrainConfig(epochs=1, data=str(artifacts / "typo")))
    assert runs.list_runs() == [] and not (artifacts / "runs").exists()


def test_the_final_evaluation_reuses_the_last_epochs_validation_of_the_final_weights(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=2, **QUICK), dataset=tiny_data)
    assert job.join(120) and job.snapshot().status == "completed"
    run = runs.load_run(job.run_id)
    assert run.metrics["validation_reused"] is True
    assert run.metrics["test_accuracy"] == run.history["val_accuracy"][-1]
    assert run.metrics["test_loss"] == pytest.approx(run.history["val_loss"][-1], rel=1e-5)
    # the reused probabilities are what the saved model predicts: they were made by the final weights
    cached = evaluation.load_cached_predictions(run.run_id)
    fresh = evaluation.predict_test_set(runs.load_model(run.run_id), tiny_data.x_test)
    np.testing.assert_allclose(cached.probabilities, fresh, atol=1e-5)


@pytest.mark.heavy  # 13-15 s: a recipe detail of the final evaluation; keeps the default run under 10 min
def test_our_last_epoch_validation_loss_is_keras_own_with_label_smoothing(artifacts, tiny_data):
    import keras

    job = start_job(TrainConfig(epochs=2, label_smoothing=0.2, **QUICK), dataset=tiny_data)
    assert job.join(120) and job.snapshot().status == "completed"
    run = runs.load_run(job.run_id)
    model = keras.saving.load_model(run.path / "model.keras", safe_mode=True)  # compiled as trained
    loss, accuracy = model.evaluate(tiny_data.x_test.astype("float32"),
                                    keras.utils.to_categorical(tiny_data.y_test, 10), verbose=0)
    assert run.history["val_loss"][-1] == pytest.approx(loss, rel=1e-4)
    assert run.history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.heavy  # 13-15 s: a recipe detail of the final evaluation; keeps the default run under 10 min
def test_with_ema_weights_the_final_evaluation_predicts_again(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=2, weight_averaging="ema", **QUICK), dataset=tiny_data)
    assert job.join(120) and job.snapshot().status == "completed"
    run = runs.load_run(job.run_id)
    assert run.metrics["validation_reused"] is False  # fit swapped the averaged weights in at its end
    assert len(run.history["val_accuracy"]) == 2  # Keras validated every epoch itself
    cached = evaluation.load_cached_predictions(run.run_id)
    assert cached.accuracy == run.metrics["test_accuracy"]
