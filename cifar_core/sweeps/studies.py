"""Sweeps and the queue as Optuna studies: created with their space, base config and limits
(kept in the study's user attributes, so every worker on every machine reads the same), listed,
stopped; the queue is the study QUEUE whose trials are enqueued fixed configs.

Reading writes nothing to the storage (the queue's study is made once, when first missing), and a
study this version cannot read is listed as Broken, never raised out of a listing. People number
trials and queued runs from 1 (display_number); Optuna's own numbers, from 0, stay inside.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from typing import Any, Iterator, Optional, Union

from cifar_core.config import TrainConfig
from cifar_core.sweeps.space import Dimension, SpaceError, grid, parse_space
from cifar_core.sweeps.storage import SweepError, describe, open_storage

QUEUE = "queue"  # the study of the run queue
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,25}$")  # its runs are tagged sweep:NAME (tags: 32 characters)
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("accuracy", "accuracy-and-time")


@dataclasses.dataclass(frozen=True)
class Broken:
    """A study the lab cannot read (written by another version, or not by the lab): listed, skipped."""

    name: str
    reason: str  # one line


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep as its study records it."""

    name: str
    kind: str  # sweep | queue
    space: tuple[Dimension, ...]
    base: TrainConfig
    trials: Optional[int]  # stop after this many trials (None: until stopped)
    minutes: Optional[float]  # stop starting trials this long after creation (None: no limit)
    sampler: str
    pruner: str
    objective: str
    created_at: float
    stopped: bool = False

    @property
    def metric(self) -> str:
        """What a trial's accuracy is: the test accuracy with TTA when the recipe has TTA."""
        return "test_accuracy_tta" if self.base.tta != "none" else "test_accuracy"

    @property
    def directions(self) -> list[str]:
        return ["maximize", "minimize"] if self.objective == "accuracy-and-time" else ["maximize"]

    def make_sampler(self):
        import optuna

        if self.sampler == "grid":
            return optuna.samplers.GridSampler(grid(list(self.space)))
        if self.sampler == "random":
            return optuna.samplers.RandomSampler()
        return optuna.samplers.TPESampler()

    def make_pruner(self):
        import optuna

        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        if self.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(self.base.epochs, 1))
        return optuna.pruners.NopPruner()

    def to_attrs(self) -> dict[str, Any]:
        return {"kind": self.kind, "space": [d.spec for d in self.space], "base": self.base.to_dict(),
                "trials": self.trials, "minutes": self.minutes, "sampler": self.sampler, "pruner": self.pruner,
                "objective": self.objective, "created_at": self.created_at}


def display_number(trial_number: int) -> int:
    """The number people see and type for an Optuna trial number (Optuna counts from 0)."""
    return trial_number + 1


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise SweepError(f"a sweep name is letters, digits, '.', '_' or '-' (at most 26), got {name!r}")
    return name


def grid_size(dims: list[Dimension]) -> int:
    """How many points the grid sampler trains: every combination of the choices, once."""
    size = 1
    for choices in grid(dims).values():
        size *= len(choices)
    return size


def define(name: str, space: list[str], base: TrainConfig, *, trials: Optional[int] = None,
           minutes: Optional[float] = None, sampler: str = "tpe", pruner: str = "median",
           objective: str = "accuracy") -> Sweep:
    """A sweep checked whole (space against TrainConfig, sampler, pruner, limits) before it is stored.
    A grid sweep trains each point once: its trials default to the grid's size, and no more are taken."""
    check_name(name)
    if name == QUEUE:
        raise SweepError(f"{QUEUE!r} is the run queue's name; choose another")
    for value, allowed, what in ((sampler, SAMPLERS, "sampler"), (pruner, PRUNERS, "pruner"),
                                 (objective, OBJECTIVES, "objective")):
        if value not in allowed:
            raise SweepError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")
    if trials is not None and trials < 1:
        raise SweepError(f"--trials must be at least 1, got {trials}")
    if minutes is not None and not minutes > 0:
        raise SweepError(f"--minutes must be more than 0, got {minutes}")
    if trials is None and minutes is None and sampler != "grid":
        raise SweepError("give --trials or --minutes (or both): a sweep needs an end")
    if not space:
        raise SweepError("give at least one --space FIELD=SPEC, e.g. learning_rate=1e-4..1e-1:log")
    try:
        dims = tuple(parse_space(space, base))
        points = grid_size(list(dims)) if sampler == "grid" else None
    except SpaceError as exc:
        raise SweepError(str(exc)) from None
    if points is not None and trials is not None and trials > points:
        raise SweepError(f"the grid has {points} points, each trained once: give at most {points} trials "
                         "(or leave --trials out)")
    if points is not None and trials is None:
        trials = points
    if objective == "accuracy-and-time" and pruner != "none":
        raise SweepError("Optuna's pruners judge one objective: use --pruner none with accuracy-and-time")
    return Sweep(name, "sweep", dims, base, trials, minutes, sampler, pruner, objective, time.time())


def create(sweep: Sweep, storage_url: Optional[str] = None) -> Sweep:
    import optuna

    storage = open_storage(storage_url)
    try:
        study = optuna.create_study(study_name=sweep.name, storage=storage, directions=sweep.directions,
                                    load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        raise SweepError(f"a sweep named {sweep.name!r} already exists; choose another name") from None
    for key, value in sweep.to_attrs().items():
        study.set_user_attr(key, value)
    return sweep


def _queue_sweep(created_at: float) -> Sweep:
    return Sweep(QUEUE, "queue", (), TrainConfig(), None, None, "random", "none", "accuracy", created_at)


def from_attrs(name: str, attrs: dict[str, Any]) -> Sweep:
    """The sweep a study's user attributes describe.

    Raises:
      SweepError: attributes the lab did not write, or that this version cannot read (a key missing
        or odd, a space or base config that no longer parses), in one line.
    """
    if name == QUEUE:  # its settings are fixed; a racing creator may not have written them yet
        return _queue_sweep(float(attrs.get("created_at") or 0.0))
    if "kind" not in attrs:
        raise SweepError(f"study {name!r} cannot be read: it was not made by the lab (no sweep settings)")
    try:
        base = TrainConfig.from_dict(attrs["base"])
        sweep = Sweep(name, attrs["kind"], tuple(parse_space(list(attrs.get("space") or []), base)), base,
                      _optional(attrs.get("trials"), int), _optional(attrs.get("minutes"), float),
                      attrs.get("sampler", "tpe"), attrs.get("pruner", "none"), attrs.get("objective", "accuracy"),
                      float(attrs.get("created_at", 0.0)), bool(attrs.get("stopped")))
        for value, allowed in ((sweep.kind, ("sweep",)), (sweep.sampler, SAMPLERS), (sweep.pruner, PRUNERS),
                               (sweep.objective, OBJECTIVES)):
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    except (SweepError, ValueError, KeyError, TypeError, AttributeError) as exc:  # SpaceError is a ValueError
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise SweepError(f"sweep {name!r} cannot be read (written by another version of the lab?): "
                         f"{type(exc).__name__}: {reason}"[:400]) from None
    return sweep


def _optional(value: Any, kind: type) -> Any:
    """None, or a number of `kind` (a bool or text is refused: an attribute another version wrote)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise TypeError(f"expected a number, got {value!r}")
    return kind(value)


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    """Optuna's and the file system's errors while reading `what`, as one SweepError line."""
    import optuna

    try:
        yield
    except (optuna.exceptions.StorageInternalError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"cannot read {what}: {reason[:300]}") from None


def load(name: str, storage_url: Optional[str] = None) -> tuple[Sweep, Any]:
    """The sweep and its Optuna study (with the sweep's sampler and pruner). Writes nothing, except
    the queue's study the first time anyone asks for it."""
    import optuna

    storage = open_storage(storage_url)
    with _reading(f"the sweep storage {describe(storage_url)}"):
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            if name != QUEUE:
                known = [s.name for s in load_all(storage_url)]
                raise SweepError(f"no sweep named {name!r}" + (f"; known: {', '.join(known)}" if known else "")
                                 ) from None
            study_id = _create_queue(storage)
        sweep = from_attrs(name, storage.get_study_user_attrs(study_id))
        study = optuna.load_study(study_name=name, storage=storage, sampler=sweep.make_sampler(),
                                  pruner=sweep.make_pruner())
    return sweep, study


def load_all(storage_url: Optional[str] = None) -> list[Union[Sweep, Broken]]:
    """Every sweep in the storage, in the order they were made; one this version cannot read is a
    Broken with its reason (the queue is not a sweep: it is left out). One read, no write."""
    storage = open_storage(storage_url)
    with _reading(f"the sweep storage {describe(storage_url)}"):
        frozen = storage.get_all_studies()
    listed: list[Union[Sweep, Broken]] = []
    for study in frozen:
        if study.study_name == QUEUE:
            continue
        try:
            listed.append(from_attrs(study.study_name, study.user_attrs))
        except SweepError as exc:
            listed.append(Broken(study.study_name, str(exc)))
    return listed


def names(storage_url: Optional[str] = None) -> list[str]:
    """The sweeps that can be read, in the order they were made."""
    return [s.name for s in load_all(storage_url) if isinstance(s, Sweep)]


def stop(name: str, storage_url: Optional[str] = None) -> None:
    """Workers start no new trial of the sweep; the running ones finish."""
    _, study = load(name, storage_url)
    study.set_user_attr("stopped", True)


# --- the queue ------------------------------------------------------------------------------

def _create_queue(storage) -> int:
    """Make the queue's study (once: a process racing us to it loads the one made first); its id."""
    import optuna

    study = optuna.create_study(study_name=QUEUE, storage=storage, direction="maximize", load_if_exists=True)
    if "kind" not in study.user_attrs:
        for key, value in _queue_sweep(time.time()).to_attrs().items():
            study.set_user_attr(key, value)
    return storage.get_study_id_from_name(QUEUE)


def enqueue(config: TrainConfig, *, name: str = "", tags: tuple[str, ...] = (), storage_url: Optional[str] = None,
            plan: Optional[dict[str, Any]] = None) -> int:
    """Add a configured run to the queue (with its time budget's plan, if it has one); returns its
    queue number as people see it (from 1)."""
    _, study = load(QUEUE, storage_url)
    added_at = time.time()  # also what finds this trial among others enqueued at the same moment
    study.enqueue_trial({}, user_attrs={"config": config.to_dict(), "name": name, "tags": list(tags),
                                        "added_at": added_at, **({"plan": plan} if plan else {})})
    return display_number(max(t.number for t in study.get_trials(deepcopy=False)
                              if t.user_attrs.get("added_at") == added_at))


def remove(number: int, storage_url: Optional[str] = None) -> str:
    """Take queued run #`number` (as people number it) off the queue by marking it with the user
    attribute "removed"; its worker acts on the mark: a waiting run fails at once when popped, a
    running one is stopped. Returns "waiting" or "running": what the run was when marked.

    Nothing but the mark is written, so a worker that has just popped the run is not raced.

    Raises:
      SweepError: no such run, already removed, or finished.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    storage = open_storage(storage_url)
    _, study = load(QUEUE, storage_url)
    trials = study.get_trials(deepcopy=False)
    trial = next((t for t in trials if display_number(t.number) == number), None)
    if trial is None:
        open_runs = [display_number(t.number) for t in trials if not t.state.is_finished()
                     and not t.user_attrs.get("removed")]
        raise SweepError(f"no run #{number} in the queue" + (f"; waiting or running: {open_runs}" if open_runs
                                                             else " (nothing waits or runs)"))
    if trial.user_attrs.get("removed"):
        raise SweepError(f"queued run #{number} is already removed")
    if trial.state.is_finished():
        raise SweepError(f"queued run #{number} has finished ({trial.state.name.lower()}); nothing to remove")
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(QUEUE), trial.number)
    try:
        storage.set_trial_user_attr(trial_id, "removed", True)
    except (UpdateFinishedTrialError, RuntimeError):
        raise SweepError(f"queued run #{number} has just finished; nothing to remove") from None
    return trial.state.name.lower()


def trial_rows(sweep: Sweep, study) -> list[dict[str, Any]]:
    """One row per trial, for the page and `sweep status`: its number (from 1), state, parameters,
    accuracy, training minutes, the epoch a pruned trial stopped at, its run and why it failed.
    Attributes another version wrote oddly are left blank, never raised."""
    rows = []
    with _reading(f"the trials of {sweep.name!r}"):
        trials = study.get_trials(deepcopy=False)
    from optuna.trial import TrialState

    for t in trials:
        attrs = t.user_attrs
        if attrs.get("empty"):
            continue
        history = t.system_attrs.get("retry_history")
        retry_of = attrs.get("retry_of", history[-1] if isinstance(history, list) and history
                             else t.system_attrs.get("failed_trial"))
        if t.state == TrialState.WAITING and retry_of is not None:  # Optuna's retry copies its predecessor's
            attrs = {k: v for k, v in attrs.items()  # attributes: what that attempt did is not this one's
                     if k not in ("run_id", "error", "train_seconds", "pruned_at_epoch", "worker", "returned")}
        seconds = attrs.get("train_seconds")
        row: dict[str, Any] = {"trial": display_number(t.number),
                               "state": "removed" if attrs.get("removed") else t.state.name.lower()}
        if sweep.kind == "queue":
            config = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}
            row.update(name=attrs.get("name") or "", preset=config.get("preset"), epochs=config.get("epochs"))
        else:
            row.update({d.field: t.params.get(d.field) for d in sweep.space})
        row.update({
            "accuracy": t.values[0] if t.values else None,
            "training minutes": round(seconds / 60, 2) if isinstance(seconds, (int, float)) else None,
            "pruned at epoch": attrs.get("pruned_at_epoch"),
            "run": attrs.get("run_id"),
            "retry of": display_number(retry_of) if isinstance(retry_of, int) else None,
            "error": attrs.get("error"),
            "finished": t.datetime_complete.timestamp() if t.datetime_complete else None})
        rows.append(row)
    return rows


def summary(sweep: Sweep, rows: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    best = max((r for r in rows if r["accuracy"] is not None), key=lambda r: r["accuracy"], default=None)
    limit = " of " + str(sweep.trials) if sweep.trials else ""
    text = f"{sweep.name}: {len(rows)}{limit} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"
    if best:
        text += f"; best {sweep.metric.replace('_', ' ')} {best['accuracy']:.2%} (trial {best['trial']}, run {best['run']})"
    return text + ("; stopped" if sweep.stopped else "")


def best_so_far(rows: list[dict[str, Any]]) -> tuple[list[float], list[float], list[float]]:
    """(cumulative training minutes, each finished trial's accuracy, the best so far), in the order
    the trials finished: what the sweep bought with its machine time."""
    done = sorted((r for r in rows if r["state"] == "complete" and r["accuracy"] is not None and r["finished"]),
                  key=lambda r: r["finished"])
    minutes, points, best, total = [], [], [], 0.0
    for r in done:
        total += r["training minutes"] or 0.0
        minutes.append(round(total, 3))
        points.append(r["accuracy"])
        best.append(max(points))
    return minutes, points, best
