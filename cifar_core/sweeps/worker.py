"""A sweep worker: takes the sweep's trials one after another and trains each as an ordinary run
(named "<sweep> #<trial>", tagged "sweep:<sweep>"), reporting each epoch's validation accuracy to
Optuna's pruner. Several workers, in any processes or machines sharing the storage, split a sweep.

A trial whose worker died (killed, crashed, its machine gone) is failed and enqueued again with the
same parameters, so another worker retries it: on this machine the worker's process identity tells
(pid, start time, boot id), elsewhere its heartbeat going stale does.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from cifar_core import runs, training
from cifar_core.runs import store
from cifar_core.config import TrainConfig
from cifar_core.data import DataError
from cifar_core.sweeps import studies
from cifar_core.sweeps.storage import describe

HEARTBEAT_SECONDS = 20.0  # a running trial's worker stamps it this often
STALE_SECONDS = 90.0  # a trial on another machine whose stamp is this old has lost its worker
IDLE_SECONDS = 2.0  # a queue worker with nothing to do looks again this often


def trial_config(sweep: studies.Sweep, trial) -> tuple[TrainConfig, str, list[str]]:
    """The run a trial trains: the queue's stored config, or the sweep's base with the trial's values."""
    if sweep.kind == "queue":
        attrs = trial.user_attrs
        return (TrainConfig.from_dict(attrs["config"]), attrs.get("name") or f"queue #{trial.number}",
                list(attrs.get("tags") or []) + ["queue"])
    values = {d.field: d.suggest(trial) for d in sweep.space}
    return sweep.base.replace(**values), f"{sweep.name} #{trial.number}", [f"sweep:{sweep.name}"]


def pruning_callback(trial, stop_job: Callable[[], None], pruned: dict[str, Any]):
    """Reports each epoch's validation accuracy to the trial; stops the run when the pruner says so."""
    import keras

    class Pruning(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is None:
                return
            trial.report(float(value), epoch + 1)
            if trial.should_prune():
                pruned["epoch"] = epoch + 1
                stop_job()

    return Pruning()


def _alive(worker: dict[str, Any], stamp: Optional[float]) -> bool:
    import socket

    if worker.get("host") == socket.gethostname():
        return store.trainer_alive(worker)
    return stamp is not None and time.time() - stamp < STALE_SECONDS


def recover_stale(study) -> list[int]:
    """Fail every running trial whose worker is gone and enqueue it again; returns their numbers.
    Two workers recovering the same trial at once: only the one whose fail lands re-enqueues it."""
    from optuna.trial import TrialState

    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if not isinstance(worker, dict) or _alive(worker, t.user_attrs.get("heartbeat")):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except Exception:  # noqa: BLE001 - another worker failed it first (or it just finished)
            continue
        params = dict(t.params)
        attrs = {k: v for k, v in t.user_attrs.items() if k in ("config", "name", "tags", "added_at", "plan")}
        study.enqueue_trial(params, user_attrs={**attrs, "retry_of": t.number})
        recovered.append(t.number)
    return recovered


def _counted(study) -> tuple[int, int]:
    """Trials that count toward the sweep's limit, and those waiting to start."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    lost = sum(t.state == TrialState.FAIL and any(u.user_attrs.get("retry_of") == t.number for u in trials)
               for t in trials)
    empty = sum(t.state == TrialState.FAIL and bool(t.user_attrs.get("empty")) for t in trials)
    return len(trials) - lost - empty, waiting


def run_worker(name: str, storage_url: Optional[str] = None, *, stop: Optional[threading.Event] = None,
               until_empty: bool = True, max_trials: Optional[int] = None,
               log: Callable[[str], None] = lambda line: None) -> int:
    """Train the sweep's trials until it is done, stopped or `stop` is set; returns trials run.

    A queue worker with `until_empty=False` waits for new runs instead of returning; `max_trials`
    returns after that many (the dashboard's runner takes one trial at a time from each source).
    """
    stop = stop or threading.Event()
    done = 0
    while not stop.is_set() and (max_trials is None or done < max_trials):
        sweep, study = studies.load(name, storage_url)
        for number in recover_stale(study):
            log(f"trial {number}: its worker is gone; enqueued again")
        if sweep.stopped:
            log(f"sweep {name} is stopped")
            break
        counted, waiting = _counted(study)
        if sweep.kind == "sweep" and not waiting:
            if sweep.trials is not None and counted >= sweep.trials:
                break
            if sweep.minutes is not None and time.time() > sweep.created_at + 60 * sweep.minutes:
                log(f"sweep {name}: its {sweep.minutes:g} minutes are over")
                break
        busy = training.current_job() is not None and training.current_job().is_alive
        if busy or (sweep.kind == "queue" and not waiting):
            if until_empty and not busy:
                break
            stop.wait(IDLE_SECONDS)
            continue
        done += 1
        # Optuna's own loop, one trial at a time: it takes an enqueued trial first, and lets samplers
        # such as the grid end the study the way they expect
        study.optimize(lambda trial: _train_trial(sweep, trial, storage_url, log), n_trials=1,
                       catch=(TrialFailed,), gc_after_trial=False)
    return done


class TrialFailed(RuntimeError):
    """A trial that ended without a result (its reason is in the trial's user attribute "error")."""


def _fail(trial, reason: str) -> TrialFailed:
    trial.set_user_attr("error", reason)
    return TrialFailed(reason)


def _train_trial(sweep: studies.Sweep, trial, storage_url: Optional[str], log: Callable[[str], None]):
    """The objective: train the trial's run and return its accuracy (and training seconds)."""
    import optuna

    if sweep.kind == "queue" and "config" not in trial.user_attrs:  # another worker took the last one
        trial.set_user_attr("empty", True)
        raise TrialFailed("the queue was empty")
    if trial.user_attrs.get("removed"):
        raise TrialFailed("removed from the queue")
    trial.set_user_attr("worker", runs.process_identity())
    trial.set_user_attr("heartbeat", time.time())
    try:
        config, run_name, tags = trial_config(sweep, trial)
    except (ValueError, TypeError) as exc:  # a value TrainConfig refuses (a parameter from an old space)
        raise _fail(trial, f"{type(exc).__name__}: {exc}") from None
    pruned: dict[str, Any] = {}
    holder: dict[str, training.TrainingJob] = {}
    callbacks = [pruning_callback(trial, lambda: holder["job"].stop(), pruned)] \
        if sweep.kind == "sweep" and sweep.pruner != "none" else []
    record = {"name": sweep.name, "trial": trial.number, "storage": describe(storage_url)}
    try:
        job = training.start_job(config, name=run_name, tags=tags, callbacks=callbacks, plan=trial.user_attrs.get("plan"),
                                 on_created=lambda j: (holder.update(job=j),
                                                       runs.update_status(j.run_dir, sweep=record)))
    except (training.JobBusyError, runs.RunError, DataError, ValueError) as exc:
        log(f"trial {trial.number}: could not start: {exc}")
        raise _fail(trial, str(exc)) from None
    trial.set_user_attr("run_id", job.run_id)
    log(f"trial {trial.number}: run {job.run_id} ({run_name})")
    while not job.join(HEARTBEAT_SECONDS):
        trial.set_user_attr("heartbeat", time.time())
    snap = job.snapshot()
    seconds = (snap.history.get("train_seconds") or [0.0])[-1]
    trial.set_user_attr("train_seconds", seconds)
    metrics = snap.metrics or {}
    if pruned:
        trial.set_user_attr("pruned_at_epoch", pruned["epoch"])
        log(f"trial {trial.number}: pruned after epoch {pruned['epoch']}")
        raise optuna.TrialPruned(f"validation accuracy lagged after epoch {pruned['epoch']}")
    if snap.status == "completed" and metrics.get(sweep.metric) is not None:
        log(f"trial {trial.number}: {sweep.metric} {metrics[sweep.metric]:.4f} in {seconds:.0f} s of training")
        accuracy = float(metrics[sweep.metric])
        return (accuracy, seconds) if sweep.objective == "accuracy-and-time" else accuracy
    reason = snap.error or ("stopped by request" if snap.status == "stopped" else f"ended {snap.status}")
    log(f"trial {trial.number}: failed: {reason}")
    raise _fail(trial, reason)
