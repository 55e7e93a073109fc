"""Widgets every page repeats: the run picker, helpful empty states, job progress, images."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import streamlit as st
from PIL import Image

from cifar_core import runs
from cifar_core.training import JobSnapshot

from . import fmt, nav

RUN_STATE_KEY = "cifar_selected_run"  # the run chosen last, shared by every page of a session
TILE_PIXELS = 160  # 32x32 images are shown 5x larger, pixel for pixel


def empty_state(message: str) -> None:
    """Say what to do next, with a link to Train, instead of an error."""
    st.info(message, icon=":material/lightbulb:")
    st.page_link(nav.TRAIN.path, label="Go to Train", icon=nav.TRAIN.icon)


def model_runs(all_runs: Sequence[runs.Run]) -> list[runs.Run]:
    """Runs whose model can be loaded: readable, with a saved model or checkpoint."""
    return [r for r in all_runs if not r.broken and r.config is not None and r.model_path is not None]


def report_broken(all_runs: Sequence[runs.Run]) -> None:
    """Broken runs are never offered for loading, but the user should know they exist."""
    broken = [r for r in all_runs if r.broken]
    if broken:
        with st.expander(f"{len(broken)} run(s) could not be read and are not offered", icon=":material/warning:"):
            for r in broken:
                st.markdown(f"- `{r.run_id}`: {r.broken}")
            st.page_link(nav.RUNS.path, label="Manage runs", icon=nav.RUNS.icon)


def pick_run(candidates: Sequence[runs.Run], label: str = "Run", state_key: str = RUN_STATE_KEY) -> runs.Run:
    """A selectbox of runs (newest first) that remembers the last choice across pages."""
    ids = [r.run_id for r in candidates]
    labels = {r.run_id: fmt.run_label(r) for r in candidates}
    remembered = st.session_state.get(state_key)
    choice = st.selectbox(label, ids, index=ids.index(remembered) if remembered in ids else 0,
                          format_func=labels.get)
    st.session_state[state_key] = choice
    return candidates[ids.index(choice)]


def model_run_candidates(empty_message: str) -> tuple[list[runs.Run], list[runs.Run]]:
    """(all runs, runs with a loadable model); with none of the latter, the empty state is shown
    (`empty_message` says what to do next) and the page stops here."""
    all_runs = runs.list_runs()
    candidates = model_runs(all_runs)
    if not candidates:
        empty_state(empty_message)
        report_broken(all_runs)
        st.stop()
    return all_runs, candidates


def shown(text: Optional[str]) -> str:
    """Text from the server (a job's message, its owner, an error) as this session may see it:
    whole for the owner on the server's machine, without folders or the host name for anyone else."""
    from . import access

    return (text or "") if access.sees_internals() else fmt.public_text(text)


def load_error(what: str, exc: Exception) -> None:
    """A run that cannot be shown, in one line: "not computed yet" is news for a viewer (an info),
    anything else an error, without the server's folders for those who may not see them."""
    from . import cache

    if isinstance(exc, cache.NotComputedForViewers):
        st.info(shown(str(exc)), icon=":material/info:")
    else:
        st.error(f"{what}: {shown(str(exc))}", icon=":material/error:")


def machine_busy() -> Optional[str]:
    """Why Start would be refused now, in people's words: what holds the machine's trainer
    (a job, the probe, the learning-rate finder, here or in another process); None when free."""
    from cifar_core import trainer_lock

    record = trainer_lock.holder()
    return None if record is None else shown(trainer_lock.busy_reason(record))


def progress_text(snap: JobSnapshot) -> str:
    parts = [f"Epoch {snap.epoch}/{snap.epochs}"]
    if snap.batches_per_epoch:
        parts.append(f"batch {snap.batch}/{snap.batches_per_epoch}")
    if snap.images_per_second:
        parts.append(f"{snap.images_per_second:,.0f} images/s")
    if snap.eta_seconds is not None and snap.is_active:
        parts.append(f"ETA {fmt.duration(snap.eta_seconds)}")
    return " · ".join(parts)


def job_progress(snap: JobSnapshot) -> None:
    """Status line and progress bar of a job."""
    st.markdown(f"Run `{snap.run_id}` {fmt.status_badge(snap.status)} — {shown(snap.message)}")
    if snap.is_active:
        st.progress(snap.progress, text=progress_text(snap))


def upscale(image: np.ndarray | Image.Image, pixels: int = TILE_PIXELS) -> Image.Image:
    """A small image made big enough to see, each pixel a crisp square (NEAREST)."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    return im.resize((pixels, pixels), Image.Resampling.NEAREST)


def fit(image: Image.Image, pixels: int = 256) -> Image.Image:
    """A copy whose longer side is `pixels`, aspect kept: huge uploads shrink, tiny ones (a
    32x32 CIFAR image) grow with visible pixels instead of showing as a thumbnail."""
    scale = pixels / max(image.size)
    if scale >= 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.NEAREST)
    im = image.copy()
    im.thumbnail((pixels, pixels))
    return im


RESUMABLE = ("stopped", "interrupted", "completed")  # completed runs can be extended by more epochs


def resumable_runs(all_runs: Sequence[runs.Run]) -> list[runs.Run]:
    """Runs a job can continue: finished or cut short, readable, with a saved model."""
    return [r for r in model_runs(all_runs) if r.status in RESUMABLE]


# Files a user may download from a run folder: (label, file name, MIME type).
DOWNLOADABLE = (
    ("Model (.keras)", "model.keras", "application/zip"),
    ("Checkpoint (.keras)", "checkpoint.keras", "application/zip"),
    ("History (CSV)", "history.csv", "text/csv"),
    ("History (JSON)", "history.json", "application/json"),
)


def run_downloads(run: runs.Run) -> list[tuple[str, Path, str]]:
    """(label, path, MIME type) of the run's files that exist; the checkpoint only without a model."""
    found = [(label, run.path / name, mime) for label, name, mime in DOWNLOADABLE if (run.path / name).is_file()]
    if any(path.name == "model.keras" for _, path, _ in found):
        found = [f for f in found if f[1].name != "checkpoint.keras"]
    return found


SOURCES = ("keras", "synthetic")  # offered by name; a path is typed into the same box
SOURCE_KEY = "cifar_data_source"  # one session state key: choosing on Train carries to Data and back
SOURCE_REFUSED = "Viewers choose among this lab's own data sources; showing the lab's own."


def viewer_sources() -> list[str]:
    """The sources someone who may not act may pick: the lab's own ($CIFAR10_DATA, else keras) and
    the synthetic demo set. Never a typed path (the server would read or probe it) nor keras unless
    it is the lab's own (a 170 MB download)."""
    from cifar_core import data

    current = data.resolve_source()
    return [current] + [s for s in ("synthetic",) if s != current]


def data_source_picker() -> str:
    """The data source box Train and Data share: the named sources, the server's own, or a path
    typed in; for a viewer (cifar_ui/access.py) only `viewer_sources()`, checked here on the server
    (a forged or stale value becomes the lab's own, with one line that says nothing of the path)."""
    from cifar_core import data

    from . import access

    current = data.resolve_source()

    def label(source: str) -> str:
        if source != current or source in SOURCES or access.sees_internals():
            return source
        return f"this lab's data: {fmt.public_path(source)}"

    if access.can_act():
        sources = list(SOURCES) + ([current] if current not in SOURCES else [])
        return st.selectbox("Data source", sources, index=sources.index(current), accept_new_options=True,
                            key=SOURCE_KEY, format_func=label,
                            help="keras: the official download; synthetic: a demo set that trains in seconds; "
                                 "or type a path to a local copy of CIFAR-10 (the official batches, their "
                                 "archive, or an image folder).")
    allowed = viewer_sources()
    refused = st.session_state.get(SOURCE_KEY, current) not in allowed  # typed before this session locked
    if refused:
        del st.session_state[SOURCE_KEY]
    choice = st.selectbox("Data source", allowed, index=0, key=SOURCE_KEY, format_func=label,
                          help="The lab's own data, or synthetic: a demo set. Other sources are for those "
                               "who may act.")
    if choice not in allowed:  # a value the browser was never offered
        refused, choice = True, current
    if refused:
        st.caption(SOURCE_REFUSED)
    return choice
