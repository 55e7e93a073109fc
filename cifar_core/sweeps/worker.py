"""A sweep worker: takes the sweep's trials one after another and trains each as an ordinary run
(named "<sweep> #<trial>", tagged "sweep:<sweep>") in a job process of its own (cifar_core/jobs),
reporting each epoch's validation accuracy to Optuna's pruner. Several workers, in any processes or
machines sharing the storage, split a sweep.

The worker holds nothing but the trial: it waits for the machine's trainer lock before it asks
Optuna for a trial (so a Start click between a check and a start cannot fail a queued run), and the
lock passes to the trial's job process. While the job trains, Optuna's own heartbeat thread beats
for the trial (sweeps/storage.py); a worker that dies stops beating, and the next worker's
`optimize` fails its trial and enqueues it again (RetryHeartbeatStaleTrialCallback). Its job
process, bound to it, saves and stops when it dies, so no trial trains twice.

Interrupted (`abort`: Ctrl-C or SIGTERM on `sweep run` / `queue run`), the worker has its trial's
job save and stop, fails the trial with that reason and returns it to the study to be retried.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from cifar_core import jobs, runs, trainer_lock
from cifar_core.config import TrainConfig
from cifar_core.data import DataError
from cifar_core.sweeps import studies
from cifar_core.sweeps.storage import describe

POLL_SECONDS = 0.5  # how often the worker reads its trial's run folder (new epochs for the pruner, the job's end)
CHECK_SECONDS = 10.0  # how often it asks the storage whether its trial was removed or failed elsewhere
IDLE_SECONDS = 2.0  # a queue worker with nothing to do looks again this often (reading, never writing)
RETURNED = "returned"  # user attribute of a trial failed only to be retried (interrupted, or its job killed)


class TrialFailed(RuntimeError):
    """A trial that ended without a result (its reason is in the trial's user attribute "error")."""


def trial_config(sweep: studies.Sweep, trial) -> tuple[TrainConfig, str, list[str]]:
    """The run a trial trains: the queue's stored config, or the sweep's base with the trial's values."""
    if sweep.kind == "queue":
        attrs = trial.user_attrs
        return (TrainConfig.from_dict(attrs["config"]), attrs.get("name") or f"queue #{studies.display_number(trial.number)}",
                list(attrs.get("tags") or []) + ["queue"])
    values = {d.field: d.suggest(trial) for d in sweep.space}
    return sweep.base.replace(**values), f"{sweep.name} #{studies.display_number(trial.number)}", [f"sweep:{sweep.name}"]


def _has_work(sweep: studies.Sweep, study) -> bool:
    """Whether a trial could start now: one waits (not removed), or the sweep may sample another."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING and not t.user_attrs.get("removed") for t in trials)
    if sweep.kind == "queue" or waiting:
        return waiting > 0
    if sweep.trials is not None and _counted(trials) >= sweep.trials:
        return False
    return sweep.minutes is None or time.time() <= sweep.created_at + 60 * sweep.minutes


def _counted(trials) -> int:
    """Trials that count toward a sweep's limit: not those retried by another (lost or returned),
    nor the empty ones a worker made when another took the last waiting trial."""
    from optuna.trial import TrialState

    retried = {n for t in trials for n in (t.system_attrs.get("retry_history") or [])}
    return sum(not (t.state == TrialState.FAIL and (t.number in retried or t.user_attrs.get("empty")))
               for t in trials)


def _fail_removed(study, log: Callable[[str], None]) -> None:
    """Waiting trials removed from the queue: taken (atomically, as a worker pops one) and failed."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if not t.user_attrs.get("removed"):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):  # False: another worker took it
                storage.set_trial_user_attr(t._trial_id, "error", "removed from the queue")
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                log(f"#{studies.display_number(t.number)}: removed from the queue")
        except (UpdateFinishedTrialError, RuntimeError):
            continue


def _fail_stale(study, log: Callable[[str], None]) -> None:
    """Optuna's own recovery: a running trial whose heartbeat stopped is failed and enqueued again
    (the storage's RetryHeartbeatStaleTrialCallback). Only reads, unless a trial is stale."""
    import warnings

    import optuna

    before = {t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        if t.number not in before and "failed_trial" in t.system_attrs:
            lost = t.system_attrs.get("retry_history", [t.system_attrs["failed_trial"]])[-1]
            log(f"#{studies.display_number(lost)}: its worker stopped beating; enqueued again as "
                f"#{studies.display_number(t.number)}")


def _others_running(study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def run_worker(name: str, storage_url: Optional[str] = None, *, stop: Optional[threading.Event] = None,
               abort: Optional[threading.Event] = None, until_empty: bool = True, watch_running: bool = True,
               max_trials: Optional[int] = None, log: Callable[[str], None] = lambda line: None) -> int:
    """Train the sweep's trials until it is done, stopped or `stop` is set; returns trials run.

    `stop`: start no further trial. `abort`: also stop the running trial's job (saved) and return
    the trial to the study. A queue worker with `until_empty=False` waits for new runs instead of
    returning; `max_trials` returns after that many (the dashboard's runner takes one trial at a
    time from each source). `watch_running`: with `until_empty`, stay while another worker's trial
    runs (if that worker dies, its trial is retried here). Waiting for work or for the machine
    writes nothing to the storage.

    Raises:
      SweepError: the sweep or its storage cannot be read.
    """
    stop = stop or threading.Event()
    abort = abort or threading.Event()
    done = 0
    while not stop.is_set() and (max_trials is None or done < max_trials):
        sweep, study = studies.load(name, storage_url)
        _fail_removed(study, log)
        _fail_stale(study, log)
        if sweep.stopped:
            log(f"sweep {name} is stopped")
            break
        if not _has_work(sweep, study):
            if (until_empty or sweep.kind == "sweep") and not (watch_running and _others_running(study)):
                if sweep.minutes is not None and time.time() > sweep.created_at + 60 * sweep.minutes:
                    log(f"sweep {name}: its {sweep.minutes:g} minutes are over")
                break
            stop.wait(IDLE_SECONDS)
            continue
        what = f"a worker of {'the queue' if sweep.kind == 'queue' else 'sweep ' + name}"
        try:
            lock = trainer_lock.take(what)
        except trainer_lock.JobBusyError as busy:
            log(f"waiting for the machine: {busy}")
            lock = trainer_lock.take(what, wait=True, stop=stop)
        if lock is None:  # stopped while waiting for the machine
            break
        try:
            sweep, study = studies.load(name, storage_url)  # again, holding the machine: still work to do?
            if sweep.stopped or not _has_work(sweep, study):
                continue
            done += 1
            # Optuna's own loop, one trial at a time: it takes an enqueued trial first, beats for it,
            # fails stale trials first, and lets samplers such as the grid end the study as they expect
            study.optimize(lambda trial: _train_trial(sweep, trial, storage_url, lock, abort, log), n_trials=1,
                           catch=(TrialFailed,), callbacks=[_return_to_study], gc_after_trial=False)
        except (RuntimeError, ValueError) as exc:  # Optuna's "cannot tell a finished trial": failed meanwhile elsewhere
            log(f"sweep {name}: a trial ended elsewhere while it ran here ({exc})")
        finally:
            lock.release()  # the job process held its own copy; this one goes now
        if abort.is_set():
            break
    return done


def _return_to_study(study, trial) -> None:
    """Optuna's callback after each trial: one failed only to be retried (interrupted, its job
    killed) is enqueued again, as a lost worker's is (Optuna's retry callback, the same limit)."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL and trial.user_attrs.get(RETURNED):
        study._storage.get_heartbeat_stale_trial_callback()(study, trial)  # the storage's own retry, its limit


def _fail(trial, reason: str, *, returned: bool = False) -> TrialFailed:
    trial.set_user_attr("error", reason)
    if returned:
        trial.set_user_attr(RETURNED, True)
    return TrialFailed(reason)


def _train_trial(sweep: studies.Sweep, trial, storage_url: Optional[str], lock: trainer_lock.TrainerLock,
                 abort: threading.Event, log: Callable[[str], None]):
    """The objective: train the trial's run in a job process and return its accuracy (and seconds)."""
    import optuna
    from optuna.trial import TrialState

    number = studies.display_number(trial.number)
    if sweep.kind == "queue" and "config" not in trial.user_attrs:  # another worker took the last one
        trial.set_user_attr("empty", True)
        raise TrialFailed("the queue was empty")
    if trial.user_attrs.get("removed"):
        raise _fail(trial, "removed from the queue")
    for stale in ("error", RETURNED, "pruned_at_epoch", "train_seconds", "run_id"):  # a retry's copies
        if stale in trial.user_attrs:
            trial.set_user_attr(stale, None)
    trial.set_user_attr("worker", runs.process_identity())
    try:
        config, run_name, tags = trial_config(sweep, trial)
    except (ValueError, TypeError, KeyError) as exc:  # a value TrainConfig refuses (a parameter from an old space)
        raise _fail(trial, f"{type(exc).__name__}: {exc}") from None
    record = {"name": sweep.name, "trial": number, "storage": describe(storage_url)}
    try:
        job = jobs.start(config, name=run_name, tags=tags, plan=trial.user_attrs.get("plan"),
                         status={"sweep": record}, lock=lock, bound=True)
    except (jobs.JobBusyError, runs.RunError, DataError, ValueError) as exc:
        log(f"#{number}: could not start: {exc}")
        raise _fail(trial, str(exc)) from None
    trial.set_user_attr("run_id", job.run_id)
    log(f"#{number}: run {job.run_id} ({run_name}), job process {job.process.pid}")
    prune = sweep.kind == "sweep" and sweep.pruner != "none"
    reported, pruned, why = 0, None, None
    next_check = time.monotonic() + CHECK_SECONDS
    storage = trial.study._storage
    while not job.wait(POLL_SECONDS):
        if why is None and abort.is_set():
            why = "interrupted"
            job.stop()
        if prune and why is None and pruned is None:
            reported, pruned = _report(trial, job.run_id, reported)
            if pruned is not None:
                job.stop()
        if why is None and time.monotonic() >= next_check:
            next_check = time.monotonic() + CHECK_SECONDS
            now = storage.get_trial(trial._trial_id)
            if now.state != TrialState.RUNNING:
                why = "failed elsewhere"  # judged stale by another worker: it is retried there
                job.stop()
            elif now.user_attrs.get("removed"):
                why = "removed"
                job.stop()
    run = runs.load_run(job.run_id)
    if prune and why is None and pruned is None and run.status == "completed":
        reported, pruned = _report(trial, job.run_id, reported)  # the last epoch, reported before the result
        pruned = None  # a run that completed is judged on its result, not pruned after the fact
    seconds = (run.history.get("train_seconds") or [0.0])[-1]
    trial.set_user_attr("train_seconds", seconds)
    metrics = run.metrics or {}
    if why == "interrupted":
        log(f"#{number}: interrupted; run {job.run_id} {run.status}, the trial returns to the study")
        raise _fail(trial, f"interrupted (run {job.run_id} {run.status}); returned to the sweep to be retried",
                    returned=True)
    if why == "removed":
        raise _fail(trial, f"removed from the queue while it trained; run {job.run_id} {run.status}")
    if why == "failed elsewhere":
        raise TrialFailed(f"trial {number} was failed elsewhere; run {job.run_id} {run.status}")
    if pruned is not None:
        trial.set_user_attr("pruned_at_epoch", pruned)
        log(f"#{number}: pruned after epoch {pruned}")
        raise optuna.TrialPruned(f"validation accuracy lagged after epoch {pruned}")
    if run.status == "completed" and metrics.get(sweep.metric) is not None:
        accuracy = float(metrics[sweep.metric])
        log(f"#{number}: {sweep.metric} {accuracy:.4f} in {seconds:.0f} s of training")
        return (accuracy, seconds) if sweep.objective == "accuracy-and-time" else accuracy
    if run.status == "interrupted":  # the job process was killed outright
        code = job.returncode
        log(f"#{number}: its job process ended without a word (exit {code}); the trial returns to the study")
        raise _fail(trial, f"its job process was killed (exit {code}); run {job.run_id} is resumable; retried",
                    returned=True)
    reason = run.error or ("stopped by request" if run.status == "stopped" else f"ended {run.status}")
    log(f"#{number}: failed: {reason}")
    raise _fail(trial, reason)


def _report(trial, run_id: str, reported: int) -> tuple[int, Optional[int]]:
    """Report the run's new epochs' validation accuracy to the trial; (epochs reported, the epoch
    the pruner stopped it at, or None)."""
    try:
        history = runs.load_run(run_id).history
    except runs.RunError:
        return reported, None
    values = history.get("val_accuracy") or []
    while reported < len(values):
        value = values[reported]
        reported += 1
        if value == value:  # NaN: not validated that epoch
            trial.report(float(value), reported)
            if trial.should_prune():
                return reported, reported
    return reported, None
