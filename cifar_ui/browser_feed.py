"""The live panel's data as small static files that every tab polls: watching a run costs the
server no script run per tab per refresh.

Streamlit answers each refresh a tab asks for by rerunning the page script (or a fragment): about
27 ms of the server's CPU each, nearly all Streamlit's own machinery, so ten Train tabs
refreshing once a second took 10% of training's speed (BENCHMARKS.md §8). Instead one thread in
the server writes each watched run's progress every second, and its charts once per published
version of the curves (one file per chart setting in use), under `static/live/`, which Streamlit
serves as plain files (`server.enableStaticServing`). The Train page's panel
(`cifar_ui/progress_panel.py`) fetches them from the browser; the page itself reruns only when an
epoch ends or the run does. A run is fed while some open browser session has shown it: once every
such tab has closed, the thread stops drawing for it, so an unwatched run trains at full speed.

Streamlit serves a file by its length first (a stat), then its bytes (an open), so a file swapped
underneath in between went out with the wrong length (h11: "Too little data for declared
Content-Length", a traceback in the server's log, a tab's poll lost). Nothing served is ever
swapped for one of another length: a chart setting's figures are written once per content, to a
file named by its hash, that the progress doc names and that is removed FIGURES_KEEP_SECONDS
after a newer one replaced it; the progress doc itself, the one name a tab polls, is always
PROGRESS_BYTES long (padded with spaces, which JSON ignores).

The files hold what any viewer of the page may see (progress and curves, never a model or a
path), under a folder named by a hash of the artifacts folder, so two servers on one checkout
with different artifacts never mix their runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional

from cifar_core import charts, paths
from cifar_core.files import replace_atomically
from cifar_core.training.state import JobSnapshot

from .widgets import progress_text  # the same line the page-drawn progress bar shows


FEED_SECONDS = 1.0  # how often the progress files are rewritten while a run is watched
# The charts are redrawn when the trainer publishes new curves (every 2 s), at most this often:
# drawing three Plotly figures costs ~50 ms of the server's CPU, once for every tab.
FIGURES_SECONDS = 4.0
GRACE_SECONDS = 30.0  # an ended run's final files are kept fresh this long, then left as they are
# A run whose every watching browser session has closed stops being fed after this long (a tab
# that reconnects within it, or any later page that shows the run, carries on or starts it again):
# an unwatched run then trains without the feed's cost.
UNWATCHED_SECONDS = 5.0
KEEP_SECONDS = 3600.0  # files nobody has written for this long are removed when a feed starts
FIGURES_KEEP_SECONDS = 30.0  # a replaced figures file stays this long for a tab that read the old progress doc
PROGRESS_BYTES = 4096  # every progress doc's length: one swapped in between a stat and a read still fits
MAX_VARIANTS = 6  # chart settings (smoothing, x axis) drawn per run; the oldest is dropped
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"  # Streamlit serves it at app/static/
FEED_DIR = STATIC_DIR / "live"
URL_PREFIX = "app/static/live"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a run folder's name: a file name, never a path
PATH_SHOWN = "<path>"  # what the public files show in place of a path
_PATH_CHAR = r"[^\s'\"`<>|,;()\[\]{}]"  # a path runs until a space, a quote or a bracket ...
_PATH_GOES_ON = rf"(?: {_PATH_CHAR}*[/\\]{_PATH_CHAR}*)*"  # ... unless the word after the space has a / in it
_PATHS = re.compile(
    rf"(?:(?<![\w.~/\\-])/(?!/)(?={_PATH_CHAR})"  # POSIX absolute (not a URL's //, not 1/3 or and/or)
    rf"|(?<![\w.~/\\-])~[\w.-]*/"  # under a home folder
    rf"|(?<![\w\\])[A-Za-z]:[\\/]"  # Windows drive
    rf"|\\\\(?=\w))"  # Windows share
    rf"{_PATH_CHAR}*{_PATH_GOES_ON}")


def current_session() -> Optional[str]:
    """The browser session whose script run this is; None outside a served page (AppTest, a
    script, a test calling the feed directly)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.session_id if ctx is not None and Runtime.exists() else None


def session_alive(session_id: str) -> bool:
    """Whether a browser session is still connected (Runtime.is_active_session is thread-safe)."""
    from streamlit.runtime import Runtime

    return Runtime.exists() and Runtime.instance().is_active_session(session_id)


def scope() -> str:
    """The artifacts folder's short hash: the feed folder of this server's runs."""
    return hashlib.sha1(str(paths.artifacts_dir()).encode()).hexdigest()[:12]


def scrub_paths(text: str) -> str:
    """`text` with every file system path in it replaced by PATH_SHOWN. The feed's files are public
    (docs/security.md) and a failure's message often names one (the data folder, a run folder, a
    full disk's). Folders that may hold spaces are replaced whole first: the artifacts folder, the
    home and temporary folders, this checkout."""
    def shown(match: re.Match) -> str:  # a sentence's full stop or colon after a path stays
        found = match.group()
        return PATH_SHOWN + found[len(found.rstrip(".:")):]

    roots = {str(paths.artifacts_dir()), str(Path.home()), tempfile.gettempdir(), str(STATIC_DIR.parent)}
    for root in sorted((r for r in roots if len(r) > 1 and os.path.isabs(r)), key=len, reverse=True):
        text = re.sub(re.escape(root) + _PATH_CHAR + "*" + _PATH_GOES_ON, shown, text)
    return _PATHS.sub(shown, text)


def variant_key(smoothing: float, x_axis: str) -> str:
    if x_axis not in charts.X_AXES:
        raise ValueError(f"x_axis must be one of {charts.X_AXES}, got {x_axis!r}")
    return f"s{round(smoothing * 100):02d}-{x_axis}"


def progress_doc(snap: Optional[JobSnapshot], run_id: str, charts_version: int = -1,
                 figures: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """What the panel shows above the charts, as JSON: a few hundred bytes. `charts_version` is
    the curves' version in the figures files, `figures` each chart setting's current file name (in
    the progress doc's folder): a tab fetches its setting's when the name changes.
    Every progress file is made here, so here its text loses any path (scrub_paths)."""
    if snap is None:
        doc = {"run_id": run_id, "status": "gone", "active": False, "fed_at": time.time(),
               "message": "The run is gone (deleted, or the artifacts folder changed).", "version": -1}
    else:
        doc = {"run_id": snap.run_id, "status": snap.status, "message": snap.message, "active": snap.is_active,
               "progress": round(snap.progress, 4), "text": progress_text(snap), "version": snap.version,
               "epochs_done": len(snap.history.get("loss", [])), "charts": charts_version, "fed_at": time.time()}
    doc = {k: scrub_paths(v) if isinstance(v, str) else v for k, v in doc.items()}
    doc["figures"] = dict(figures or {})  # names made here from a run id and a hash: no path
    return doc


def progress_file_text(doc: dict[str, Any]) -> str:
    """The progress doc as exactly PROGRESS_BYTES of JSON (spaces after it; a message too long to
    fit is cut), so every version of the file has the same length."""
    doc = dict(doc)
    text = json.dumps(doc)
    while len(text) > PROGRESS_BYTES and doc.get("message"):
        doc["message"] = doc["message"][:max(0, len(doc["message"]) - (len(text) - PROGRESS_BYTES) - 2)] + "…"
        text = json.dumps(doc)
    if len(text) > PROGRESS_BYTES:
        raise ValueError(f"a progress doc of {len(text)} bytes does not fit in {PROGRESS_BYTES}")
    return text.ljust(PROGRESS_BYTES)


def figures_name(run_id: str, key: str, text: str) -> str:
    """A figures file's name: the run, the chart setting and its content's hash (written once)."""
    return f"{run_id}.{key}.{hashlib.sha1(text.encode()).hexdigest()[:16]}.json"


_EPOCH_CHARTS: "OrderedDict[tuple, str]" = OrderedDict()  # (metric, x axis, history's hash) -> the chart's JSON
_EPOCH_CHARTS_LOCK = threading.Lock()
EPOCH_CHARTS_KEPT = 16  # two charts per run and setting


def epoch_chart_json(history: dict, metric: str, x_axis: str) -> str:
    """An epoch chart's JSON, drawn once per history: between two epochs only the batch curves
    move, and building a figure (~8 ms) is most of a charts file's cost."""
    key = (metric, x_axis, hashlib.sha1(json.dumps(history, sort_keys=True, default=str).encode()).hexdigest())
    with _EPOCH_CHARTS_LOCK:
        found = _EPOCH_CHARTS.get(key)
    if found is None:
        found = charts.epoch_curves(history, metric, x=x_axis).to_json(validate=False)
        with _EPOCH_CHARTS_LOCK:
            _EPOCH_CHARTS[key] = found
            while len(_EPOCH_CHARTS) > EPOCH_CHARTS_KEPT:
                _EPOCH_CHARTS.popitem(last=False)
    return found


def figures_json(snap: JobSnapshot, smoothing: float, x_axis: str) -> str:
    """The three live charts as one JSON object, drawn by the same functions as everywhere else."""
    batch = charts.batch_curves(snap.batch_steps, snap.batch_loss, snap.batch_accuracy, smoothing=smoothing)
    body = ",".join(f'"{name}":{text}' for name, text in (
        ("batch", batch.to_json(validate=False)),
        ("loss", epoch_chart_json(snap.history, "loss", x_axis)),
        ("accuracy", epoch_chart_json(snap.history, "accuracy", x_axis))))
    return f'{{"version":{int(snap.version)},{body}}}'


def _write(path: Path, text: str) -> None:
    """Temporary file and rename, so a tab never reads half a file. No fsync: the files are
    rewritten every second and worthless after a crash."""
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclasses.dataclass(frozen=True)
class Links:
    """Where a tab polls a run, and the progress it shows before its first poll (the charts it
    fetches at once: 67 KB that every rerun of every tab would otherwise carry)."""

    progress_url: str
    figures_url: Optional[str]  # None: progress only (the Home page)
    progress: dict[str, Any]


@dataclasses.dataclass
class _Watched:
    run_id: str
    view: Callable[[], Optional[JobSnapshot]]
    folder: Path
    variants: "OrderedDict[str, tuple[float, str]]" = dataclasses.field(default_factory=OrderedDict)
    drawn: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)  # variant -> (version, status)
    drawn_at: float = 0.0  # when the charts were last drawn by the thread
    charts_version: int = -1  # the version of the curves in every variant's file
    charts_epochs: int = 0  # the epochs in those curves: a new one is drawn at once
    figures: dict[str, str] = dataclasses.field(default_factory=dict)  # variant -> its current file's name
    ended_at: Optional[float] = None
    sessions: set = dataclasses.field(default_factory=set)  # the browser sessions that showed it
    anonymous: bool = False  # watched from outside a served page: fed until it ends
    unwatched_at: Optional[float] = None  # when its last session was found closed


class Feed:
    """The one thread per server that keeps the watched runs' files fresh. It runs while some run
    is watched and stops on its own when none is."""

    def __init__(self, root: Path = FEED_DIR, period: float = FEED_SECONDS,
                 alive: Callable[[str], bool] = session_alive):
        self.root = root
        self.period = period
        self._alive = alive
        self._lock = threading.Lock()
        self._watched: dict[tuple[str, str], _Watched] = {}
        self._thread: Optional[threading.Thread] = None
        self.failures = 0  # writes that failed (a full or read-only disk): tabs then see the feed stall
        self._retired: list[tuple[float, Path]] = []  # (when replaced, figures file) removed after a grace

    def serve(self, run_id: str, view: Callable[[], Optional[JobSnapshot]], smoothing: Optional[float] = None,
              x_axis: str = "epoch") -> Links:
        """Keep `run_id`'s files fresh from `view` until it has ended, with its charts drawn for
        this smoothing and x axis too (progress only when `smoothing` is None); returns the URLs
        (relative to the app) and the progress to show first. The charts file is there on return."""
        if not _SAFE_ID.fullmatch(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        key = None if smoothing is None else variant_key(smoothing, x_axis)
        folder = self.root / scope()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:  # the panel's fetches then fail and the page falls back to refreshing itself
            self.failures += 1
        snap = view()
        session = current_session()
        with self._lock:
            w = self._watched.get((folder.name, run_id))
            if w is None or w.ended_at is not None:
                w = self._watched[(folder.name, run_id)] = _Watched(run_id, view, folder)
            if session is None:
                w.anonymous = True
            else:
                w.sessions.add(session)
            w.unwatched_at = None
            if key is not None:
                w.variants[key] = (smoothing, x_axis)
                w.variants.move_to_end(key)
                while len(w.variants) > MAX_VARIANTS:
                    dropped = w.variants.popitem(last=False)[0]
                    w.drawn.pop(dropped, None)
                    if dropped in w.figures:
                        self._retired.append((time.monotonic(), folder / w.figures.pop(dropped)))
            # Drawn here the first time a setting is asked for (or when its file was swept); after
            # that the thread keeps it fresh, so ten tabs rerunning at an epoch's end do not each
            # redraw it. Claimed before the thread starts, so it does not draw the same version too.
            current = None if key is None else w.figures.get(key)
            draw = key is not None and snap is not None and (
                key not in w.drawn or current is None or not (folder / current).is_file())
            if draw:
                w.drawn[key] = (snap.version, snap.status)
            self._start_locked()
        if draw:
            current = self._draw(w, key, figures_json(snap, smoothing, x_axis))
        with self._lock:
            progress = progress_doc(snap, run_id, w.charts_version, w.figures)
        self._put(folder / f"{run_id}.json", progress_file_text(progress))
        base = f"{URL_PREFIX}/{folder.name}"
        return Links(f"{base}/{run_id}.json", None if current is None else f"{base}/{current}", progress)

    def serving(self) -> list[str]:
        with self._lock:
            return sorted(w.run_id for w in self._watched.values())

    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="cifar-live-feed", daemon=True)
            self._thread.start()
            threading.Thread(target=self._sweep, name="cifar-live-sweep", daemon=True).start()

    def _draw(self, w: _Watched, key: str, text: str) -> str:
        """Write a chart setting's figures to their own file, unless already there (a file is never
        rewritten), name it the setting's current one, and retire the one it replaces."""
        name = figures_name(w.run_id, key, text)
        if not (w.folder / name).is_file():
            self._put(w.folder / name, text)
        with self._lock:
            old = w.figures.get(key)
            w.figures[key] = name
            if old is not None and old != name:
                self._retired.append((time.monotonic(), w.folder / old))
        return name

    def _remove_retired(self) -> None:
        """Remove figures files replaced over FIGURES_KEEP_SECONDS ago (none a run names now)."""
        cutoff = time.monotonic() - FIGURES_KEEP_SECONDS
        with self._lock:
            due = [path for when, path in self._retired if when < cutoff]
            self._retired = [(when, path) for when, path in self._retired if when >= cutoff]
            named = {w.folder / name for w in self._watched.values() for name in w.figures.values()}
        for path in due:
            if path not in named:
                path.unlink(missing_ok=True)

    def _put(self, path: Path, text: str) -> None:
        try:
            _write(path, text)
        except OSError:
            self.failures += 1

    def _loop(self) -> None:
        while True:
            with self._lock:
                watched = list(self._watched.items())
            for key, w in watched:
                if self._unwatched(w):
                    with self._lock:
                        if self._watched.get(key) is w:
                            del self._watched[key]
                    continue
                try:
                    self._refresh(w)
                except Exception:  # noqa: BLE001 - one broken run must not stop the others' feed
                    self.failures += 1
                    w.ended_at = w.ended_at or time.time()
                if w.ended_at is not None and time.time() - w.ended_at > GRACE_SECONDS:
                    with self._lock:
                        if self._watched.get(key) is w:
                            del self._watched[key]
            self._remove_retired()
            with self._lock:
                if not self._watched:
                    self._thread = None
                    return
            time.sleep(self.period)

    def _unwatched(self, w: _Watched) -> bool:
        """True once every session that showed the run has been closed for UNWATCHED_SECONDS."""
        with self._lock:
            if w.anonymous:
                return False
            w.sessions = {s for s in w.sessions if self._alive(s)}
            if w.sessions:
                w.unwatched_at = None
                return False
            w.unwatched_at = w.unwatched_at or time.monotonic()
            return time.monotonic() - w.unwatched_at >= UNWATCHED_SECONDS

    def _refresh(self, w: _Watched) -> None:
        snap = w.view()
        if snap is None or not snap.is_active:
            w.ended_at = w.ended_at or time.time()
        # An ended run's final curves and a finished epoch are drawn at once (the epoch chart's news,
        # once per epoch); a running one's batch curves at most every FIGURES_SECONDS.
        epochs = 0 if snap is None else len(snap.history.get("loss", []))
        if snap is not None and (not snap.is_active or epochs > w.charts_epochs
                                 or time.monotonic() - w.drawn_at >= FIGURES_SECONDS):
            with self._lock:
                todo = [(k, v) for k, v in w.variants.items() if w.drawn.get(k) != (snap.version, snap.status)]
            for key, (smoothing, x_axis) in todo:
                self._draw(w, key, figures_json(snap, smoothing, x_axis))
                w.drawn[key] = (snap.version, snap.status)
            if todo:
                w.drawn_at = time.monotonic()
            # every variant now holds this version (drawn here, or by a tab's rerun in watch())
            w.charts_version, w.charts_epochs = snap.version, epochs
        # After the charts: a tab that reads a newer `charts` finds the figures files already there.
        with self._lock:
            progress = progress_doc(snap, w.run_id, w.charts_version, w.figures)
        self._put(w.folder / f"{w.run_id}.json", progress_file_text(progress))

    def _sweep(self) -> None:
        """Remove files nobody has written for KEEP_SECONDS (runs watched by earlier servers)."""
        cutoff = time.time() - KEEP_SECONDS
        for path in self.root.glob("*/*.json"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                pass


_FEED: Optional[Feed] = None
_FEED_LOCK = threading.Lock()


def feed() -> Feed:
    """This server's feed (one per process, shared by every session and tab)."""
    global _FEED
    with _FEED_LOCK:
        if _FEED is None:
            _FEED = Feed()
        return _FEED
