"""Formatting for people: percentages, durations, times, config summaries, the runs table, and
paths as a viewer may see them."""
from __future__ import annotations

import datetime as dt
import math
import os
import re
import socket
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from cifar_core.config import TrainConfig
from cifar_core.recipes.presets import matching_preset
from cifar_core.runs import Run

DASH = "—"  # shown where a value does not exist yet
STATUS_COLORS = {
    "preparing": "blue", "running": "blue", "stopping": "orange", "completed": "green",
    "stopped": "orange", "interrupted": "orange", "failed": "red", "unknown": "gray",
}


def _missing(x: Optional[float]) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x: Optional[float], digits: int = 1) -> str:
    return DASH if _missing(x) else f"{x:.{digits}%}"


def number(x: Optional[float], digits: int = 4) -> str:
    return DASH if _missing(x) else f"{x:.{digits}f}"


def duration(seconds: Optional[float]) -> str:
    """'1h 02m', '3m 05s', '12s'."""
    if _missing(seconds):
        return DASH
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def elapsed(started_at: Optional[float], finished_at: Optional[float]) -> Optional[float]:
    """Seconds from start to finish; None until both are known."""
    if _missing(started_at) or _missing(finished_at):
        return None
    return max(0.0, finished_at - started_at)


def when(timestamp: Optional[float]) -> str:
    if _missing(timestamp):
        return DASH
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


# An absolute path inside text: a "/" (or "~/") that does not follow a word, a dot, a colon or
# another slash (so "600/200", "64/128" and URLs stay), up to white space or punctuation.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`<>|,;()\[\]{}]+")
MACHINE = "this machine"  # what a viewer reads in place of the host name


def _data_root() -> Optional[Path]:
    """The folder that holds the lab's own data ($CIFAR10_DATA's parent, where that is a path)."""
    chosen = os.environ.get("CIFAR10_DATA", "").strip()
    return Path(chosen).expanduser().resolve().parent if chosen.startswith(("/", "~")) else None


def public_path(path: str | Path) -> str:
    """A path as anyone may see it: relative to the artifacts folder, or to the folder holding the
    lab's data (so the data folder's own name shows), else its last name alone."""
    from cifar_core.paths import artifacts_dir

    given = Path(str(path).rstrip(".")).expanduser()
    candidates = {given, given.resolve()}
    for root in (artifacts_dir(), _data_root()):
        for candidate in candidates:
            if root is not None and candidate.is_relative_to(root) and candidate != root:
                return candidate.relative_to(root).as_posix()
    return f"…/{given.name}" if given.name else "…"


def public_text(text: Optional[str]) -> str:
    """`text` with every absolute path in it made `public_path` and the host name made MACHINE."""
    if not text:
        return text or ""
    out = _ABSOLUTE_PATH.sub(lambda m: public_path(m.group(0)) + ("." if m.group(0).endswith(".") else ""), text)
    host = socket.gethostname()
    return re.sub(rf"\b{re.escape(host)}\b", MACHINE, out) if len(host) >= 2 else out


def config_summary(config: Optional[TrainConfig], public: bool = False) -> str:
    """One line of a run's config; `public`: its data source as a viewer may see it."""
    if config is None:
        return DASH
    preset = config.preset if matching_preset(config) == config.preset else f"{config.preset} (edited)"
    network = config.architecture if config.architecture != "airbench" else f"airbench {'/'.join(map(str, config.widths))}"
    parts = [preset, *([network] if network != config.preset else []),  # "assignment · assignment" says it once
             f"{config.epochs} epochs", f"batch {config.batch_size}", f"{config.optimizer} lr {config.learning_rate:g}",
             f"dropout {config.dropout:g}", f"seed {config.seed}",
             (public_text(config.data) if public else config.data) or "default data"]
    if config.train_subset or config.test_subset:
        parts.append(f"subset {config.train_subset or 'all'}/{config.test_subset or 'all'}")
    return " · ".join(parts)


def status_badge(status: str) -> str:
    """Streamlit markdown: the status in its colour."""
    return f":{STATUS_COLORS.get(status, 'gray')}[**{status}**]"


def run_label(run: Run) -> str:
    """One line for pickers: id, status, test accuracy, preset; the name first where one was given."""
    extra = f" · test acc {pct(run.test_accuracy)}" if run.test_accuracy is not None else ""
    preset = f" · {run.config.preset}" if run.config is not None else ""
    name = f"{run.name} · " if run.name else ""
    return f"{name}{run.run_id} · {run.status}{extra}{preset}"


def compare_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run id -> "name (preset)" for a chart's legend or a table's row, unique among `runs`: where
    that repeats, the id's random tail tells the runs apart (the whole id, should the tails repeat too)."""
    def label(r: Run, tag: str = "") -> str:
        title = f"{r.title} · {tag}" if tag else r.title
        return f"{title} ({r.config.preset})" if r.config is not None else title

    labels = {r.run_id: label(r) for r in runs}
    for tag in (lambda r: r.run_id.rsplit("-", 1)[-1], lambda r: r.run_id):
        counts = Counter(labels.values())
        labels.update({r.run_id: label(r, tag(r)) for r in runs if counts[labels[r.run_id]] > 1})
    return labels


def epochs_text(run: Run) -> str:
    total = run.config.epochs if run.config else None
    return f"{run.epochs_done}/{total}" if total else str(run.epochs_done)


def runs_frame(runs: Sequence[Run], public: bool = False) -> pd.DataFrame:
    """The runs table: one row per run, broken ones with their reason; `public`: paths in the
    config and the reasons as a viewer may see them (`public_text`)."""
    shown = public_text if public else (lambda text: text)
    rows = []
    for r in runs:
        rows.append({
            "run": r.run_id,
            "name": r.name,
            "tags": ", ".join(r.tags),
            "started": dt.datetime.fromtimestamp(r.started_at) if r.started_at else None,
            "status": "broken" if r.broken else r.status,
            "epochs": epochs_text(r),
            "test accuracy": r.test_accuracy,
            "with TTA": (r.metrics or {}).get("test_accuracy_tta"),
            "training time": duration(r.history["train_seconds"][-1]) if r.history.get("train_seconds") else DASH,
            "duration": duration(r.duration_seconds),
            "config": config_summary(r.config, public),
            "problem": shown(r.broken or r.error or ""),
        })
    return pd.DataFrame(rows, columns=list(RUNS_COLUMNS))


# The runs table's columns, left to right: what tells runs apart first, so that the config is in
# view at 1280 px; the times, tags and problem after it.
RUNS_COLUMNS = ("run", "name", "status", "test accuracy", "with TTA", "config", "epochs", "started", "training time",
                "duration", "tags", "problem")
OPTIONAL_COLUMNS = ("name", "tags", "problem")  # left out of view where every row leaves them empty
CONFIG_WIDTH = 340  # pixels: the config in three wrapped lines (WRAPPED_ROW_HEIGHT)
# Streamlit wraps a cell's text only in rows taller than 4rem (64 px); 72 px holds three lines.
WRAPPED_ROW_HEIGHT = 72


def shown_columns(frame: pd.DataFrame, optional: Sequence[str] = OPTIONAL_COLUMNS) -> list[str]:
    """`frame`'s columns less those in `optional` that are empty in every row (a dataframe's
    `column_order`: the frame itself keeps them)."""
    def empty(column: str) -> bool:
        return frame[column].map(lambda v: _missing(v) or v == "").all()

    return [c for c in frame.columns if c not in optional or not empty(c)]


def filter_runs(runs: Sequence[Run], query: str = "", tags: Sequence[str] = ()) -> list[Run]:
    """Runs whose id, name, tags or notes contain every word of `query` (any case), and that carry
    every tag in `tags`."""
    words = query.lower().split()
    out = []
    for r in runs:
        text = " ".join([r.run_id, r.name, r.notes, *r.tags]).lower()
        if all(w in text for w in words) and set(tags) <= set(r.tags):
            out.append(r)
    return out

