"""A run folder's files: atomic writers (a reader or a kill never sees half a file) and a JSON
reader that reuses its last parse while the file is unchanged."""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import threading
from pathlib import Path
from typing import Any, Optional

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "train_seconds")


class RunError(Exception):
    """A run cannot be created, found or loaded; the message says why."""


def write_json(path: Path, obj: Any) -> None:
    """Write JSON via a temporary file and a rename, so readers never see half a file."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_text(path: Path, text: str) -> None:
    """Write via a temporary file unique to this thread, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_model(model: Any, path: Path) -> None:
    """Save a Keras model atomically: a kill mid-save leaves the previous file (or none)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
