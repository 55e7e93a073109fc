"""The weights a run serves (issue 26): a killed EMA run serves the averaged weights its final model
would have, not the raw ones its checkpoint resumes from; one-device training never takes a step
on a last batch too small for BatchNorm's statistics."""
from __future__ import annotations

import numpy as np

from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.data import make_synthetic
from cifar_core.models import register_custom_objects
from cifar_core.training import make_tf_dataset
from cifar_core.training.distributed_loop import MIN_SHARE_IMAGES
from job_helpers import start_job


def _callback(**hooks):
    """A caller's Keras callback (it runs after the lab's own) made of the given methods."""
    import keras

    return type("Hooks", (keras.callbacks.Callback,), hooks)()


def test_a_killed_ema_run_serves_the_averaged_weights(artifacts):
    """Killed after epoch 1 (simulated: a stop in epoch 2, its final model then removed), the run
    has only its epoch-1 files; what it serves must be that epoch's averaged weights."""
    import keras

    data = make_synthetic(128, 64, seed=2)
    stopper = _callback(job=None,
                        on_epoch_begin=lambda self, epoch, logs=None: setattr(self, "epoch", epoch),
                        on_train_batch_end=lambda self, batch, logs=None: self.epoch == 1 and self.job.stop())
    job = start_job(TrainConfig(epochs=3, weight_averaging="ema", batch_size=32, data="synthetic"),
                    dataset=data, callbacks=[stopper], on_created=lambda j: setattr(stopper, "job", j))
    assert job.join(240) and job.snapshot().status == "stopped", job.snapshot().error
    (job.run_dir / "model.keras").unlink()  # what a SIGKILL in epoch 2 leaves: epoch 1's files only

    register_custom_objects()
    checkpoint = keras.saving.load_model(job.run_dir / "checkpoint.keras", safe_mode=True)  # with its optimizer
    raw = [np.array(w) for w in checkpoint.trainable_weights]
    checkpoint.optimizer.finalize_variable_values(checkpoint.trainable_weights)  # the optimizer's averages
    averaged = [np.array(w) for w in checkpoint.trainable_weights]
    assert any(not np.allclose(r, a) for r, a in zip(raw, averaged)), "EMA should differ from the raw weights"

    served = runs.load_model(job.run_id)
    for want, got in zip(averaged, served.trainable_weights):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(  # BatchNorm's statistics and the like: the checkpoint's
        [np.mean(np.array(w)) for w in served.non_trainable_weights],
        [np.mean(np.array(w)) for w in checkpoint.non_trainable_weights], rtol=1e-6, atol=1e-7)


def test_the_training_batches_leave_out_a_last_batch_of_one_image():
    def sizes(images: int, **kwargs) -> list[int]:
        x, y = np.zeros((images, 32, 32, 3), np.uint8), np.zeros(images, np.int64)
        return [int(batch.shape[0]) for batch, _ in make_tf_dataset(x, y, 32, **kwargs)]

    assert sizes(2 * 32 + 1, shuffle_seed=1, min_batch=MIN_SHARE_IMAGES) == [32, 32]
    two_left = sizes(2 * 32 + MIN_SHARE_IMAGES, shuffle_seed=1, min_batch=MIN_SHARE_IMAGES)
    assert two_left == [32, 32, MIN_SHARE_IMAGES], two_left  # a batch BatchNorm can use still trains
    assert sizes(2 * 32 + 1) == [32, 32, 1]  # validation: every test image counts


def test_one_device_fit_takes_no_step_on_a_single_image(artifacts):
    data = make_synthetic(2 * 32 + 1, 64, seed=4)
    trained = []
    counter = _callback(on_train_batch_end=lambda self, batch, logs=None: trained.append(batch))
    job = start_job(TrainConfig(architecture="assignment_bn", epochs=2, batch_size=32, data="synthetic"),
                    dataset=data, callbacks=[counter])
    assert job.join(240), "a tiny training job took over 240 s"
    snap = job.snapshot()
    assert snap.status == "completed", snap.error
    assert snap.batches_per_epoch == 2, snap.batches_per_epoch
    assert trained == [0, 1, 0, 1], trained  # two full batches each epoch, never the 65th image alone
    assert all(np.isfinite(v) for v in snap.history["loss"]), snap.history
