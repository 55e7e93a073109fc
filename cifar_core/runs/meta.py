"""A run's name, notes and tags (meta.json): written by people, never by the trainer, so they
can be edited while a run trains. The run id stays the folder's name."""
from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Optional

from cifar_core.runs.store import RunError, read_json, write_json

META_FILE = "meta.json"
MAX_NAME, MAX_NOTES, MAX_TAGS = 80, 5000, 20
TAG_PATTERN = re.compile(r"^[\w.+:-]{1,32}$")  # letters (any script), digits and . _ + : -


def clean_meta(name: Optional[str] = None, notes: Optional[str] = None,
               tags: Optional[Any] = None) -> dict[str, Any]:
    """Validate what people type as a run's name, notes and tags; only the given fields are returned.

    Raises:
      ValueError: a field is too long or a tag has characters outside TAG_PATTERN; says which.
    """
    out: dict[str, Any] = {}
    if name is not None:
        name = " ".join(str(name).split())  # one line, single spaces
        if len(name) > MAX_NAME:
            raise ValueError(f"name: at most {MAX_NAME} characters (got {len(name)})")
        out["name"] = name
    if notes is not None:
        notes = str(notes).strip()
        if len(notes) > MAX_NOTES:
            raise ValueError(f"notes: at most {MAX_NOTES} characters (got {len(notes)})")
        out["notes"] = notes
    if tags is not None:
        items = tags.replace(",", " ").split() if isinstance(tags, str) else [str(t).strip() for t in tags]
        unique = list(dict.fromkeys(t for t in items if t))
        bad = [t for t in unique if not TAG_PATTERN.match(t)]
        if bad:
            raise ValueError(f"tags: {bad[0]!r} is not a tag (1-32 letters, digits or . _ + : -, no spaces)")
        if len(unique) > MAX_TAGS:
            raise ValueError(f"tags: at most {MAX_TAGS} (got {len(unique)})")
        out["tags"] = unique
    return out


_lock = threading.Lock()


def write_meta(run_dir: Path, fields: dict[str, Any]) -> None:
    """Merge cleaned `fields` into the run's meta.json."""
    with _lock:
        try:
            current = read_json(run_dir / META_FILE)
        except RunError:
            current = {}
        current = current if isinstance(current, dict) else {}
        current.update(fields)
        write_json(run_dir / META_FILE, current)


def read_meta(run_dir: Path) -> dict[str, Any]:
    """{"name", "notes", "tags"} as stored; {} when absent. A damaged meta.json costs the name,
    never the run."""
    if not (run_dir / META_FILE).exists():
        return {}
    try:
        raw = read_json(run_dir / META_FILE)
        return clean_meta(**{k: raw.get(k) for k in ("name", "notes", "tags")}) if isinstance(raw, dict) else {}
    except (RunError, ValueError, TypeError):
        return {}
