"""The Keras callback that makes a fit live: per-batch progress and rate, per-epoch history and
checkpoint, stop within one batch, and a NaN loss ending the job at once."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifar_core import runs
from cifar_core.insight.evaluation import cross_entropy
from cifar_core.training.state import JobState


class StopRequested(Exception):
    """Raised from the callback to leave model.fit at once (fit would still validate after a
    plain stop_training flag, which costs a full pass over the test set)."""


def batch_values(batch: int, means: tuple[float, ...], previous: tuple[float, ...]) -> tuple[float, ...]:
    """One batch's own values from Keras' running means over the epoch: mean_b * (b + 1) minus
    mean_(b-1) * b. The live chart then shows one series across epochs (smoothed as TensorBoard
    smooths), not a mean that restarts at every epoch boundary. Exact for equal batch sizes; the
    epoch's last, smaller batch is weighted as a full one."""
    return tuple(m * (batch + 1) - p * batch for m, p in zip(means, previous))


def validation_metrics(probabilities: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> dict:
    """val_loss and val_accuracy as Keras' compiled categorical cross-entropy (clipped at 1e-7,
    with the recipe's label smoothing) and accuracy compute them, from probabilities."""
    loss = float(cross_entropy(probabilities, labels, label_smoothing).mean())
    return {"val_loss": loss, "val_accuracy": float((probabilities.argmax(axis=1) == labels).mean())}


def make_live_callback(state: JobState, job: Any, run_dir: Path, batches_per_epoch: int, batch_size: int,
                       final_validation: Optional[tuple[np.ndarray, np.ndarray, int, float]] = None):
    """`job` is the TrainingJob: its config (epochs) and stop_requested are read every batch.

    With `final_validation` (test images, labels, batch size, label smoothing), fit is expected
    to skip its own validation of the last epoch: this callback predicts the test split itself,
    fills val_loss/val_accuracy from those probabilities and keeps them in `job.final_probabilities`,
    so the evaluation that follows needs no second pass over the same images with the same weights.
    Put it first among the callbacks: later ones (TensorBoard) then see the validation too."""
    import keras

    class LiveProgress(keras.callbacks.Callback):
        """Publishes progress to `state`, checkpoints each epoch, and honours stop requests."""

        def on_epoch_begin(self, epoch, logs=None):
            self._rate_origin = None  # (time, batches) at the first batch's end: skips tracing/warm-up
            self._epoch_start = time.perf_counter()
            self._train_end = None
            self._means = (0.0, 0.0)  # Keras' running means after the previous batch of this epoch
            state.update(epoch=epoch + 1, batch=0, message=f"Training epoch {epoch + 1}")

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            now = time.perf_counter()
            if self._rate_origin is None:
                self._rate_origin = (now, batch + 1)
                rate = state.get("images_per_second")  # the previous epoch's, if any
            else:
                t0, b0 = self._rate_origin
                rate = (batch + 1 - b0) * batch_size / (now - t0) if now > t0 else None
            snap_epoch = state.get("epoch")
            remaining = (batches_per_epoch - batch - 1) + (job.config.epochs - snap_epoch) * batches_per_epoch
            eta = remaining * batch_size / rate if rate else None
            loss = float(logs.get("loss", float("nan")))
            if not math.isfinite(loss):
                # Like keras.callbacks.TerminateOnNaN, but at once: TerminateOnNaN only sets
                # stop_training, so fit would still validate and checkpoint the NaN weights.
                raise FloatingPointError(f"loss became {loss} at epoch {snap_epoch}, batch {batch + 1}; "
                                         f"training was terminated (try a lower learning rate)")
            accuracy = float(logs.get("accuracy", float("nan")))
            state.add_batch(snap_epoch - 1 + (batch + 1) / batches_per_epoch,
                            *batch_values(batch, (loss, accuracy), self._means))
            self._means = (loss, accuracy)
            state.update(batch=batch + 1, images_per_second=rate, eta_seconds=eta)
            if job.stop_requested:
                raise StopRequested()

        def _validate(self, x: np.ndarray, y: np.ndarray, size: int, smoothing: float) -> dict:
            from cifar_core.insight.evaluation import predict_test_set

            state.update(message="Validating on the test set")
            chunks = []
            for i in range(0, len(x), size):
                if job.stop_requested:
                    raise StopRequested()
                chunks.append(predict_test_set(self.model, x[i:i + size], size))
            job.final_probabilities = np.concatenate(chunks)
            return validation_metrics(job.final_probabilities, np.asarray(y), smoothing)

        def on_test_begin(self, logs=None):
            if self._train_end is None:
                self._train_end = time.perf_counter()
            state.update(message="Validating on the test set")

        def on_test_batch_end(self, batch, logs=None):
            if job.stop_requested:
                raise StopRequested()

        def _save_averaged(self, path: Path) -> None:
            """The model with the optimizer's moving averages swapped in, as fit's end would leave it,
            saved to `path`; training then carries on from its raw weights, put back."""
            weights = self.model.trainable_weights
            raw = [np.array(w) for w in weights]
            self.model.optimizer.finalize_variable_values(weights)
            try:
                runs.save_model(self.model, path)
            finally:
                for w, value in zip(weights, raw):
                    w.assign(value)

        def on_epoch_end(self, epoch, logs=None):
            if final_validation is not None and epoch + 1 == job.config.epochs and logs is not None:
                self._train_end = time.perf_counter()
                logs.update(self._validate(*final_validation))  # in place: later callbacks see it
            trained = (self._train_end or time.perf_counter()) - self._epoch_start
            before = state.get("history").get("train_seconds") or [0.0]  # a resumed run continues the count
            logs = {k: float(v) for k, v in (logs or {}).items() if k in runs.HISTORY_KEYS}
            logs["train_seconds"] = round(before[-1] + trained, 3)
            history = state.add_epoch(logs)
            job.publish_now()  # the epoch's point goes out now (live.json), not at the publisher's next tick
            state.update(message=f"Saving checkpoint of epoch {epoch + 1}")
            # Weights first, then the history that describes them: a kill between the two leaves
            # weights one epoch ahead of the history (resume trains one extra epoch), never behind.
            if job.config.weight_averaging == "ema":  # first: what a reader is served is never behind
                self._save_averaged(run_dir / runs.AVERAGED_CHECKPOINT)
            runs.save_model(self.model, run_dir / "checkpoint.keras")
            runs.write_history(run_dir, history)
            runs.update_status(run_dir, epochs_done=epoch + 1)

    return LiveProgress()


TENSORBOARD_DIR = "tensorboard"  # inside the run folder: `tensorboard --logdir artifacts/runs` shows every run
TENSORBOARD_BATCH_EVERY = 20  # batch-level scalars every this many steps (epoch scalars every epoch)


def make_tensorboard(run_dir: Path, initial_epoch: int, batches_per_epoch: int):
    """Keras' TensorBoard callback writing to the run folder: epoch scalars (train under train/,
    validation under validation/), batch scalars every TENSORBOARD_BATCH_EVERY steps, the graph
    once, no histograms. A resumed run's batch steps continue where the last session stopped."""
    import keras

    class RunTensorBoard(keras.callbacks.TensorBoard):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self._global_train_batch = initial_epoch * batches_per_epoch  # Keras starts every fit at 0

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)  # the graph, once (no batch writer is pushed)
            step = self._global_train_batch
            if step % TENSORBOARD_BATCH_EVERY == 0 and isinstance(logs, dict):
                # Written here rather than by Keras' update_freq=N, whose batch-level record_if also
                # silenced the epoch scalars of any epoch whose last step was not a multiple of N.
                with self._train_writer.as_default(step=step), self.summary.record_if(True):
                    for name, value in logs.items():
                        self.summary.scalar(f"batch_{name}", value)

        def close(self) -> None:
            """Flush and close the event files; fit skips on_train_end when a Stop or an error leaves it."""
            if hasattr(self, "_writers"):
                self._close_writers()

    return RunTensorBoard(log_dir=str(run_dir / TENSORBOARD_DIR), histogram_freq=0, write_graph=True,
                          update_freq="epoch")

