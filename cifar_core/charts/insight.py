"""Plotly figures for the insight views: the confusion matrix of one recorded epoch, per-class
accuracy over epochs, and the reliability diagram before and after temperature scaling.

Pure functions of plain data; no Streamlit, no model.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from cifar_core.charts import (
    CHART_HEIGHT, RUN_COLORS, TRAIN_COLOR, VAL_COLOR, _clean, _no_data, confusion_heatmap, integer_epoch_axis,
)
from cifar_core.data.labels import CLASS_NAMES

CLASS_ACCURACY_TITLE = "Per-class accuracy over epochs"
RELIABILITY_TITLE = "Reliability diagram"


def epoch_confusion(cm: np.ndarray, epoch: int, sample_size: int) -> go.Figure:
    """The sample's confusion matrix at `epoch`, titled with both."""
    return confusion_heatmap(cm, title=f"Confusion matrix at epoch {epoch} ({sample_size:,} sampled test images)")


def class_accuracy_lines(epochs: Sequence[int], accuracy: np.ndarray, highlight: Sequence[str] = (),
                         class_names: Sequence[str] = CLASS_NAMES) -> go.Figure:
    """One line per class: its share of sampled images classified correctly at each epoch.
    Classes in `highlight` are drawn thicker; the others stay visible but lighter."""
    acc = np.asarray(accuracy, np.float64).reshape(len(epochs), len(class_names)) if len(epochs) else None
    fig = go.Figure()
    for k, name in enumerate(class_names):
        if acc is None:
            break
        strong = not highlight or name in highlight
        fig.add_trace(go.Scatter(
            x=list(epochs), y=_clean(acc[:, k]), name=name, mode="lines+markers",
            line=dict(color=RUN_COLORS[k % len(RUN_COLORS)], width=3 if strong and highlight else 2),
            opacity=1.0 if strong else 0.35, hovertemplate=f"{name}<br>epoch %{{x}}: %{{y:.1%}}<extra></extra>",
        ))
    fig.update_layout(title=CLASS_ACCURACY_TITLE, height=CHART_HEIGHT + 60, margin=dict(l=10, r=10, t=50, b=10),
                      hovermode="closest", uirevision="class-accuracy",
                      legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0.0))
    fig.update_xaxes(title_text="Epoch")
    integer_epoch_axis(fig, max(epochs, default=1))
    fig.update_yaxes(title_text="accuracy on the sample", tickformat=".0%", range=[0, 1.02])
    if not fig.data:
        return _no_data(fig, "No epoch recorded yet")
    return fig


def _bars(bins: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[Optional[float]], list[int], list[float]]:
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    return centres, [b["accuracy"] for b in bins], [int(b["count"]) for b in bins], \
        [b["upper"] - b["lower"] for b in bins]


def reliability_diagram(bins_before: Sequence[Mapping[str, Any]], bins_after: Optional[Sequence[Mapping[str, Any]]] = None,
                        ece_before: Optional[float] = None, ece_after: Optional[float] = None,
                        temperature: Optional[float] = None) -> go.Figure:
    """Accuracy per confidence bin (bars) against the diagonal a calibrated model would follow;
    with `bins_after`, the temperature-scaled model's bins beside them. Bins come from
    calibration.reliability_bins."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                             line=dict(color="gray", dash="dash"), hoverinfo="skip"))
    series = [("model", bins_before, ece_before, TRAIN_COLOR)]
    if bins_after is not None:
        label = f"scaled by T = {temperature:.2f}" if temperature is not None else "temperature-scaled"
        series.append((label, bins_after, ece_after, VAL_COLOR))
    for i, (name, bins, ece, colour) in enumerate(series):
        centres, accuracy, counts, widths = _bars(bins)
        if not any(counts):
            continue
        fig.add_trace(go.Bar(
            x=centres, y=accuracy, width=[w / len(series) * 0.9 for w in widths],
            offset=[-w / 2 + i * w / len(series) for w in widths], marker_color=colour,
            name=name + (f" (ECE {ece:.1%})" if ece is not None else ""), customdata=counts,
            hovertemplate="confidence %{x:.2f}<br>accuracy %{y:.1%}<br>%{customdata} images<extra>" + name + "</extra>",
        ))
    fig.update_layout(title=RELIABILITY_TITLE, height=CHART_HEIGHT + 40, margin=dict(l=10, r=10, t=50, b=10),
                      barmode="overlay", hovermode="closest",
                      legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0))
    fig.update_xaxes(title_text="confidence (top-class probability)", range=[0, 1], tickformat=".0%")
    fig.update_yaxes(title_text="accuracy", range=[0, 1], tickformat=".0%")
    if len(fig.data) == 1:
        return _no_data(fig, "No images to bin")
    return fig
