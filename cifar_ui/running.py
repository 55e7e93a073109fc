"""The runs the Train and Home pages show: those training now under the artifacts folder, each in
a job process of its own (started from a page, the CLI, a queue or sweep worker, a second server or
a cluster's chief), and the latest run once none trains. Every one is watched the same way,
through its run folder; Stop asks through that folder too.

While a run trains, the Train page's panel is drawn by the browser from cifar_ui/browser_feed.py's
files; the figures below serve a finished run and the fallback where the browser cannot fetch
them, built once per published version of the curves and shared by every tab."""
from __future__ import annotations

import dataclasses
from typing import Optional

import plotly.graph_objects as go
import streamlit as st

from cifar_core import charts, runs
from cifar_core.training import publisher as live
from cifar_core.training.state import JobSnapshot


@dataclasses.dataclass(frozen=True)
class Target:
    """One run being watched, through its folder."""

    run_id: str

    def view(self) -> Optional[JobSnapshot]:
        try:
            return live.read(runs.load_run(self.run_id))
        except runs.RunError:  # deleted meanwhile, or the artifacts folder changed
            return None

    def is_active(self) -> bool:
        snap = self.view()
        return snap is not None and snap.is_active

    def stop(self) -> str:
        """Ask the run to stop after its current batch; what happened, for people."""
        live.request_stop(runs.run_path(self.run_id))
        return (f"Asked run {self.run_id} to stop; its trainer sees the request within "
                f"{live.STOP_POLL_SECONDS:g} s, then saves what it learned.")


def targets(remembered: Optional[str] = None) -> list[Target]:
    """Runs training now, newest first; else the latest run (the last job's result stays on
    screen); then `remembered` (a run this tab watched)."""
    active = live.active_runs()
    found = [Target(r.run_id) for r in active]
    if not found:
        latest = next((r for r in runs.list_runs() if not r.broken), None)
        found = [Target(latest.run_id)] if latest is not None else []
    if remembered and remembered not in {t.run_id for t in found}:
        try:
            if runs.run_path(remembered).is_dir():
                found.append(Target(remembered))
        except runs.RunError:
            pass
    return found


def default_target(found: list[Target]) -> Optional[Target]:
    """An active run before a finished one."""
    active = [t for t in found if t.is_active()]
    return (active or found or [None])[0]


def active_count() -> int:
    """Runs training now: a page polling for new ones compares this."""
    return len(live.active_runs())


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
