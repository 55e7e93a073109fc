"""A run folder's files: atomic writers (a reader or a kill never sees half a file, a full disk
leaves no stray one), a JSON reader that reuses its last parse while the file is unchanged, and
status.json's record of the process that trains the run."""
from __future__ import annotations

import copy
import csv
import errno
import io
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Optional

from cifar_core.files import replace_atomically

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "train_seconds")


class RunError(Exception):
    """A run cannot be created, found or loaded; the message says why."""


class DiskFullError(OSError):
    """A write found the disk (or the quota) full; the file it was saving kept its previous
    version (or none), and no temporary file is left."""

    def __init__(self, path: Path, reason: str):
        super().__init__(errno.ENOSPC, f"the disk holding {path.parent} is full ({reason}) while saving {path.name}")
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def disk_full_reason(exc: Optional[BaseException]) -> Optional[str]:
    """The OS's words ("No space left on device") when `exc` or an exception behind it is a full
    disk or quota, else None. Some libraries (h5py, TensorFlow) keep only the words, not errno."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for code in (errno.ENOSPC, errno.EDQUOT):
            if (isinstance(exc, OSError) and exc.errno == code) or os.strerror(code) in str(exc):
                return os.strerror(code)
        exc = exc.__cause__ or exc.__context__
    return None


def _replace_or_discard(path: Path, write) -> None:
    """`files.replace_atomically`, saying when the disk is full (DiskFullError names the file)."""
    try:
        replace_atomically(path, write)
    except BaseException as exc:
        reason = disk_full_reason(exc)
        if reason and not isinstance(exc, DiskFullError):
            raise DiskFullError(path, reason) from exc
        raise


PLAN_FILE = "plan.json"  # a time budget's plan and outcome (cifar_core/planning/records.py)
RESERVE_FILE = ".disk-reserve"  # in the run folder while its trainer runs
RESERVE_BYTES = 256 * 1024  # far more than a final status.json, traceback included


def reserve_space(run_dir: Path) -> None:
    """Set aside a little disk space for the run's final status: a disk that fills mid-run would
    otherwise leave status.json saying "running". Best effort: a failure here changes nothing."""
    try:
        (run_dir / RESERVE_FILE).write_bytes(os.urandom(RESERVE_BYTES))  # random: compression can't shrink it
    except OSError:
        release_space(run_dir)


def release_space(run_dir: Path) -> None:
    try:
        (run_dir / RESERVE_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def write_json(path: Path, obj: Any) -> None:
    """Write JSON via a temporary file and a rename, so readers never see half a file."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file unique to this thread, fsync, then rename over `path`."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    _replace_or_discard(path, write)


def save_model(model: Any, path: Path) -> None:
    """Save a Keras model atomically: a kill mid-save leaves the previous file (or none).

    Raises:
      DiskFullError: the disk filled during the save; the previous file is intact.
    """
    _replace_or_discard(path, model.save)  # the temporary name keeps .keras, which Keras requires


def model_stamp(path: Path) -> str:
    """Identifies one version of a model file: every save writes a whole new file (a new
    nanosecond mtime) and renames it into place. Survives copying a run folder with its times
    (cp -p, shutil.copytree), so a copied run keeps its cached predictions.

    Raises:
      FileNotFoundError: there is no such file.
    """
    st = Path(path).stat()
    return f"{Path(path).name}:{st.st_size}:{st.st_mtime_ns}"


def _finite(values: list[float]) -> list[Optional[float]]:
    """JSON has no NaN: a diverged epoch is stored as null."""
    return [v if v == v and abs(v) != float("inf") else None for v in (float(x) for x in values)]


def write_history(run_dir: Path, history: dict[str, list[float]]) -> None:
    """history.json (Keras' history.history keys) and history.csv (one row per epoch)."""
    clean = {k: _finite(v) for k, v in history.items()}
    write_json(run_dir / "history.json", clean)
    keys = [k for k in HISTORY_KEYS if k in clean] + sorted(k for k in clean if k not in HISTORY_KEYS)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(max((len(v) for v in clean.values()), default=0)):
        writer.writerow([i + 1, *("" if i >= len(clean[k]) or clean[k][i] is None else clean[k][i] for k in keys)])
    write_text(run_dir / "history.csv", buf.getvalue())


_status_lock = threading.Lock()  # the trainer and a Stop click may update status.json at once


def update_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into status.json."""
    with _status_lock:
        return _merge_status(run_dir, fields)


def _merge_status(run_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    try:
        current = read_json(run_dir / "status.json")
    except RunError:
        current = {}  # missing or garbled: rewrite it whole
    if not isinstance(current, dict):
        current = {}
    current.update(fields)
    write_json(run_dir / "status.json", current)
    return current


# --- status.json: who trains the run, and a final status a full disk kept out ----------------

# Final statuses this process's trainer could not write (a full disk): run folder -> status.json
# fields. read_status lays them over the file, and writes them once the disk has room again.
_unsaved_status: dict[Path, dict[str, Any]] = {}
_unsaved_lock = threading.Lock()


def process_identity() -> dict[str, Any]:
    """Who trains a run, for status.json and people ("host, pid N"): pid and host, and where /proc
    tells them, the process's start (clock ticks since boot) and the boot's id. Whether that trainer
    is still alive is the run claim's question (runs/claim.py), not this record's."""
    stat = _proc_stat(os.getpid())
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_start_ticks": stat[1] if stat else None,
            "boot_id": _boot_id()}


def _proc_stat(pid: int) -> Optional[tuple[str, int]]:
    """A process's state letter and start time (fields 3 and 22 of /proc/<pid>/stat); None where
    there is no /proc or no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # the name (field 2) may hold spaces and ')'
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def keep_unsaved_status(run_dir: Path, fields: dict[str, Any]) -> None:
    """Remember a final status that could not be written; `read_status` shows it and retries the write."""
    with _unsaved_lock:
        _unsaved_status.setdefault(run_dir, {}).update(fields)


def forget_unsaved_status(run_dir: Path) -> None:
    """Drop a remembered final status: the run's status.json is about to be rewritten (a resume)."""
    with _unsaved_lock:
        _unsaved_status.pop(run_dir, None)


def read_status(run_dir: Path) -> Any:
    """status.json, with a final status this process could not write laid over it; writes that
    status first when the disk has room again, so other processes see it too."""
    with _unsaved_lock:
        pending = _unsaved_status.get(run_dir)
        if pending is not None:
            try:
                update_status(run_dir, **pending)
                del _unsaved_status[run_dir]
                pending = None
            except OSError:
                pass
    if pending is None:
        return read_json(run_dir / "status.json")
    try:
        status = read_json(run_dir / "status.json")
    except RunError:
        status = {}
    return {**(status if isinstance(status, dict) else {}), **pending}


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_json(run_dir / "metrics.json", metrics)


_json_cache: dict[Path, tuple[tuple[int, int, int], Any]] = {}  # path -> (file identity, parsed)
_json_cache_lock = threading.Lock()
JSON_CACHE_FILES = 4096  # bound: ~5 JSON files per run


def read_json(path: Path) -> Any:
    """Parse a run's JSON file, reusing the last parse while the file is unchanged: every page
    lists every run on every rerun, and writers always replace files whole (new inode)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise RunError(f"{path.name} is missing")
    except OSError as exc:
        raise RunError(f"{path.name} is not readable ({exc})")
    identity = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _json_cache_lock:
        hit = _json_cache.get(path)
    if hit is not None and hit[0] == identity:
        return copy.deepcopy(hit[1])
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path.name} is missing")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path.name} is not valid JSON ({exc})")
    with _json_cache_lock:
        if len(_json_cache) >= JSON_CACHE_FILES:
            _json_cache.clear()
        _json_cache[path] = (identity, value)
    return copy.deepcopy(value)
