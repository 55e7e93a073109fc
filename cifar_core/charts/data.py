"""Figures of the data itself: images per class in each split."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from cifar_core.charts import CHART_HEIGHT, TRAIN_COLOR, VAL_COLOR
from cifar_core.data.labels import CLASS_NAMES


def class_counts(train: Sequence[int], test: Sequence[int]) -> go.Figure:
    """Grouped bars: how many training and test images each class has."""
    fig = go.Figure([go.Bar(name="train", x=list(CLASS_NAMES), y=list(train), marker_color=TRAIN_COLOR),
                     go.Bar(name="test", x=list(CLASS_NAMES), y=list(test), marker_color=VAL_COLOR)])
    fig.update_layout(title="Images per class", barmode="group", height=CHART_HEIGHT,
                      margin=dict(l=10, r=10, t=50, b=10), yaxis_title="images",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig
