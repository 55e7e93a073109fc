"""The runs training now that the Train and Home pages show: this server's job, or any run training under the
artifacts folder in another process (the CLI, a second server, a cluster's chief). Both look the
same; only Stop differs (a thread event here, a request file through the run folder there).

While a run trains, the Train page's panel is drawn by the browser from cifar_ui/browser_feed.py's
files; the figures below serve a finished run and the fallback where the browser cannot fetch
them, built once per published version of the curves and shared by every tab."""
from __future__ import annotations

import dataclasses
from typing import Optional

import plotly.graph_objects as go
import streamlit as st

from cifar_core import charts, runs, training
from cifar_core.training import publisher as live
from cifar_core.training.state import JobSnapshot

from . import widgets


@dataclasses.dataclass(frozen=True)
class Target:
    """One run being watched: this process's job (`job` set) or a run folder."""

    run_id: str
    job: Optional[training.TrainingJob] = None

    @property
    def owned(self) -> bool:
        return self.job is not None

    def view(self) -> Optional[JobSnapshot]:
        if self.job is not None:
            return self.job.state.view()
        try:
            return live.read(runs.load_run(self.run_id))
        except runs.RunError:  # deleted meanwhile, or the artifacts folder changed
            return None

    def is_active(self) -> bool:
        if self.job is not None:
            return self.job.is_alive or self.job.state.view().is_active
        snap = self.view()
        return snap is not None and snap.is_active

    def stop(self) -> str:
        """Ask the run to stop after its current batch; what happened, for people."""
        if self.job is not None:
            return "Stopping after the current batch." if training.stop_job() else "Nothing to stop."
        live.request_stop(runs.run_path(self.run_id))
        return (f"Asked run {self.run_id} to stop through its folder; its trainer checks every "
                f"{live.PUBLISH_SECONDS:.0f} s, then saves what it learned.")


def targets(remembered: Optional[str] = None) -> list[Target]:
    """This server's job first (running or last finished), then runs training elsewhere, newest
    first, then `remembered` (a run this tab watched, so its end result stays on screen)."""
    job = widgets.visible_job()
    elsewhere = live.active_runs(exclude=(job.run_id,) if job is not None and job.is_alive else ())
    # This server's ended job gives way to another process now resuming its run: that is the run now.
    found = [Target(job.run_id, job)] if job is not None and job.run_id not in {r.run_id for r in elsewhere} else []
    found += [Target(r.run_id) for r in elsewhere]
    if remembered and remembered not in {t.run_id for t in found}:
        try:
            if runs.run_path(remembered).is_dir():
                found.append(Target(remembered))
        except runs.RunError:
            pass
    return found


def default_target(found: list[Target]) -> Optional[Target]:
    """An active run before a finished one; this server's job before others."""
    active = [t for t in found if t.is_active()]
    return (active or found or [None])[0]


def active_count() -> int:
    """Runs training now, here or elsewhere: a page polling for new ones compares this."""
    return len([t for t in targets() if t.is_active()])


@st.cache_resource(max_entries=24, show_spinner=False)
def _batch_figure(run_id: str, version: int, points: int, smoothing: float, _snap: JobSnapshot) -> go.Figure:
    return charts.batch_curves(_snap.batch_steps, _snap.batch_loss, _snap.batch_accuracy, smoothing=smoothing)


@st.cache_resource(max_entries=24, show_spinner=False)
def _epoch_figure(run_id: str, version: int, epochs: int, metric: str, x_axis: str, _snap: JobSnapshot) -> go.Figure:
    return charts.epoch_curves(_snap.history, metric, x=x_axis)


def batch_figure(snap: JobSnapshot, smoothing: float) -> go.Figure:
    """The per-batch chart of this version of the curves, built once for every tab and session."""
    return _batch_figure(snap.run_id, snap.version, len(snap.batch_steps), round(smoothing, 2), snap)


def epoch_figure(snap: JobSnapshot, metric: str, x_axis: str) -> go.Figure:
    return _epoch_figure(snap.run_id, snap.version, len(snap.history.get("loss", [])), metric, x_axis, snap)
