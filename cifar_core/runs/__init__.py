"""The run store: one folder per run under artifacts/runs/, written atomically, listed robustly.

Beside it: `store` (atomic JSON and model writes, disk space, status files), `meta` (a run's
name, tags and notes), `heartbeat` (whether a run's trainer is still alive) and `claim` (the OS
lock a training process holds on its run folder).

May import: config, files, paths, quiet, trainer_lock, data, recipes, models.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Optional

from cifar_core.runs import heartbeat
from cifar_core.runs.claim import Claim, adopt_claim, claim_held, claim_run  # noqa: F401 (re-exported)
from cifar_core.config import TrainConfig
from cifar_core.runs.meta import (  # noqa: F401 (re-exported)
    MAX_NAME, MAX_NOTES, META_FILE, clean_meta, read_meta, write_meta,
)
from cifar_core.paths import runs_dir
from cifar_core.runs.store import (
    PLAN_FILE, HISTORY_KEYS, DiskFullError, RunError, disk_full_reason, forget_unsaved_status,
    keep_unsaved_status, model_stamp, process_identity, read_json, read_status, release_space,
    reserve_space, save_model, update_status, write_history, write_json,
    write_metrics, write_text,
)

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ACTIVE = ("running", "stopping")  # statuses of a run whose trainer is alive
MIN_FREE_BYTES = 200 * 1024 * 1024  # a run writes ~35 MB per checkpoint; refuse below this


@dataclasses.dataclass
class Run:
    """What a run folder says about itself; `broken` names the reason when it can't be read."""

    run_id: str
    path: Path
    status: str = "unknown"
    config: Optional[TrainConfig] = None
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    metrics: Optional[dict[str, Any]] = None
    started_at: Optional[float] = None  # seconds since the epoch
    finished_at: Optional[float] = None
    resumed_at: Optional[float] = None  # the last resume's start, if any
    prior_seconds: float = 0.0  # time spent in earlier sessions of a resumed run
    last_write_at: Optional[float] = None  # the newest file the trainer wrote (an interrupted run's end)
    error: Optional[str] = None  # the failure message of a failed run
    # the last session's strategy, replicas, workers, global and per-replica batch (cifar_core.training.distributed);
    # None for runs from before distributed training
    distribution: Optional[dict[str, Any]] = None
    broken: Optional[str] = None  # why the folder could not be read
    name: str = ""  # given by people (meta.json); the id stays the folder's name
    notes: str = ""
    tags: tuple[str, ...] = ()
    plan: Optional[dict[str, Any]] = None  # plan.json of a run trained for a time budget

    @property
    def title(self) -> str:
        """The name where one was given, else the id."""
        return self.name or self.run_id

    @property
    def epochs_done(self) -> int:
        return len(self.history.get("loss", []))

    @property
    def test_accuracy(self) -> Optional[float]:
        return None if not self.metrics else self.metrics.get("test_accuracy")

    @property
    def test_loss(self) -> Optional[float]:
        return None if not self.metrics else self.metrics.get("test_loss")

    @property
    def duration_seconds(self) -> Optional[float]:
        """Wall time the run's trainer worked on it: up to now while it trains, up to its last write
        when it was interrupted, and without the idle gaps before a resume."""
        start = self.resumed_at if self.resumed_at is not None else self.started_at
        if start is None:
            return None
        if self.finished_at is not None and self.finished_at >= start:
            end = self.finished_at
        elif self.is_active:
            end = time.time()
        else:  # interrupted (or a finish time from before the resume): its trainer's last sign of life
            end = self.last_write_at if self.last_write_at is not None else start
        return self.prior_seconds + max(0.0, end - start)

    @property
    def model_path(self) -> Optional[Path]:
        return model_file(self.path)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE


# --- which model file a reader loads ---------------------------------------------------------

# The weights an EMA run (weight_averaging="ema") would end with, saved beside each epoch's checkpoint:
# the checkpoint keeps the raw weights a resume continues from, this file the averaged ones a reader
# of a run killed mid-way must be served (the final model holds them once the run ends).
AVERAGED_CHECKPOINT = "checkpoint-averaged.keras"
MODEL_FILES = ("model.keras", AVERAGED_CHECKPOINT, "checkpoint.keras")  # the final model first


def model_file(run_dir: Path) -> Optional[Path]:
    """The one place that chooses a run's model: the final model, else the last epoch's averaged
    weights (an EMA run), else its checkpoint, else None. Resuming retires the final model, so this
    file always holds the weights the history ends at (or a stop's later ones)."""
    for name in MODEL_FILES:
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def current_model_stamp(run_dir: Path) -> Optional[str]:
    """The stamp (store.model_stamp) of the model file a reader of this run would load now;
    None before the first checkpoint."""
    for name in MODEL_FILES:  # the same order as model_file; a file replaced meanwhile: the next one
        try:
            return model_stamp(Path(run_dir) / name)
        except FileNotFoundError:
            continue
    return None


# --- paths and ids ------------------------------------------------------------------------

def new_run_id() -> str:
    """Sortable by start time, unique across processes."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def run_path(run_id: str) -> Path:
    """The folder of `run_id`, refusing any id that could name a path outside the runs folder."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.match(run_id) or ".." in run_id:
        raise RunError(f"invalid run id {run_id!r}: use letters, digits, '-', '_' and '.' only")
    root = runs_dir()
    path = (root / run_id).resolve()
    if path.parent != root:
        raise RunError(f"run id {run_id!r} escapes the runs folder")
    return path


# --- atomic writes ------------------------------------------------------------------------

def update_meta(run_id: str, *, name: Optional[str] = None, notes: Optional[str] = None,
                tags: Optional[Any] = None) -> Run:
    """Set a run's name, notes and/or tags (the others are kept); works while it trains, since
    the trainer never writes meta.json. Returns the run as read back.

    Raises:
      ValueError: see `clean_meta`. RunError: no such run.
    """
    fields = clean_meta(name, notes, tags)
    path = run_path(run_id)
    if not path.is_dir():
        raise RunError(f"no run {run_id!r} in {runs_dir()}")
    write_meta(path, fields)
    return load_run(run_id)


# --- create, read, list, delete -----------------------------------------------------------

def check_writable(root: Path) -> None:
    """Fail now, with the reason, rather than lose a run after an hour."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-probe-{os.getpid()}-{secrets.token_hex(2)}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RunError(f"cannot write to the artifacts folder {root}: {exc.strerror or exc}. "
                       f"Free it up or set CIFAR_ARTIFACTS_DIR to a writable folder.") from exc
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise RunError(f"only {free // 2**20} MB free in {root}; a run needs at least "
                       f"{MIN_FREE_BYTES // 2**20} MB for its checkpoints")


def create_run(config: TrainConfig, run_id: Optional[str] = None, name: str = "",
               tags: Any = ()) -> Path:
    """Make a fresh run folder with config.json and status.json (and meta.json when named or
    tagged); never reuses a folder. Raises ValueError for a bad name or tag, before any write."""
    meta = {k: v for k, v in clean_meta(name=name, tags=tags).items() if v}
    root = runs_dir()
    check_writable(root)
    path = run_path(run_id or new_run_id())
    try:
        path.mkdir()
    except FileExistsError as exc:
        raise RunError(f"run {path.name} already exists; runs are never overwritten") from exc
    except OSError as exc:
        raise RunError(f"cannot create run folder {path}: {exc}") from exc
    write_json(path / "config.json", config.to_dict())
    write_json(path / "status.json", {"status": "running", "started_at": time.time(), "epochs_done": 0,
                                      **process_identity()})
    if meta:
        write_json(path / META_FILE, meta)
    reserve_space(path)  # the trainer's last words fit even if the disk fills (training releases it)
    return path


def load_run(run_id: str, *, holding_claim: bool = False) -> Run:
    """Read a run folder. An unreadable part marks the run broken with the reason; a missing
    folder or a bad id raises RunError. `holding_claim`: this process holds the run's claim (a
    resume about to take it over), so a "running" status there was left by a trainer now gone."""
    path = run_path(run_id)
    if not path.is_dir():
        raise RunError(f"no run {run_id!r} in {runs_dir()}")
    run = Run(run_id=run_id, path=path)
    problems = []
    try:
        status = read_status(path)
        if not isinstance(status, dict) or not isinstance(status.get("status"), str):
            raise RunError("status.json has no status")
        run.status = status["status"]
        run.started_at = _number(status.get("started_at"))
        run.finished_at = _number(status.get("finished_at"))
        run.resumed_at = _number(status.get("resumed_at"))
        run.prior_seconds = _number(status.get("prior_seconds")) or 0.0
        run.error = status.get("error") if isinstance(status.get("error"), str) else None
        run.distribution = status.get("distribution") if isinstance(status.get("distribution"), dict) else None
        if run.status in ACTIVE:
            # Who is alive has one answer: on this machine, the run's claim (the flock its training
            # process holds); a trainer on another host (a cluster's chief on shared storage) lives
            # while it publishes live.json.
            here = status.get("host") in (None, socket.gethostname())
            if holding_claim or not (claim_held(path) if here else heartbeat.fresh(path)):
                run.status = "interrupted"  # its trainer is gone: killed, crashed or restarted
    except RunError as exc:
        problems.append(str(exc))
    try:
        run.config = TrainConfig.from_dict(read_json(path / "config.json"))
    except (RunError, ValueError, TypeError) as exc:
        problems.append(f"config.json: {exc}" if not str(exc).startswith("config.json") else str(exc))
    if (path / "history.json").exists():
        try:
            run.history = _parse_history(read_json(path / "history.json"))
        except RunError as exc:
            problems.append(str(exc) if str(exc).startswith("history") else f"history.json: {exc}")
    if (path / "metrics.json").exists():
        try:
            metrics = read_json(path / "metrics.json")
            if not isinstance(metrics, dict):
                raise RunError("metrics.json is not an object")
            run.metrics = metrics
        except RunError as exc:
            problems.append(str(exc))
    if (path / PLAN_FILE).exists():
        try:
            plan = read_json(path / PLAN_FILE)
            run.plan = plan if isinstance(plan, dict) else None
        except RunError:
            run.plan = None  # the plan is a record for people; the run itself is still whole
    if run.status == "interrupted":
        run.last_write_at = _last_write(path)
    meta = read_meta(path)
    run.name, run.notes, run.tags = meta.get("name", ""), meta.get("notes", ""), tuple(meta.get("tags", ()))
    if problems:
        run.broken = "; ".join(problems)
    return run


def _last_write(path: Path) -> Optional[float]:
    """When the trainer last wrote the folder: its newest status, history or checkpoint."""
    times = []
    for name in ("status.json", "history.json", "checkpoint.keras", "model.keras"):
        try:
            times.append((path / name).stat().st_mtime)
        except OSError:
            pass
    return max(times, default=None)


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _parse_history(raw: Any) -> dict[str, list[float]]:
    if not isinstance(raw, dict):
        raise RunError("history.json is not an object of lists")
    out = {}
    for key, values in raw.items():
        if not isinstance(values, list) or not all(v is None or isinstance(v, (int, float)) for v in values):
            raise RunError(f"history.json: {key!r} is not a list of numbers")
        out[str(key)] = [float("nan") if v is None else float(v) for v in values]
    return out


def list_runs() -> list[Run]:
    """All runs, newest first; a broken folder is listed with its reason, never hides the rest."""
    root = runs_dir()
    if not root.is_dir():
        return []
    runs = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            runs.append(load_run(entry.name))
        except RunError as exc:
            runs.append(Run(run_id=entry.name, path=entry, broken=str(exc)))
    runs.sort(key=lambda r: (r.started_at or 0.0, r.run_id), reverse=True)
    return runs


def delete_run(run_id: str) -> None:
    """Remove a run folder; refuses a run that is training right now."""
    run = load_run(run_id)
    if run.is_active:
        raise RunError(f"run {run_id} is still training; stop it before deleting")
    with claim_run(run.path):  # a resume preparing in another process holds it (its status is not yet running)
        shutil.rmtree(run.path)


def load_model(run_id: str):
    """Load a run's model (final, else last checkpoint) with Keras safe_mode: no code runs."""
    return load_model_stamped(run_id)[0]


def load_model_stamped(run_id: str) -> tuple[Any, str]:
    """`load_model`, and the stamp (`model_stamp`) of the very file it read: the trainer may replace
    the checkpoint while it loads, and predictions are labelled with the model that made them."""
    import keras

    from cifar_core.models import register_custom_objects

    register_custom_objects()
    for _ in range(3):
        run = load_run(run_id)
        path = run.model_path
        if path is None:
            raise RunError(f"run {run_id} has no saved model yet")
        try:
            before = model_stamp(path)
            model = keras.saving.load_model(path, safe_mode=True, compile=False)
            if model_stamp(path) == before:
                return model, before
        except FileNotFoundError:
            pass  # replaced or retired (a resume) between listing and loading: look again
        except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors...
            raise RunError(f"cannot load {path.name} of run {run_id}: {exc}") from exc
    raise RunError(f"the model of run {run_id} kept changing while it was loaded; try again")
