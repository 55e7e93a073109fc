"""A run's evolving evaluation: the sample's confusion matrix at a chosen epoch, per-class accuracy
over epochs, and the classes that improved most or are stuck. Reads evolution.json, parsed once
per file version (size and modification time)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import plotly.graph_objects as go
import streamlit as st

from cifar_core.charts import insight as charts_insight
from cifar_core.insight import evolution
from cifar_core import runs

from . import fmt


@st.cache_data(max_entries=16, show_spinner=False)
def _read(folder: str, size: int, mtime_ns: int) -> evolution.Evolution:
    return evolution.read_evolution(Path(folder))


def _stamp(folder: Path) -> Optional[tuple[int, int]]:
    try:
        st_ = (folder / evolution.EVOLUTION_FILE).stat()
    except OSError:
        return None
    return st_.st_size, st_.st_mtime_ns


def load_evolution(run_dir_or_run: Union[runs.Run, Path, str]) -> evolution.Evolution:
    """The run's recorded series; an empty one (with a note) when there is none or it is damaged."""
    folder = run_dir_or_run.path if isinstance(run_dir_or_run, runs.Run) else Path(run_dir_or_run)
    stamp = _stamp(folder)
    if stamp is None:
        return evolution.read_evolution(folder)  # missing: nothing to parse, the note says so
    return _read(str(folder), *stamp)


# The figures, built once per version of the file for every tab (a live run's watchers all redraw
# at the same epoch's end).
@st.cache_resource(max_entries=32, show_spinner=False)
def _confusion(folder: str, stamp: Optional[tuple[int, int]], epoch: int, _evo: evolution.Evolution) -> go.Figure:
    return charts_insight.epoch_confusion(_evo.at(epoch), epoch, _evo.sample_size)


@st.cache_resource(max_entries=16, show_spinner=False)
def _class_lines(folder: str, stamp: Optional[tuple[int, int]], marked: tuple[str, ...],
                 _evo: evolution.Evolution) -> go.Figure:
    return charts_insight.class_accuracy_lines(list(_evo.epochs), _evo.per_class_accuracy, highlight=list(marked))


def _chosen_epoch(epochs: list[int], key: str) -> int:
    """An epoch slider that follows the newest epoch while it is left there (a live run), and
    stays where the user put it otherwise."""
    latest_key = f"{key}-latest"
    if key in st.session_state:
        current = st.session_state[key]
        if current not in epochs or current == st.session_state.get(latest_key):
            st.session_state[key] = epochs[-1]
    st.session_state[latest_key] = epochs[-1]
    default = {} if key in st.session_state else {"value": epochs[-1]}
    return st.select_slider("Confusion matrix at epoch", options=epochs, key=key, **default,
                            help="Each epoch's confusion matrix on the same sampled test images.")


def _progress_lines(rows: list[dict], stuck: bool) -> str:
    if stuck:
        return "\n".join(f"- **{r['class']}**: {fmt.pct(r['last'])} "
                         f"({(r['recent_gain']) * 100:+.0f} points over the last {r['recent_epochs']} epoch(s))"
                         for r in rows)
    return "\n".join(f"- **{r['class']}**: {fmt.pct(r['first'])} → {fmt.pct(r['last'])} "
                     f"({r['gain'] * 100:+.0f} points)" for r in rows)


def render_evolution(run_dir_or_run: Union[runs.Run, Path, str], *, key: str) -> None:
    """The evolving evaluation of a run (a Run, or its folder): an epoch slider over the sample's
    confusion matrices, per-class accuracy lines, and the most improved and stuck classes.
    `key` must be unique on the page (it keys the slider and the charts)."""
    folder = run_dir_or_run.path if isinstance(run_dir_or_run, runs.Run) else Path(run_dir_or_run)
    stamp = _stamp(folder)
    evo = load_evolution(folder)
    if not evo.epochs:
        st.caption(evo.note or "No epoch recorded yet: the first appears when epoch 1 ends.")
        return
    epochs = list(evo.epochs)
    progress = evolution.class_progress(evo)
    marked = [r["class"] for r in progress["improved"] + progress["stuck"]]
    # Full width, one above the other: in half a column a 10x10 matrix lost every other class name
    # and its counts were too small to read (issue 26).
    epoch = _chosen_epoch(epochs, key) if len(epochs) > 1 else epochs[0]
    st.plotly_chart(_confusion(str(folder), stamp, epoch, evo), key=f"{key}-confusion")
    st.plotly_chart(_class_lines(str(folder), stamp, tuple(marked), evo), key=f"{key}-classes")
    improved, stuck = st.columns(2)
    with improved:
        st.markdown("**Improved most**")
        st.markdown(_progress_lines(progress["improved"], stuck=False) if progress["improved"] else
                    "Needs two recorded epochs." if len(epochs) < 2 else "No class improved.")
    with stuck:
        st.markdown("**Stuck**")
        st.markdown(_progress_lines(progress["stuck"], stuck=True) if progress["stuck"] else
                    "Needs two recorded epochs." if len(epochs) < 2 else
                    f"No class below {evolution.STUCK_BELOW:.0%} has stalled.")
    per_class = evo.sample_size / 10
    cost = evolution.cost_summary(evo)
    spent = (f" Cost: {cost['seconds']:.2f} s per epoch" + (f", {cost['share']:.1%} of the epoch's time."
             if cost["share"] is not None else ".")) if cost["seconds"] is not None else ""
    st.caption(f"Recorded at each epoch's end on a fixed sample of {evo.sample_size:,} of the run's "
               f"{evo.test_images:,} test images, stratified by class"
               + (f" (seed {evo.seed})" if evo.seed is not None else "")
               + "; an epoch whose validation already predicted every test image reuses it." + spent
               + f" With about {per_class:.0f} images per class, a change of up to ±{100 / math.sqrt(max(per_class, 1)):.0f}"
                 f" points can be chance. Stuck: at most {evolution.STUCK_GAIN * 100:.0f} points better over the "
                 f"last {evolution.RECENT_EPOCHS} epochs and below {evolution.STUCK_BELOW:.0%}."
               + (f" {evo.note}" if evo.note else ""))
