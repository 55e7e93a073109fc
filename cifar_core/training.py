"""Background training: one job per process, live state through a Keras callback, per-epoch
checkpoints, stop within one batch, resume from the last completed epoch.

Importing this module does not import TensorFlow; starting a job does.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from . import runs
from .config import TrainConfig
from .data import Dataset, resolve_source

MAX_BATCH_POINTS = 2000  # per-batch curve length kept in memory; older points are thinned
ACTIVE_STATUSES = ("preparing", *runs.ACTIVE)  # "preparing" lives only in memory


class JobBusyError(RuntimeError):
    """A job is already running in this process."""


class _StopRequested(Exception):
    """Raised from the callback to leave model.fit at once (fit would still validate after a
    plain stop_training flag, which costs a full pass over the test set)."""


@dataclasses.dataclass
class JobSnapshot:
    """A consistent copy of a job's live state, safe to read from any thread."""

    run_id: str
    status: str  # preparing, running, stopping, completed, stopped, failed
    message: str  # what the job is doing now, for people
    config: TrainConfig
    epoch: int = 0  # 1-based epoch in progress (or last one)
    epochs: int = 0
    initial_epoch: int = 0  # epochs already done before this job (resume)
    batch: int = 0  # batches done in the current epoch
    batches_per_epoch: int = 0
    batch_steps: list[float] = dataclasses.field(default_factory=list)  # global step (epochs, fractional)
    batch_loss: list[float] = dataclasses.field(default_factory=list)  # running mean within the epoch
    batch_accuracy: list[float] = dataclasses.field(default_factory=list)
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    images_per_second: Optional[float] = None
    eta_seconds: Optional[float] = None
    started_at: float = 0.0
    finished_at: Optional[float] = None
    error: Optional[str] = None
    metrics: Optional[dict[str, Any]] = None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def progress(self) -> float:
        """Fraction of all epochs done, 0..1."""
        if not self.epochs:
            return 0.0
        within = self.batch / self.batches_per_epoch if self.batches_per_epoch else 0.0
        done = max(0, self.epoch - 1) + within if self.status in ACTIVE_STATUSES else len(self.history.get("loss", []))
        return min(1.0, max(0.0, done / self.epochs))


class JobState:
    """The lock-protected state the callback writes and every reader copies."""

    def __init__(self, run_id: str, config: TrainConfig, history: dict[str, list[float]], initial_epoch: int):
        self._lock = threading.Lock()
        self._snap = JobSnapshot(
            run_id=run_id, status="preparing", message="Preparing", config=config,
            epochs=config.epochs, initial_epoch=initial_epoch, epoch=initial_epoch,
            history=copy.deepcopy(history), started_at=time.time(),
        )

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return copy.deepcopy(self._snap)

    def get(self, name: str) -> Any:
        """One scalar field, without copying the curves (the callback asks every batch)."""
        with self._lock:
            return getattr(self._snap, name)

    def update(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._snap, k, v)

    def request_stop(self) -> bool:
        """The one transition a Stop makes: an active job that is not already stopping becomes
        "stopping". False (and nothing changes) when the job has finished or is stopping."""
        with self._lock:
            if self._snap.status not in ACTIVE_STATUSES or self._snap.status == "stopping":
                return False
            self._snap.status = "stopping"
            self._snap.message = "Stopping after this batch, then saving"
            return True

    def start_running(self, **fields: Any) -> None:
        """preparing -> running, unless a Stop already made it "stopping" (which must stick)."""
        with self._lock:
            if self._snap.status == "preparing":
                self._snap.status = "running"
            for k, v in fields.items():
                setattr(self._snap, k, v)

    def add_batch(self, step: float, loss: float, accuracy: float) -> None:
        with self._lock:
            s = self._snap
            s.batch_steps.append(step)
            s.batch_loss.append(loss)
            s.batch_accuracy.append(accuracy)
            if len(s.batch_steps) > MAX_BATCH_POINTS:  # keep every other point: bounded memory, same shape
                s.batch_steps[:] = s.batch_steps[::2]
                s.batch_loss[:] = s.batch_loss[::2]
                s.batch_accuracy[:] = s.batch_accuracy[::2]

    def add_epoch(self, logs: dict[str, float]) -> dict[str, list[float]]:
        with self._lock:
            for k, v in logs.items():
                self._snap.history.setdefault(k, []).append(float(v))
            return copy.deepcopy(self._snap.history)


def _make_callback(state: JobState, job: "TrainingJob", run_dir: Path, batches_per_epoch: int, batch_size: int):
    import keras

    class LiveProgress(keras.callbacks.Callback):
        """Publishes progress to `state`, checkpoints each epoch, and honours stop requests."""

        def on_epoch_begin(self, epoch, logs=None):
            self._rate_origin = None  # (time, batches) at the first batch's end: skips tracing/warm-up
            self._epoch_start = time.perf_counter()
            self._train_end = None
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
            state.add_batch(snap_epoch - 1 + (batch + 1) / batches_per_epoch,
                            loss, float(logs.get("accuracy", float("nan"))))
            state.update(batch=batch + 1, images_per_second=rate, eta_seconds=eta)
            if job.stop_requested:
                raise _StopRequested()

        def on_test_begin(self, logs=None):
            if self._train_end is None:
                self._train_end = time.perf_counter()
            state.update(message="Validating on the test set")

        def on_test_batch_end(self, batch, logs=None):
            if job.stop_requested:
                raise _StopRequested()

        def on_epoch_end(self, epoch, logs=None):
            trained = (self._train_end or time.perf_counter()) - self._epoch_start
            before = state.get("history").get("train_seconds") or [0.0]  # a resumed run continues the count
            logs = {k: float(v) for k, v in (logs or {}).items() if k in runs.HISTORY_KEYS}
            logs["train_seconds"] = round(before[-1] + trained, 3)
            history = state.add_epoch(logs)
            state.update(message=f"Saving checkpoint of epoch {epoch + 1}")
            # Weights first, then the history that describes them: a kill between the two leaves
            # weights one epoch ahead of the history (resume trains one extra epoch), never behind.
            runs.save_model(self.model, run_dir / "checkpoint.keras")
            runs.write_history(run_dir, history)
            runs.update_status(run_dir, epochs_done=epoch + 1)

    return LiveProgress()


class TrainingJob:
    """Trains one run in a background thread. Use `start_job`, which enforces one at a time."""

    def __init__(self, config: TrainConfig, run_dir: Path, *, dataset: Optional[Dataset] = None,
                 history: Optional[dict[str, list[float]]] = None, initial_epoch: int = 0,
                 resume_from: Optional[Path] = None):
        self.config = config
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self._dataset = dataset
        self._resume_from = resume_from
        self.state = JobState(self.run_id, config, history or {}, initial_epoch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"train-{self.run_id}", daemon=True)
        # Fault injection for tests: name -> function the trainer thread calls at that point
        # ("prepared": data and model ready, before fit; "finishing": before the final status).
        self.hooks: dict[str, Callable[[], None]] = {}

    def _hook(self, name: str) -> None:
        if name in self.hooks:
            self.hooks[name]()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> JobSnapshot:
        return self.state.snapshot()

    def start(self) -> "TrainingJob":
        runs.LIVE_RUN_IDS.add(self.run_id)
        self._thread.start()
        return self

    def stop(self) -> bool:
        """Ask the job to stop after the current batch; it then saves what it learned.

        Only the trainer thread writes status.json, so a Stop that lands while the job finishes
        cannot leave a finished run marked "stopping". False when there was nothing to stop.
        """
        if not self.state.request_stop():
            return False
        self._stop.set()
        return True

    def join(self, timeout: Optional[float] = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._train()
        except BaseException as exc:  # the thread must always leave a final status behind
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._finish("failed", error=message, detail=traceback.format_exc())
        finally:
            runs.LIVE_RUN_IDS.discard(self.run_id)

    def _train(self) -> None:
        import keras
        import tensorflow as tf

        from .evaluation import evaluate_model
        from .models import build_model, register_custom_objects
        from .recipe import recipe_callbacks

        cfg = self.config
        self.state.update(message="Loading data")
        data = self._dataset or load_training_data(cfg)
        keras.utils.set_random_seed(cfg.seed)
        train_ds = make_tf_dataset(data.x_train, data.y_train, cfg.batch_size, shuffle_seed=cfg.seed)
        val_ds = make_tf_dataset(data.x_test, data.y_test, cfg.validation_batch_size)
        batches = int(tf.data.experimental.cardinality(train_ds))
        if self._resume_from is not None:
            # compile=True restores the optimizer's state and its schedule's step with the weights
            register_custom_objects()
            model = keras.saving.load_model(self._resume_from, safe_mode=True)
            if cfg.lr_schedule != "constant" or cfg.warmup_epochs:
                # an extended run re-plans its schedule over the new length; the step count carries on
                from .recipe import make_schedule

                model.optimizer.learning_rate = make_schedule(cfg, batches)
        else:
            model = build_model(cfg, x_train=data.x_train, steps_per_epoch=batches)
        initial_epoch = self.state.get("initial_epoch")
        self._hook("prepared")
        if self.stop_requested:  # stopped while preparing: nothing was learned, nothing to save
            self._finish("stopped", message="Stopped before training began; nothing was saved")
            return
        self.state.start_running(batches_per_epoch=batches, message="Training")
        callbacks = [*recipe_callbacks(cfg, batches),
                     _make_callback(self.state, self, self.run_dir, batches, cfg.batch_size)]
        stopped = False
        if initial_epoch < cfg.epochs:
            try:
                model.fit(train_ds, epochs=cfg.epochs, initial_epoch=initial_epoch, validation_data=val_ds,
                          callbacks=callbacks, verbose=0, shuffle=False)  # tf.data shuffles
            except _StopRequested:
                stopped = True
        if stopped:
            runs.update_status(self.run_dir, status="stopping")
        self.state.update(message="Saving the model")
        final = self.run_dir / "model.keras"
        runs.save_model(model, final)
        stamp = runs.model_stamp(final)  # the predictions below are this file's
        if not stopped:  # a stopped run keeps its last epoch's checkpoint: resume continues from there
            (self.run_dir / "checkpoint.keras").unlink(missing_ok=True)
        self.state.update(message="Evaluating on the test set")
        metrics = evaluate_model(model, data, self.run_dir, batch_size=cfg.validation_batch_size, tta=cfg.tta,
                                 model_stamp=stamp)
        self._finish("stopped" if stopped else "completed", metrics=metrics)

    def _finish(self, status: str, *, error: Optional[str] = None, detail: Optional[str] = None,
                metrics: Optional[dict[str, Any]] = None, message: Optional[str] = None) -> None:
        """The job's final status, written by the trainer thread only (status.json first, so a
        reader that sees the job finished also finds the run folder final)."""
        if status != "failed":
            self._hook("finishing")
        now = time.time()
        messages = {"completed": "Finished", "stopped": "Stopped by request", "failed": f"Failed: {error}"}
        fields: dict[str, Any] = {"status": status, "finished_at": now}
        if error:
            fields.update(error=error, traceback=detail)
        try:
            runs.update_status(self.run_dir, **fields)
        except OSError:
            pass  # the folder itself is gone or read-only; the live state still tells the user
        self.state.update(status=status, message=message or messages[status], finished_at=now, error=error,
                          metrics=metrics, eta_seconds=0.0 if status == "completed" else None)


def load_training_data(config: TrainConfig) -> Dataset:
    """The config's data source, subset as configured (the subset is seeded by config.seed)."""
    from .data import get_dataset

    return get_dataset(config.data).subset(config.train_subset, config.test_subset, seed=config.seed)


def make_tf_dataset(x, y, batch_size: int, shuffle_seed: Optional[int] = None):
    """uint8 images and int labels -> batches of (float32 images, one-hot labels), prefetched.

    Keeps the data uint8 in memory (a quarter of a float32 copy) and converts per batch.
    """
    import tensorflow as tf

    from .data import NUM_CLASSES

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    def to_model_batch(images, labels):
        return tf.cast(images, tf.float32), tf.one_hot(labels, NUM_CLASSES)

    ds = ds.batch(batch_size).map(to_model_batch, num_parallel_calls=tf.data.AUTOTUNE)
    # tf.data's autotuner sometimes blocks the iterator's destructor (end of fit or of an epoch)
    # for 1-34 s while holding the GIL, freezing every thread, the dashboard's included;
    # bench/train_throughput.py: 0 stalls in 10 runs with it off, 4 in 10 on, same CPU/image.
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- the process-wide job: shared by every dashboard session and tab ---------------------

_current: Optional[TrainingJob] = None
_current_lock = threading.Lock()


def current_job() -> Optional[TrainingJob]:
    """The job of this process, running or last finished; None before the first."""
    return _current


def start_job(config: TrainConfig, *, dataset: Optional[Dataset] = None,
              on_created: Optional[Callable[[TrainingJob], None]] = None) -> TrainingJob:
    """Create a run folder and start training it in the background.

    Raises:
      JobBusyError: a job is already running in this process (only one at a time).
      runs.RunError: the artifacts folder is not writable or nearly full.
    """
    global _current
    config = config.replace(data=resolve_source(config.data)) if dataset is None else config
    with _current_lock:
        _refuse_if_busy()
        run_dir = runs.create_run(config)
        job = TrainingJob(config, run_dir, dataset=dataset)
        _current = job
        if on_created:
            on_created(job)
        return job.start()


def resume_job(run_id: str, *, dataset: Optional[Dataset] = None, epochs: Optional[int] = None) -> TrainingJob:
    """Continue a stopped or interrupted run from its last saved model, curves continuing."""
    global _current
    with _current_lock:
        _refuse_if_busy()
        run = runs.load_run(run_id)
        if run.broken:
            raise runs.RunError(f"run {run_id} is broken ({run.broken}) and cannot be resumed")
        if run.is_active:
            raise runs.RunError(f"run {run_id} is still training")
        # Continue from the state at the end of the last completed epoch (weights, optimizer, schedule
        # step): the checkpoint where there is one, else the final model of a completed run.
        checkpoint, final = run.path / "checkpoint.keras", run.path / "model.keras"
        source = checkpoint if checkpoint.is_file() else run.model_path
        if source is None:
            raise runs.RunError(f"run {run_id} has no checkpoint to resume from")
        config = run.config if epochs is None else run.config.replace(epochs=epochs)
        done = run.epochs_done
        if done >= config.epochs:
            raise runs.RunError(f"run {run_id} already has {done} of {config.epochs} epochs; ask for more epochs")
        runs.check_writable(runs.runs_dir())
        history = {k: v[:done] for k, v in run.history.items()}
        runs.write_json(run.path / "config.json", config.to_dict())
        runs.update_status(run.path, status="running", finished_at=None, error=None, traceback=None,
                           pid=os.getpid(), host=socket.gethostname(), prior_seconds=run.duration_seconds or 0.0,
                           resumed_at=time.time(), resumed_from_epoch=done)
        from .evaluation import PREDICTIONS_FILE

        for stale in ("metrics.json", PREDICTIONS_FILE):  # they describe the model being retired
            (run.path / stale).unlink(missing_ok=True)
        if source == final:
            os.replace(final, checkpoint)  # readers now load the state the history ends at
            source = checkpoint
        else:
            final.unlink(missing_ok=True)  # weights from mid-epoch, ahead of the history: retired
        job = TrainingJob(config, run.path, dataset=dataset, history=history, initial_epoch=done,
                          resume_from=source)
        _current = job
        return job.start()


def _refuse_if_busy() -> None:
    if _current is not None and _current.is_alive:
        snap = _current.snapshot()
        raise JobBusyError(f"a training job is already running (run {snap.run_id}, {snap.status}); "
                           f"stop it or wait for it to finish")


def stop_job() -> bool:
    """Ask the current job to stop; False when none is running or it is already stopping."""
    job = _current
    if job is None or not job.is_alive:
        return False
    return job.stop()
