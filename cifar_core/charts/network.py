"""Plotly figure of a network's geometry: how much of the image each convolution and pooling
layer sees. Pure function of plain data; no Streamlit, no model."""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from cifar_core.charts import BAR_COLOR, CHART_HEIGHT, HIGHLIGHT_COLOR

RECEPTIVE_FIELD_TITLE = "Receptive field per layer"


def receptive_field_bars(layers: Sequence[str], sides: Sequence[int], jumps: Sequence[int],
                         image_side: int) -> go.Figure:
    """One bar per layer: the side, in input pixels, of the patch one output position sees, with
    the image's own side as a line (a bar past it sees the whole image and padding)."""
    # Horizontal bars, first layer on top: the names stay readable in a narrow column.
    fig = go.Figure(go.Bar(
        y=list(layers), x=list(sides), orientation="h", customdata=list(jumps), name="receptive field",
        marker_color=[HIGHLIGHT_COLOR if s >= image_side else BAR_COLOR for s in sides],
        hovertemplate="%{y}: %{x} px<br>jump %{customdata} px<extra></extra>"))
    fig.add_vline(x=image_side, line_dash="dash", line_color="gray",
                  annotation_text=f"the image: {image_side} px", annotation_position="top")
    fig.update_layout(title=RECEPTIVE_FIELD_TITLE, height=max(CHART_HEIGHT, 90 + 24 * len(sides)),
                      margin=dict(l=10, r=10, t=50, b=10), showlegend=False)
    fig.update_xaxes(title_text="pixels on a side", rangemode="tozero")
    fig.update_yaxes(autorange="reversed")
    return fig
