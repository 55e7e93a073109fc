"""Sweeps and the queue as Optuna studies: created with their space, base config and limits
(kept in the study's user attributes, so every worker on every machine reads the same), listed,
stopped; the queue is the study QUEUE whose trials are enqueued fixed configs."""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Any, Optional

from cifar_core.config import TrainConfig
from cifar_core.sweeps.space import Dimension, SpaceError, grid, parse_space
from cifar_core.sweeps.storage import SweepError, open_storage

QUEUE = "queue"  # the study of the run queue
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,25}$")  # its runs are tagged sweep:NAME (tags: 32 characters)
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("accuracy", "accuracy-and-time")


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


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise SweepError(f"a sweep name is letters, digits, '.', '_' or '-' (at most 26), got {name!r}")
    return name


def define(name: str, space: list[str], base: TrainConfig, *, trials: Optional[int] = None,
           minutes: Optional[float] = None, sampler: str = "tpe", pruner: str = "median",
           objective: str = "accuracy") -> Sweep:
    """A sweep checked whole (space against TrainConfig, sampler, pruner, limits) before it is stored."""
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
        if sampler == "grid":
            grid(list(dims))
    except SpaceError as exc:
        raise SweepError(str(exc)) from None
    if sampler == "grid" and trials is None:  # every point of the grid once
        trials = 1
        for choices in grid(list(dims)).values():
            trials *= len(choices)
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


def from_attrs(name: str, attrs: dict[str, Any]) -> Sweep:
    if "kind" not in attrs:
        raise SweepError(f"study {name!r} was not made by the lab (no sweep settings)")
    base = TrainConfig.from_dict(attrs["base"])
    return Sweep(name, attrs["kind"], tuple(parse_space(attrs.get("space") or [], base)), base, attrs.get("trials"),
                 attrs.get("minutes"), attrs.get("sampler", "tpe"), attrs.get("pruner", "none"),
                 attrs.get("objective", "accuracy"), float(attrs.get("created_at", 0.0)), bool(attrs.get("stopped")))


def load(name: str, storage_url: Optional[str] = None) -> tuple[Sweep, Any]:
    """The sweep and its Optuna study (with the sweep's sampler and pruner)."""
    import optuna

    storage = open_storage(storage_url)
    if name == QUEUE:
        ensure_queue(storage)
    try:
        attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage) if s.study_name != QUEUE]
        raise SweepError(f"no sweep named {name!r}" + (f"; known: {', '.join(known)}" if known else "")) from None
    sweep = from_attrs(name, attrs)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sweep.make_sampler(),
                              pruner=sweep.make_pruner())
    return sweep, study


def names(storage_url: Optional[str] = None) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage_url), include_best_trial=False)
            if s.study_name != QUEUE]


def stop(name: str, storage_url: Optional[str] = None) -> None:
    """Workers start no new trial of the sweep; the running ones finish."""
    _, study = load(name, storage_url)
    study.set_user_attr("stopped", True)


# --- the queue ------------------------------------------------------------------------------

def ensure_queue(storage) -> None:
    import optuna

    study = optuna.create_study(study_name=QUEUE, storage=storage, direction="maximize", load_if_exists=True)
    if "kind" not in study.user_attrs:
        base = TrainConfig()
        for key, value in Sweep(QUEUE, "queue", (), base, None, None, "random", "none", "accuracy", time.time()
                                ).to_attrs().items():
            study.set_user_attr(key, value)


def enqueue(config: TrainConfig, *, name: str = "", tags: tuple[str, ...] = (), storage_url: Optional[str] = None,
            plan: Optional[dict[str, Any]] = None) -> int:
    """Add a configured run to the queue (with its time budget's plan, if it has one); returns its
    queue number."""
    _, study = load(QUEUE, storage_url)
    study.enqueue_trial({}, user_attrs={"config": config.to_dict(), "name": name, "tags": list(tags),
                                        "added_at": time.time(), **({"plan": plan} if plan else {})})
    return max(t.number for t in study.get_trials(deepcopy=False))


def remove(number: int, storage_url: Optional[str] = None) -> None:
    """Take a waiting run off the queue (Optuna keeps the trial, marked failed as removed)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = open_storage(storage_url)
    _, study = load(QUEUE, storage_url)
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or trial.state != TrialState.WAITING:
        waiting = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
        raise SweepError(f"no waiting run #{number} in the queue" + (f"; waiting: {waiting}" if waiting else " (it is empty)"))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(QUEUE), number)
    try:
        storage.set_trial_user_attr(trial_id, "removed", True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except (UpdateFinishedTrialError, RuntimeError):
        raise SweepError(f"queued run #{number} has just started; stop it on the Train page instead") from None


def trial_rows(sweep: Sweep, study) -> list[dict[str, Any]]:
    """One row per trial, for the page and `sweep status`: state, parameters, accuracy, training
    minutes, the epoch a pruned trial stopped at, its run and why it failed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if attrs.get("empty"):
            continue
        seconds = attrs.get("train_seconds")
        row: dict[str, Any] = {"trial": t.number, "state": "removed" if attrs.get("removed") else t.state.name.lower()}
        if sweep.kind == "queue":
            config = attrs.get("config") or {}
            row.update(name=attrs.get("name") or "", preset=config.get("preset"), epochs=config.get("epochs"))
        else:
            row.update({d.field: t.params.get(d.field) for d in sweep.space})
        row.update({
            "accuracy": t.values[0] if t.values else None,
            "training minutes": None if seconds is None else round(seconds / 60, 2),
            "pruned at epoch": attrs.get("pruned_at_epoch"),
            "run": attrs.get("run_id"),
            "retry of": attrs.get("retry_of"),
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
