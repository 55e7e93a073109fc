"""Plotly figures for the dashboard: training curves, confusion heatmap and probability bars.

Pure functions of plain data (histories, arrays, (name, probability) pairs); no Streamlit, no model.

May import: config, files, paths, quiet, trainer_lock, data.
"""
from __future__ import annotations

import math
import textwrap
from typing import Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from cifar_core.data import CLASS_NAMES

METRIC_TITLES = {"loss": "Loss over Epochs", "accuracy": "Accuracy over Epochs"}
TIME_TITLES = {"loss": "Loss over training time", "accuracy": "Accuracy over training time"}
X_AXES = ("epoch", "minutes")  # curves against epochs, or against cumulative training minutes
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
HIGHLIGHT_COLOR = "#d62728"
BAR_COLOR = "#1f77b4"
# One colour per run in overlays; runs beyond this many reuse colours (line style still differs).
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
              "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
CHART_HEIGHT = 340  # pixels; two charts side by side fit a laptop screen
CONFUSION_HEIGHT = 600  # pixels: ten rows of cells tall enough for a count in a readable font
CELL_FONT_SIZE = 14  # a confusion matrix's counts
TICK_FONT_SIZE = 13  # class names on a confusion matrix's axes


def _clean(values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """NaN and None become gaps (None) so Plotly breaks the line instead of failing."""
    out = []
    for v in values:
        f = None if v is None else float(v)
        out.append(None if f is None or math.isnan(f) or math.isinf(f) else f)
    return out


def _style(fig: go.Figure, title: str, x_title: str, y_title: str, metric: str, revision: str) -> go.Figure:
    fig.update_layout(
        title=title, height=CHART_HEIGHT, margin=dict(l=10, r=10, t=50, b=10),
        # below the plot: above it, in half a 1280 px page, the legend ran into the title
        legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0),
        hovermode="x unified",
        uirevision=revision,  # keeps zoom and hidden traces when a live chart is redrawn
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    if metric == "accuracy":
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    return fig


def integer_epoch_axis(fig: go.Figure, epochs: int) -> go.Figure:
    """Whole-number ticks on the x axis of epochs (Plotly's own choice for a 2-epoch run is 1, 1.2,
    1.4...): from epoch 1, every epoch up to 10, then a step that keeps about ten ticks."""
    fig.update_xaxes(tickmode="linear", tick0=1, dtick=max(1, math.ceil(epochs / 10)), tickformat="d")
    return fig


NARROW_TITLE_CHARS = 24  # a title's line in a narrow column (Browse's inspector is ~170 px at 1280)


def narrow_title(title: str, chars: int = NARROW_TITLE_CHARS) -> tuple[str, int]:
    """`title` broken into lines of at most `chars` characters (Plotly never wraps a title: in a
    narrow column the rest was cut), and how many lines it took."""
    lines = textwrap.wrap(title, chars) or [""]
    return "<br>".join(lines), len(lines)


def _no_data(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color="gray"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _check(metric: str, x: str) -> None:
    if metric not in METRIC_TITLES:
        raise ValueError(f"metric must be one of {', '.join(METRIC_TITLES)}, got {metric!r}")
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")


def _x_values(history: Mapping[str, Sequence[float]], n: int, x: str) -> Optional[list[float]]:
    """Epoch numbers, or training minutes at each epoch's end (None if the run did not record them)."""
    if x == "epoch":
        return list(range(1, n + 1))
    seconds = list(history.get("train_seconds", []))
    if len(seconds) < n:
        return None
    return [round(float(s) / 60, 3) for s in seconds[:n]]


def epoch_curves(history: Mapping[str, Sequence[float]], metric: str = "loss", x: str = "epoch") -> go.Figure:
    """Training vs validation `metric` ('loss' or 'accuracy') per epoch, titled e.g. "Loss over Epochs";
    with x="minutes", against cumulative training minutes (validation excluded)."""
    _check(metric, x)
    fig = go.Figure()
    series = (("training", history.get(metric, []), TRAIN_COLOR),
              ("validation", history.get(f"val_{metric}", []), VAL_COLOR))
    for name, values, color in series:
        xs = _x_values(history, len(values), x)
        if len(values) and xs is not None:
            fig.add_trace(go.Scatter(
                x=xs, y=_clean(values), name=name, mode="lines+markers",
                line=dict(color=color), connectgaps=False,
            ))
    titles = METRIC_TITLES if x == "epoch" else TIME_TITLES
    _style(fig, titles[metric], "Epoch" if x == "epoch" else "Training minutes", metric, metric,
           revision=f"{metric}-{x}")
    if not fig.data:
        return _no_data(fig, "No completed epoch yet" if x == "epoch" or not history.get(metric)
                        else "This run did not record its training time")
    if x == "epoch":
        integer_epoch_axis(fig, max(len(trace.x) for trace in fig.data))
    else:
        fig.update_xaxes(rangemode="tozero")
    return fig


def overlay_curves(histories: Mapping[str, Mapping[str, Sequence[float]]], metric: str = "loss",
                   x: str = "epoch") -> go.Figure:
    """Several runs' `metric` per epoch (or per training minute) in one chart: one colour per
    run, validation solid, training dotted. Runs without recorded training time are left out of
    the minutes view."""
    _check(metric, x)
    fig = go.Figure()
    for i, (label, history) in enumerate(histories.items()):
        color = RUN_COLORS[i % len(RUN_COLORS)]
        for key, dash, suffix in ((f"val_{metric}", "solid", "validation"), (metric, "dot", "training")):
            values = history.get(key, [])
            xs = _x_values(history, len(values), x)
            if len(values) and xs is not None:
                fig.add_trace(go.Scatter(
                    x=xs, y=_clean(values), name=f"{label} · {suffix}",
                    mode="lines+markers", line=dict(color=color, dash=dash), legendgroup=label,
                ))
    titles = METRIC_TITLES if x == "epoch" else TIME_TITLES
    _style(fig, titles[metric], "Epoch" if x == "epoch" else "Training minutes", metric, metric,
           revision=f"overlay-{metric}-{x}")
    fig.update_layout(hovermode="closest", height=CHART_HEIGHT + 40 + 20 * len(histories),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0))
    if not fig.data:
        return _no_data(fig, "Choose runs with at least one completed epoch")
    if x == "epoch":
        integer_epoch_axis(fig, max(len(trace.x) for trace in fig.data))
    else:
        fig.update_xaxes(rangemode="tozero")
    return fig


DEFAULT_SMOOTHING = 0.6  # TensorBoard's default weight


def smooth(values: Sequence[float], weight: float = DEFAULT_SMOOTHING) -> list[Optional[float]]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are
    not pulled towards zero. NaN points are skipped (shown as gaps); weight 0 returns the values."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out: list[Optional[float]] = []
    last, count = 0.0, 0
    for v in values:
        v = float(v)
        if not math.isfinite(v):
            out.append(None)
            continue
        last = last * weight + (1 - weight) * v
        count += 1
        out.append(last / (1 - weight ** count))
    return out


def batch_curves(steps: Sequence[float], loss: Sequence[float], accuracy: Sequence[float],
                 smoothing: float = DEFAULT_SMOOTHING, title: str = "Loss and accuracy per batch") -> go.Figure:
    """Each batch's loss (left axis) and accuracy (right axis), one continuous series across
    epochs: the raw values faint, their TensorBoard-style smoothing (`smooth`) on top.

    `steps` are fractional epochs (1.5 = half-way through the second epoch). The series go to
    Plotly as float arrays (NaN: a gap) and the right axis is declared directly rather than through
    `make_subplots`: Plotly validates a list point by point, which made this chart, redrawn for a
    live run every few seconds, cost ~51 ms of CPU instead of ~24 (500 points)."""
    fig = go.Figure()
    if len(steps):
        x = np.asarray(steps, dtype=float)
        for name, values, colour, axis in (("loss", loss, TRAIN_COLOR, "y"), ("accuracy", accuracy, VAL_COLOR, "y2")):
            if smoothing > 0:
                fig.add_trace(go.Scatter(x=x, y=np.asarray(_clean(values), dtype=float), name=f"{name} (raw)",
                                         mode="lines", showlegend=False, line=dict(color=colour, width=1),
                                         opacity=0.25, hoverinfo="skip", yaxis=axis))
            fig.add_trace(go.Scatter(x=x, y=np.asarray(smooth(values, smoothing), dtype=float), name=name,
                                     mode="lines", line=dict(color=colour, width=2), yaxis=axis))
    fig.update_layout(
        title=title, height=CHART_HEIGHT, margin=dict(l=10, r=10, t=60, b=10), hovermode="x unified",
        legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="right", x=1.0), uirevision="batch",
        xaxis=dict(title_text="Epoch", rangemode="tozero"), yaxis=dict(title_text="loss"),
        yaxis2=dict(title_text="accuracy", tickformat=".0%", range=[0, 1], tickmode="linear", tick0=0, dtick=0.2,
                    showgrid=False, overlaying="y", side="right", automargin=True),
    )
    if not fig.data:
        return _no_data(fig, "Waiting for the first batch")
    return fig


def confusion_shares(cm: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A confusion matrix's counts, checked to be n x n, and each cell's share of its true class
    (its row), so classes with fewer test images are read on the same scale."""
    counts = np.asarray(cm, dtype=np.int64)
    if counts.shape != (n, n):
        raise ValueError(f"confusion matrix must be {n}x{n}, got shape {counts.shape}")
    totals = counts.sum(axis=1, keepdims=True)
    return counts, np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def confusion_heatmap(cm: np.ndarray, class_names: Sequence[str] = CLASS_NAMES,
                      title: str = "Confusion matrix") -> go.Figure:
    """Rows are true classes, columns predicted. Cells show counts; colour is the share of the
    row, so classes with fewer test images are read on the same scale."""
    counts, shares = confusion_shares(cm, len(class_names))
    names = list(class_names)
    fig = go.Figure(go.Heatmap(
        z=shares, x=names, y=names, text=counts, texttemplate="%{text}", textfont=dict(size=CELL_FONT_SIZE),
        colorscale="Blues", zmin=0, zmax=1, colorbar=dict(title="share of<br>true class", tickformat=".0%"),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text} images (%{z:.1%} of true %{y})<extra></extra>",
    ))
    fig.update_layout(title=title, height=CONFUSION_HEIGHT, margin=dict(l=10, r=10, t=50, b=10))
    # Every class named on both axes at any width: Plotly thins category ticks it finds crowded
    # (every other name at half a 1500 px page), so the ticks are listed rather than left to it.
    ticks = dict(tickmode="array", tickvals=names, ticktext=names, tickfont=dict(size=TICK_FONT_SIZE))
    fig.update_xaxes(title_text="Predicted class", side="bottom", tickangle=-35, **ticks)
    fig.update_yaxes(title_text="True class", autorange="reversed", **ticks)
    return fig


def top_k_bars(pairs: Sequence[tuple[str, float]], title: str = "Top classes") -> go.Figure:
    """Horizontal bars of (class name, probability), most probable on top."""
    names = [name for name, _ in pairs]
    probs = [float(p) for _, p in pairs]
    fig = go.Figure(go.Bar(
        x=probs, y=names, orientation="h", marker_color=BAR_COLOR,
        text=[f"{p:.1%}" for p in probs], textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
    ))
    fig.update_layout(title=title, height=max(180, 60 + 36 * len(pairs)), margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text="probability")
    fig.update_yaxes(autorange="reversed")
    return fig


def probability_bars(probabilities: Sequence[float], class_names: Sequence[str] = CLASS_NAMES,
                     true_label: Optional[int] = None, title: str = "Class probabilities") -> go.Figure:
    """Every class's probability in class order; the true class (if given) in red. The title is
    wrapped (`narrow_title`): Browse draws this chart in a narrow column."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape != (len(class_names),):
        raise ValueError(f"need {len(class_names)} probabilities, one per class, got shape {probs.shape}")
    colors = [HIGHLIGHT_COLOR if i == true_label else BAR_COLOR for i in range(len(class_names))]
    fig = go.Figure(go.Bar(
        x=probs, y=list(class_names), orientation="h", marker_color=colors,
        text=[f"{p:.1%}" for p in probs], textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>",
    ))
    text, lines = narrow_title(title)
    fig.update_layout(title=text, height=380 + 20 * (lines - 1), margin=dict(l=10, r=10, t=30 + 20 * lines, b=10))
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text="probability")
    fig.update_yaxes(autorange="reversed")
    return fig


def time_to_accuracy_bars(rows: Sequence[Mapping[str, object]], thresholds: Sequence[float]) -> go.Figure:
    """Grouped bars: minutes of training each run needed to first reach each validation accuracy.
    `rows` come from evaluation.time_to_accuracy_table; a run that never got there has no bar."""
    fig = go.Figure()
    for i, t in enumerate(thresholds):
        key = f"{t:.0%}"
        fig.add_trace(go.Bar(x=[str(r["run"]) for r in rows], y=[r.get(key) for r in rows], name=f"to {key}",
                             marker_color=RUN_COLORS[i % len(RUN_COLORS)]))
    fig.update_layout(title="Training minutes to reach a test accuracy", barmode="group", height=CHART_HEIGHT,
                      margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    fig.update_yaxes(title_text="minutes", rangemode="tozero")
    if not rows:
        return _no_data(fig, "Choose runs that recorded their training time")
    return fig


def best_so_far(minutes: Sequence[float], accuracy: Sequence[float], best: Sequence[float],
                metric: str = "test accuracy") -> go.Figure:
    """A sweep's trials and its best so far against the training minutes spent on all trials."""
    fig = go.Figure([go.Scatter(x=list(minutes), y=list(accuracy), mode="markers", name="trial"),
                     go.Scatter(x=list(minutes), y=list(best), mode="lines", line_shape="hv", name="best so far")])
    fig.update_layout(title=dict(text=f"Best {metric} against training minutes", x=0),
                      xaxis_title="training minutes, all trials so far", yaxis_title=metric, yaxis_tickformat=".0%")
    if not minutes:
        _no_data(fig, "no finished trial yet")
    return fig
