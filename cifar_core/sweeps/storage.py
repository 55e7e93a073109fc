"""Where sweeps live: Optuna's journal file under `artifacts/sweeps/` (nothing to install, safe for
several worker processes, and for several machines sharing the folder), or a database URL
(`--storage`, or $CIFAR_LAB_SWEEPS) such as postgresql://user:pass@host/db for many machines.

Every storage has Optuna's heartbeat: a worker inside `Study.optimize` beats for its trial every
HEARTBEAT_SECONDS, and the next `optimize` anywhere fails a trial whose beat stopped for
GRACE_SECONDS and enqueues it again (Optuna's RetryHeartbeatStaleTrialCallback, at most MAX_RETRY
times). A database times the beats with its own clock; the journal file has no clock of its own,
so each reader times what it observes (see JournalHeartbeatStorage).
"""
from __future__ import annotations

import functools
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from cifar_core.paths import artifacts_dir

STORAGE_ENV = "CIFAR_LAB_SWEEPS"
JOURNAL_FILE = "journal.log"
DATABASE_URL = re.compile(r"^[a-z][a-z0-9+]*://", re.IGNORECASE)
HEARTBEAT_SECONDS = 20  # a running trial's worker beats this often
GRACE_SECONDS = 60  # a trial whose beat has not changed for this long has lost its worker
MAX_RETRY = 3  # a trial whose worker was lost is enqueued again at most this many times
HEARTBEAT_ENV, GRACE_ENV = "CIFAR_SWEEP_HEARTBEAT_SECONDS", "CIFAR_SWEEP_GRACE_SECONDS"  # shorter, for tests and the soak
BEAT_KEY = "lab:heartbeat"  # the trial system attribute a journal worker beats (its own clock's time)


class SweepError(RuntimeError):
    """A sweep that cannot be made, found or run, said in one line."""


def default_journal() -> Path:
    return artifacts_dir() / "sweeps" / JOURNAL_FILE


def describe(url: Optional[str]) -> str:
    """The storage for people, with any password masked."""
    chosen = url or os.environ.get(STORAGE_ENV) or str(default_journal())
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", chosen)


def describe_for_viewers(url: Optional[str] = None) -> str:
    """The storage as a page may show it to anyone: a journal by its path inside the artifacts
    folder (or its file name alone), a database by its masked URL; never the machine's folders."""
    chosen = url or os.environ.get(STORAGE_ENV) or ""
    if DATABASE_URL.match(chosen):
        return describe(chosen)
    path = _journal_path(chosen)
    try:
        return path.relative_to(artifacts_dir().expanduser().resolve()).as_posix()
    except ValueError:
        return f"{path.name} (outside the artifacts folder)"


def _journal_path(chosen: str) -> Path:
    return (Path(chosen).expanduser() if chosen else default_journal()).resolve()


def _stale_trial_callback(max_retry: int):
    """Optuna's retry of a trial whose worker was lost: a WAITING copy with the same parameters and
    user attributes, its system attribute "failed_trial" naming the first lost trial."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


@functools.cache
def _journal_heartbeat_class():
    """JournalStorage with Optuna's BaseHeartbeat (Optuna 5.1 gives only RDBStorage one); a class
    made on first use, so importing this module does not import Optuna."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class JournalHeartbeatStorage(optuna.storages.JournalStorage, BaseHeartbeat):
        """A journal storage whose workers beat and whose readers fail trials that stopped beating.

        The beat is the trial system attribute BEAT_KEY, set to the writer's time.time(): only its
        changing matters, so no two machines' clocks are ever compared. A reader remembers, on its
        own time.monotonic(), when it first saw each RUNNING trial's current beat; a trial whose beat
        has not changed for `grace_seconds` of this reader's watching is stale. So a fresh reader
        (a new process) fails nothing until it has watched for a grace period.
        """

        def __init__(self, backend, *, heartbeat_seconds: float = HEARTBEAT_SECONDS,
                     grace_seconds: float = GRACE_SECONDS, max_retry: int = MAX_RETRY) -> None:
            super().__init__(backend)
            self._heartbeat_seconds = heartbeat_seconds
            self._grace_seconds = grace_seconds
            self._stale_callback = _stale_trial_callback(max_retry)
            self._seen_lock = threading.Lock()
            # study id -> {running trial id -> (its beat, this reader's monotonic time when first seen)}
            self._seen: dict[int, dict[int, tuple[Any, float]]] = {}

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, BEAT_KEY, time.time())
            except UpdateFinishedTrialError:  # Optuna's heartbeat thread may beat once after the end
                pass

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.monotonic()
            running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            stale = []
            with self._seen_lock:
                before, seen = self._seen.get(study_id, {}), {}
                for trial in running:
                    beat = trial.system_attrs.get(BEAT_KEY)
                    last = before.get(trial._trial_id)
                    seen[trial._trial_id] = last if last is not None and last[0] == beat else (beat, now)
                    if now - seen[trial._trial_id][1] >= self._grace_seconds:
                        stale.append(trial._trial_id)
                self._seen[study_id] = seen  # finished trials are forgotten
            return stale

        def get_heartbeat_interval(self) -> Optional[float]:
            return self._heartbeat_seconds

        def get_heartbeat_stale_trial_callback(self):
            return self._stale_callback

    return JournalHeartbeatStorage


def __getattr__(name: str) -> Any:
    if name == "JournalHeartbeatStorage":
        return _journal_heartbeat_class()
    raise AttributeError(name)


def open_storage(url: Optional[str] = None, *, heartbeat_seconds: Optional[float] = None,
                 grace_seconds: Optional[float] = None, max_retry: Optional[int] = None) -> Any:
    """The Optuna storage for `url` (default: $CIFAR_LAB_SWEEPS, else the journal file), with the
    heartbeat on; one object per process for each storage and heartbeat settings, so a journal is
    replayed incrementally rather than read whole on every call.

    Args:
      heartbeat_seconds, grace_seconds, max_retry: default HEARTBEAT_SECONDS, GRACE_SECONDS and
        MAX_RETRY as they are when called (tests shorten them).

    Raises:
      SweepError: the database cannot be reached, or was written by another Optuna version.
    """
    chosen = url or os.environ.get(STORAGE_ENV) or ""
    where = chosen if DATABASE_URL.match(chosen) else str(_journal_path(chosen))
    key = (where, _setting(heartbeat_seconds, HEARTBEAT_ENV, HEARTBEAT_SECONDS),
           _setting(grace_seconds, GRACE_ENV, GRACE_SECONDS), MAX_RETRY if max_retry is None else max_retry)
    seen = _journal_seen(where)
    with _cache_lock:
        cached = _cache.get(key)
        # a journal deleted and made again (even on the same inode: it is shorter than what was
        # replayed) gets a fresh storage, not one holding lines the new file lacks
        if cached is not None and (seen is None or (seen[0] == cached[1][0] and seen[1] >= cached[1][1])):
            _cache[key] = (cached[0], seen or cached[1])
            return cached[0]
    storage = _open(*key)
    with _cache_lock:
        _cache[key] = (storage, seen or (0, 0))
    return storage


_cache: dict[tuple, tuple[Any, tuple[int, int]]] = {}  # one storage per process for each storage and settings
_cache_lock = threading.Lock()


def _setting(given: Optional[float], env: str, default: float) -> float:
    """An argument, else the environment's value (the soak shortens liveness for every process it
    starts), else the module's default."""
    if given is not None:
        return given
    try:
        return float(os.environ[env])
    except (KeyError, ValueError):
        return default


def _journal_seen(where: str) -> Optional[tuple[int, int]]:
    """The journal file's inode and size, making the file if it is missing (None for a database)."""
    if DATABASE_URL.match(where):
        return None
    path = Path(where)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        st = path.stat()
        return st.st_ino, st.st_size
    except OSError as exc:
        raise SweepError(f"cannot use the sweep journal {path}: {exc.strerror or exc}") from None


def _open(where: str, heartbeat_seconds: float, grace_seconds: float, max_retry: int) -> Any:
    """A new storage behind open_storage (a failure is not cached: the next call tries again)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the lab says what happens, in its own words
    if not DATABASE_URL.match(where):
        path = Path(where)
        try:
            return _journal_heartbeat_class()(optuna.storages.journal.JournalFileBackend(str(path)),
                                              heartbeat_seconds=heartbeat_seconds, grace_seconds=grace_seconds,
                                              max_retry=max_retry)
        except OSError as exc:
            raise SweepError(f"cannot use the sweep journal {path}: {exc.strerror or exc}") from None
        except Exception as exc:  # noqa: BLE001 - a journal Optuna cannot replay
            raise SweepError(f"cannot read the sweep journal {path} (written by another Optuna version?): "
                             f"{type(exc).__name__}: {exc}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(
                where, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=max(1, round(heartbeat_seconds)),
                grace_period=max(1, round(grace_seconds)),
                heartbeat_stale_trial_callback=_stale_trial_callback(max_retry))
    except RuntimeError as exc:  # Optuna's schema check
        raise SweepError(f"the database {describe(where)} was written by another Optuna version "
                         f"(this is {optuna.__version__}): {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors: unreachable, refused, no driver
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SweepError(f"cannot reach the sweep storage {describe(where)}: {reason[:300]}") from None
