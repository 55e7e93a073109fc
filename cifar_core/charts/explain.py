"""Plotly figures that lead from a chart to images: the confusion matrix as a grid of clickable
squares, each carrying its (true, predicted) class pair. Pure functions of arrays, no Streamlit."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from cifar_core.charts import confusion_shares
from cifar_core.data.labels import CLASS_NAMES

GRID_HEIGHT = 600  # pixels; across a 1280 px page the square grid gets cells of about 50 px
MARKER_PIXELS = 40  # side of a square, less than a cell: where markers overlap, a click between
# two cells could pick either (Plotly ties on distance inside a marker)


def confusion_grid(cm: np.ndarray, class_names: Sequence[str] = CLASS_NAMES,
                   title: str = "Confusion matrix") -> go.Figure:
    """Rows are true classes, columns predicted; one square marker per cell, its colour the share of
    the true class (darker: more), its text the count. Each point's customdata is [true index,
    predicted index, count], so a click (Streamlit's on_select, which returns nothing for a
    go.Heatmap) names the pair."""
    n = len(class_names)
    counts, shares = confusion_shares(cm, n)
    true_idx, pred_idx = np.divmod(np.arange(n * n), n)
    names = list(class_names)
    fig = go.Figure(go.Scatter(
        x=[names[p] for p in pred_idx], y=[names[t] for t in true_idx], mode="markers+text",
        # no colour bar: it would take a fifth of the width from the cells; the hover says the share
        marker=dict(symbol="square", size=MARKER_PIXELS, color=shares.ravel(), colorscale="Blues", cmin=0, cmax=1,
                    line=dict(width=1, color="#d0d7de"), showscale=False),
        text=[str(c) for c in counts.ravel()],
        textfont=dict(size=13, color=["white" if s > 0.5 else "#262730" for s in shares.ravel()]),
        # plain lists: Plotly would ship an array as base64, which a selection event may not decode
        customdata=np.stack([true_idx, pred_idx, counts.ravel()], axis=1).tolist(),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{customdata[2]} images (%{marker.color:.1%} of true %{y})"
                      "<br>click to see them<extra></extra>",
        selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=1.0)),
    ))
    fig.update_layout(title=title, height=GRID_HEIGHT, margin=dict(l=10, r=10, t=40, b=10),
                      plot_bgcolor="white", clickmode="event+select", dragmode=False)
    ticks = dict(tickmode="array", tickvals=names, ticktext=names, tickfont=dict(size=13))  # every name, always
    fig.update_xaxes(title_text="Predicted class", side="bottom", tickangle=-35, showgrid=False,
                     categoryorder="array", categoryarray=names, constrain="domain", **ticks)
    fig.update_yaxes(title_text="True class", autorange="reversed", showgrid=False, categoryorder="array",
                     categoryarray=names, scaleanchor="x", scaleratio=1, constrain="domain", **ticks)
    return fig


def selected_pair(points: Sequence[dict]) -> Optional[tuple[int, int]]:
    """(true, predicted) class indices of the first clicked cell in Streamlit's selection, or None."""
    for point in points:
        data = point.get("customdata")
        if data is not None and len(data) >= 2:
            return int(data[0]), int(data[1])
    return None
