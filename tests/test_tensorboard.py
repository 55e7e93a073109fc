"""Every run writes TensorBoard event files under its folder: epoch scalars, batch scalars that
continue across a resume, the graph once; read back with TensorFlow's own event reader."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from cifar_core import runs
from cifar_core.config import TrainConfig
from job_helpers import resume_job, start_job
from cifar_core.training.progress import TENSORBOARD_BATCH_EVERY, TENSORBOARD_DIR

QUICK = dict(batch_size=32, data="synthetic")


def read_events(folder: Path) -> tuple[dict[str, dict[int, float]], int]:
    """{tag: {step: value}} of every scalar under `folder`, and how many model graphs (Keras'
    conceptual graph, which TensorBoard's Graphs tab draws) were written."""
    import tensorflow as tf

    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    graphs = 0
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                graphs += value.metadata.plugin_data.plugin_name == "graph_keras_model"  # Graphs tab
                if value.metadata.plugin_data.plugin_name == "scalars":  # not the model-config text
                    scalars[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
    return scalars, graphs


@pytest.mark.heavy
def test_a_run_and_its_resume_write_tensorboard_scalars_and_one_graph(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=2, **QUICK), dataset=tiny_data)  # 19 batches per epoch
    assert job.join(120) and job.snapshot().status == "completed"
    resumed = resume_job(job.run_id, dataset=tiny_data, epochs=3)
    assert resumed.join(120) and resumed.snapshot().status == "completed"
    run = runs.load_run(job.run_id)
    board = run.path / TENSORBOARD_DIR

    train, graphs = read_events(board / "train")
    assert sorted(train["epoch_loss"]) == [0, 1, 2]  # both sessions, one curve
    assert train["epoch_loss"] == pytest.approx(dict(enumerate(run.history["loss"])), rel=1e-5)
    assert train["epoch_accuracy"][2] == pytest.approx(run.history["accuracy"][2], rel=1e-5)
    assert graphs == 2  # once per training session
    batch_steps = sorted(train["batch_loss"])
    assert batch_steps and all(s % TENSORBOARD_BATCH_EVERY == 0 for s in batch_steps)
    assert max(batch_steps) > 2 * 19, "the resumed session's batch steps continue after the first session's"
    validation, _ = read_events(board / "validation")
    assert validation["epoch_loss"] == pytest.approx(dict(enumerate(run.history["val_loss"])), rel=1e-5)


def test_a_stopped_run_keeps_its_events(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=50, **QUICK), dataset=tiny_data)
    import time

    end = time.monotonic() + 120
    while job.snapshot().epoch < 2 or job.snapshot().batch < 5:  # the first epoch, a few batches more
        assert job.is_alive and time.monotonic() < end
        time.sleep(0.02)
    job.stop()
    assert job.join(120) and job.snapshot().status == "stopped"
    train, _ = read_events(runs.load_run(job.run_id).path / TENSORBOARD_DIR / "train")
    assert 0 in train["epoch_loss"]
    assert TENSORBOARD_BATCH_EVERY in train["batch_loss"]  # step 20 of the 24+ done: flushed at the stop
