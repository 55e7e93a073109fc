"""The trainer: one job trains one run folder, with live state through a Keras callback, per-epoch
checkpoints, stop within one batch, resume from the last completed epoch.

`TrainingJob.run()` trains in the calling thread. Jobs run in processes of their own
(`cifar_core.jobs` starts them and holds the machine's trainer lock for them); this module knows
nothing of other jobs. Importing it does not import TensorFlow; running a job does.

Beside it: `state` (the job's state, read by every tab), `progress` (the Keras callbacks that
fill it and checkpoint each epoch), `publisher` (live.json and stop requests for other
processes), `distributed` and `distributed_loop` (tf.distribute strategies and our loop).

May import: config, files, paths, quiet, trainer_lock, data, recipes, models, runs, insight, planning.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from cifar_core.training import distributed, publisher as live
from cifar_core.training.distributed_loop import MIN_SHARE_IMAGES
from cifar_core import runs
from cifar_core.config import TrainConfig
from cifar_core.data import (  # noqa: F401 (re-exported)
    Dataset, load_training_data, locate_source, resolve_source,
)
from cifar_core.planning.probe import KERAS_POLICIES, resolve_precision
from cifar_core.planning.records import PLAN_FILE, record_outcome
from cifar_core.training.state import (  # noqa: F401 (re-exported)
    ACTIVE_STATUSES, MAX_BATCH_POINTS, JobSnapshot, JobState,
)
from cifar_core.training.progress import StopRequested, make_live_callback, make_tensorboard


from cifar_core.trainer_lock import JobBusyError  # noqa: F401,E402 (re-exported: the machine is busy)


class TrainingJob:
    """Trains one run folder, in the thread that calls `run` (a job process's main thread). Make
    one with `new_job` or `resume_job`; `stop` (any thread, or a signal handler) asks it to save
    and end after the current batch."""

    def __init__(self, config: TrainConfig, run_dir: Path, *, dataset: Optional[Dataset] = None,
                 history: Optional[dict[str, list[float]]] = None, initial_epoch: int = 0,
                 resume_from: Optional[Path] = None, callbacks: Sequence[Any] = (),
                 budget_seconds: Optional[float] = None, claim: Optional[runs.Claim] = None,
                 takeover: Optional[dict[str, Any]] = None, stops_since: Optional[float] = None):
        self.config = config
        # Stop requests in the run folder count from this time on (an earlier session's does not
        # stop a resume); a new run's folder is new, so every request counts.
        self.stops_since = (0.0 if takeover is None else time.time()) if stops_since is None else stops_since
        # a time budget's run is paced to end on time (planning/pacing.py); its report ends in plan.json
        self.budget_seconds = budget_seconds
        self.pacing: Optional[dict[str, Any]] = None
        self.cluster = distributed.current()  # where it trains; only the chief writes the run folder
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self._dataset = dataset
        self._resume_from = resume_from
        self._claim = claim  # the OS lock on the run folder (runs/claim.py), let go when the job ends
        # A resume's takeover of its run folder (status.json, config.json, retiring the final model
        # and what describes it), done once training begins: until then a Stop or a failure leaves
        # the run exactly as it was. None: the folder is this job's (a new run, or taken over).
        self._takeover = takeover
        self.extra_callbacks = list(callbacks)  # the caller's Keras callbacks (a sweep's pruning), after ours
        self.state = JobState(self.run_id, config, history or {}, initial_epoch)
        self._stop = threading.Event()
        self._ended = threading.Event()
        # Fault injection for tests: name -> function the trainer thread calls at that point
        # ("prepared": data and model ready, before fit; "finishing": before the final status).
        self.hooks: dict[str, Callable[[], None]] = {}
        self.final_probabilities = None  # the last epoch's test-split predictions, when made (see progress)
        self.fit_callbacks: list = []  # the Keras callbacks of this job's fit, once built (ours, then the caller's)
        # live.json for watchers in other processes, and stop requests through the folder; a
        # distributed job's non-chief workers set this False (they write nothing to the run folder).
        self.publish_live = self.cluster.is_chief
        self._publisher: Optional[live.Publisher] = None

    def _hook(self, name: str) -> None:
        if name in self.hooks:
            self.hooks[name]()

    @property
    def claim(self) -> Optional[runs.Claim]:
        """The run folder's claim this job holds (released when `run` returns)."""
        return self._claim

    @property
    def owns_folder(self) -> bool:
        """Whether the job has written its run folder: a resume does only once training begins."""
        return self._takeover is None

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> JobSnapshot:
        return self.state.snapshot()

    def stop(self) -> bool:
        """Ask the job to stop after the current batch; it then saves what it learned. Safe from
        any thread and from a signal handler (it only sets flags).

        Only the training thread writes status.json, so a Stop that lands while the job finishes
        cannot leave a finished run marked "stopping". False when there was nothing to stop.
        """
        if not self.state.request_stop():
            return False
        self._stop.set()
        return True

    def publish_now(self) -> None:
        """Write the live state for watchers now (an epoch just ended), not at the publisher's next tick."""
        if self._publisher is not None:
            self._publisher.publish_now()
        else:
            self.state.publish()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until `run` has returned (for a caller that runs it in another thread); True then."""
        return self._ended.wait(timeout)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def run(self) -> "TrainingJob":
        """Train to the end, a Stop or a failure, in this thread; the run folder is final when it
        returns (a failure is recorded there, never raised), and the claim is let go."""
        if self.publish_live:
            self._publisher = live.Publisher(self)
            self._publisher.start()
        policy = _dtype_policy()  # the job sets its precision for this thread; the caller's comes back after
        try:
            self._train()
        except BaseException as exc:  # the job must always leave a final status behind
            self._finish("failed", error=self._failure_message(exc), detail=traceback.format_exc())
        finally:
            if self._publisher is not None:
                self._publisher.finish()
            distributed.remove_scratch(self.run_dir)  # a non-chief worker's throwaway folder, if this is one
            if self._claim is not None:
                self._claim.release()  # last: the folder is final, another process may resume it
            _set_dtype_policy(policy)
            self._ended.set()
        return self

    def _failure_message(self, exc: BaseException) -> str:
        """What went wrong, for people; a full disk says which folder and what to do."""
        reason = runs.disk_full_reason(exc)
        if reason is None:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        cause: Optional[BaseException] = exc
        for _ in range(20):  # the chain of causes, looking for the write that named its file
            if cause is None or isinstance(cause, runs.DiskFullError):
                break
            cause = cause.__cause__ or cause.__context__
        cause = cause if isinstance(cause, runs.DiskFullError) else None
        doing = self.state.get("message")  # e.g. "Saving checkpoint of epoch 2"
        what = str(cause) if cause is not None else \
            f"the disk holding {self.run_dir} is full ({reason}) while {doing[:1].lower()}{doing[1:]}"
        return f"{what}; free space and resume the run"

    def _train(self) -> None:
        import keras

        from cifar_core.insight.evaluation import evaluate_model
        from cifar_core.recipes import recipe_callbacks

        cfg, cluster = self.config, self.cluster
        precision, why = resolve_precision(cfg.precision, cfg)
        keras.mixed_precision.set_dtype_policy(KERAS_POLICIES[precision])  # Keras keeps it per thread: this one's
        self.state.update(message="Loading data")
        data = self._dataset or load_training_data(cfg)
        keras.utils.set_random_seed(cfg.seed)
        train_ds = make_tf_dataset(data.x_train, data.y_train, cfg.batch_size, shuffle_seed=cfg.seed,
                                   min_batch=MIN_SHARE_IMAGES)  # as batches_per_pass counts them
        val_ds = make_tf_dataset(data.x_test, data.y_test, cfg.validation_batch_size)
        batches = cluster.batches_per_pass(len(data.x_train), cfg.batch_size)  # one pass over the training images ...
        if cfg.steps_per_epoch and cfg.steps_per_epoch < batches:  # ... or fewer steps (a budget's plan):
            batches = cfg.steps_per_epoch  # the data streams on across epochs, reshuffled at each pass's end
            train_ds = train_ds.repeat()
        model = distributed.build_model(cfg, data.x_train, batches, self._resume_from)  # under the strategy
        initial_epoch = self.state.get("initial_epoch")
        self._hook("prepared")
        if self.stop_requested:  # stopped while preparing: nothing was learned, nothing to save
            self._finish("stopped", message="Stopped before training began; nothing was saved")
            return
        self._take_over()
        runs.update_status(self.run_dir, distribution=cluster.record(cfg), precision={"used": precision, "why": why})
        self.state.start_running(batches_per_epoch=batches, message="Training")
        board = make_tensorboard(self.run_dir, initial_epoch, batches)
        # The last epoch's validation doubles as the final evaluation when the weights it sees are
        # the final ones: not with EMA (swapped in when fit ends) or early stopping (restores the best),
        # nor under a strategy (Keras' predict is not a one-device one there: distributed.evaluation_model).
        reuse = cfg.weight_averaging != "ema" and not cfg.early_stopping_patience and cluster.strategy == "default"
        final = (data.x_test, data.y_test, cfg.validation_batch_size, cfg.label_smoothing) if reuse else None
        from cifar_core.insight.evolution import (  # per-epoch confusion on a sample: right after live's
            make_evolution_callback,
        )
        callbacks = [make_live_callback(self.state, self, self.run_dir, batches, cfg.batch_size, final),
                     distributed.on_one_device(make_evolution_callback(self, data.x_test, data.y_test, initial_epoch),
                                               cfg, data.x_train),
                     *recipe_callbacks(cfg, batches, self.run_dir), board, *self.extra_callbacks]
        pacer = self._pacer(callbacks, batches, initial_epoch)
        if pacer is not None:
            callbacks.append(pacer)
        self.fit_callbacks = callbacks
        stopped = False
        if initial_epoch < cfg.epochs:
            try:
                distributed.train(model, cluster, train_ds, val_ds, callbacks, cfg, initial_epoch=initial_epoch,
                                  steps_per_epoch=batches, validate_last_epoch=not reuse)
            except StopRequested:
                stopped = True
                # fit's last act swaps the optimizer's averaged weights in (EMA); a Stop leaves fit before
                # it, so do it here: the saved model and its metrics are the averaged ones
                model.optimizer.finalize_variable_values(model.trainable_weights)
            finally:
                board.close()
                if pacer is not None:
                    self.pacing = pacer.report
        if not cluster.is_chief:  # the chief saves and evaluates the run; this worker's copy goes with its scratch
            self._finish("stopped" if stopped else "completed", message="Finished; the chief saved the run")
            return
        if stopped:
            runs.update_status(self.run_dir, status="stopping")
        self.state.update(message="Saving the model")
        final = self.run_dir / "model.keras"
        runs.save_model(model, final)
        stamp = runs.model_stamp(final)  # the predictions below are this file's
        if not stopped:  # a stopped run keeps its last epoch's checkpoint: resume continues from there
            (self.run_dir / "checkpoint.keras").unlink(missing_ok=True)
            (self.run_dir / runs.AVERAGED_CHECKPOINT).unlink(missing_ok=True)
        self.state.update(message="Evaluating on the test set")
        metrics = evaluate_model(distributed.evaluation_model(model, final), data, self.run_dir, tta=cfg.tta,
                                 batch_size=cfg.validation_batch_size, model_stamp=stamp,
                                 probabilities=None if stopped else self.final_probabilities,
                                 label_smoothing=cfg.label_smoothing)
        self._finish("stopped" if stopped else "completed", metrics=metrics)

    def _take_over(self) -> None:
        """A resume makes the run folder its own: status running, the new config, and the final model
        and its metrics retired (the loadable model must be the one the history ends at)."""
        plan = self._takeover
        if plan is None:
            return
        runs.forget_unsaved_status(self.run_dir)  # a full disk's failure, superseded by this resume
        # status first: a kill or a failure from here on leaves an interrupted or failed run that
        # resumes, never a completed one without its metrics
        runs.update_status(self.run_dir, status="running", finished_at=None, error=None, traceback=None,
                           prior_seconds=plan["prior_seconds"], resumed_at=time.time(),
                           resumed_from_epoch=self.state.get("initial_epoch"), **runs.process_identity())
        self._takeover = None  # the folder is this job's: its end is written there
        if self._publisher is not None:
            self._publisher.publish_now()  # live.json still holds the last session's end: watchers see this one
        runs.write_json(self.run_dir / "config.json", self.config.to_dict())
        runs.reserve_space(self.run_dir)
        from cifar_core.insight.evaluation import PREDICTIONS_FILE

        for stale in ("metrics.json", PREDICTIONS_FILE):  # they describe the model being retired
            (self.run_dir / stale).unlink(missing_ok=True)
        checkpoint, final = self.run_dir / "checkpoint.keras", self.run_dir / "model.keras"
        if plan["from_final"]:
            (self.run_dir / runs.AVERAGED_CHECKPOINT).unlink(missing_ok=True)  # none is left by a completed run
            os.replace(final, checkpoint)  # readers now load the state the history ends at
        else:
            final.unlink(missing_ok=True)  # weights from mid-epoch, ahead of the history: retired

    def _pacer(self, callbacks: list, batches: int, initial_epoch: int):
        """The budget's pacer, for a budgeted run on one worker (workers pacing apart would stop at
        different steps and leave each other waiting in the all-reduce)."""
        if not self.budget_seconds or self.cluster.num_workers > 1:
            return None
        from cifar_core.planning.pacing import make_pacer

        before = (self.state.get("history").get("train_seconds") or [0.0])[-1]
        return make_pacer(self.budget_seconds, self.config.epochs * batches, steps_per_epoch=batches,
                          initial_epoch=initial_epoch, trained_before=before,
                          followers=[c for c in callbacks if hasattr(c, "set_total_steps")])

    def _finish(self, status: str, *, error: Optional[str] = None, detail: Optional[str] = None,
                metrics: Optional[dict[str, Any]] = None, message: Optional[str] = None) -> None:
        """The job's final status, written by the trainer thread only (status.json first, so a
        reader that sees the job finished also finds the run folder final)."""
        if status != "failed":
            self._hook("finishing")
        now = time.time()
        messages = {"completed": "Finished", "stopped": "Stopped by request", "failed": f"Failed: {error}"}
        if not self.owns_folder:  # a resume that never began: its run stays exactly as it was
            before = {"stopped": "Stopped before training began", "failed": f"Failed before training began: {error}"}
            self.state.update(status=status, message=f"{before.get(status, messages[status])}; run {self.run_id} "
                              f"is as it was", finished_at=now, error=error, eta_seconds=None)
            return
        fields: dict[str, Any] = {"status": status, "finished_at": now}
        if error:
            fields.update(error=error, traceback=detail)
        try:
            try:
                runs.update_status(self.run_dir, **fields)
            except OSError:
                runs.release_space(self.run_dir)  # a full disk: the room set aside for these last words
                runs.update_status(self.run_dir, **fields)
        except OSError:
            # Still full, or the folder is gone or read-only: this process's readers see the final
            # status anyway (load_run lays it over the file and writes it once there is room).
            runs.keep_unsaved_status(self.run_dir, fields)
        runs.release_space(self.run_dir)
        record_outcome(self.run_dir, status, self.state.snapshot().history, metrics, pacing=self.pacing)
        self.state.update(status=status, message=message or messages[status], finished_at=now, error=error,
                          metrics=metrics, eta_seconds=0.0 if status == "completed" else None)



def _dtype_policy() -> str:
    """This thread's Keras dtype policy (Keras keeps it per thread), "float32" before Keras loads."""
    import sys

    keras = sys.modules.get("keras")
    return keras.mixed_precision.dtype_policy().name if keras is not None else "float32"


def _set_dtype_policy(name: str) -> None:
    import sys

    keras = sys.modules.get("keras")
    if keras is not None:
        keras.mixed_precision.set_dtype_policy(name)


def make_tf_dataset(x, y, batch_size: int, shuffle_seed: Optional[int] = None, min_batch: int = 1):
    """uint8 images and int labels -> batches of (float32 images, one-hot labels), prefetched.

    Keeps the data uint8 in memory (a quarter of a float32 copy) and converts per batch. A last,
    partial batch of fewer than `min_batch` images is left out (training passes MIN_SHARE_IMAGES: a
    step on one image normalises it by its own BatchNorm statistics); its images train in the other
    passes, reshuffled into full batches.
    """
    import tensorflow as tf

    from cifar_core.data import NUM_CLASSES

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    def to_model_batch(images, labels):
        return tf.cast(images, tf.float32), tf.one_hot(labels, NUM_CLASSES)

    ds = ds.batch(batch_size)
    if min(min_batch, batch_size) > 1 and len(x) % batch_size and len(x) % batch_size < min_batch:
        ds = ds.take(len(x) // batch_size)  # every pass the same count; reshuffled, so other images each time
    ds = ds.map(to_model_batch, num_parallel_calls=tf.data.AUTOTUNE)
    # tf.data's autotuner sometimes blocks the iterator's destructor (end of fit or of an epoch)
    # for 1-34 s while holding the GIL, freezing every thread, the dashboard's included;
    # bench/train_throughput.py: 0 stalls in 10 runs with it off, 4 in 10 on, same CPU/image.
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


# --- making a job: a new run folder, or a run to continue ------------------------------------

def new_job(config: TrainConfig, *, dataset: Optional[Dataset] = None, name: str = "", tags: Any = (),
            plan: Optional[dict[str, Any]] = None, callbacks: Sequence[Any] = (),
            run_dir: Optional[Path] = None, claim: Optional[runs.Claim] = None) -> TrainingJob:
    """A job for a new run, ready to `run`: the run folder (named and tagged as given) is created
    and claimed here, unless a launcher made it and passes `run_dir` with its `claim`.
    `plan`: a time budget's plan (`planning.Plan.to_dict()`), recorded as plan.json with its outcome.

    Raises:
      DataError: the data source does not exist or holds no CIFAR-10 data in a known layout.
      runs.RunError: the artifacts folder is not writable or nearly full.
      ValueError: a name or tag that `runs.clean_meta` refuses.
    """
    if run_dir is None:
        if dataset is None:
            config = config.replace(data=resolve_source(config.data))
            locate_source(config.data)  # a typo or an empty folder is refused before a run folder exists
        run_dir = distributed.create_run(config, name=name, tags=tags)  # a worker's: a throwaway one
        claim = runs.claim_run(run_dir)  # a fresh folder: no other process holds it
        if plan is not None:
            try:
                runs.write_json(run_dir / PLAN_FILE, plan)
            except BaseException:
                claim.release()
                raise
    elif plan is None:
        plan = runs.read_json(run_dir / PLAN_FILE) if (run_dir / PLAN_FILE).is_file() else None
    return TrainingJob(config, run_dir, dataset=dataset, callbacks=callbacks,
                       budget_seconds=(plan or {}).get("budget_seconds"), claim=claim)


def resume_job(run_id: str, *, dataset: Optional[Dataset] = None, epochs: Optional[int] = None,
               claim: Optional[runs.Claim] = None, stops_since: Optional[float] = None) -> TrainingJob:
    """A job that continues a stopped, interrupted or finished run from its last saved model,
    curves continuing, ready to `run`; `claim`: the run's claim when a launcher took it;
    `stops_since`: stop requests from this time on stop it (default: from now; a launcher passes
    the time it was asked, so a Stop pressed while the job process starts is not lost).

    Nothing in the run folder changes until training really begins (data and model ready, no Stop):
    a refusal here, a Stop or a failure while preparing leaves the run exactly as it was.

    Raises:
      runs.RunError: another process trains the run, or it cannot be resumed (the message says why).
      DataError: the run's data source no longer exists or holds no CIFAR-10 data.
    """
    if not distributed.current().is_chief:  # a worker trains along from the chief's folder, writing nothing there
        return TrainingJob(dataset=dataset, **distributed.worker_resume(run_id, epochs))
    claim = claim or runs.claim_run(runs.run_path(run_id))  # refused while another process trains it
    try:
        job = _prepare_resume(run_id, claim, dataset, epochs)
        if stops_since is not None:
            job.stops_since = stops_since
        return job
    except BaseException:
        claim.release()
        raise


def _prepare_resume(run_id: str, claim: runs.Claim, dataset: Optional[Dataset], epochs: Optional[int]) -> TrainingJob:
    """The resume's job, every check made (read under the claim, so no other trainer moves the run
    on meanwhile); it takes the folder over only when training begins (`TrainingJob._take_over`)."""
    run = runs.load_run(run_id, holding_claim=True)  # no other process trains it: we hold its claim
    if run.broken:
        raise runs.RunError(f"run {run_id} is broken ({run.broken}) and cannot be resumed")
    # Continue from the state at the end of the last completed epoch (weights, optimizer, schedule
    # step): the checkpoint where there is one, else the final model of a completed run.
    checkpoint = run.path / "checkpoint.keras"
    source = checkpoint if checkpoint.is_file() else run.model_path
    if source is None:
        raise runs.RunError(f"run {run_id} has no checkpoint to resume from")
    config = run.config if epochs is None else run.config.replace(epochs=epochs)
    done = run.epochs_done
    if done >= config.epochs:
        raise runs.RunError(f"run {run_id} already has {done} of {config.epochs} epochs; ask for more epochs")
    if dataset is None:
        locate_source(config.data)  # a source moved or deleted since is refused before anything changes
    runs.check_writable(runs.runs_dir())
    history = {k: v[:done] for k, v in run.history.items()}
    takeover = {"prior_seconds": run.duration_seconds or 0.0, "from_final": source != checkpoint}
    return TrainingJob(config, run.path, dataset=dataset, history=history, initial_epoch=done,
                       resume_from=source, claim=claim, takeover=takeover)
