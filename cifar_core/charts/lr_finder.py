"""The learning-rate range test's figure: loss against a logarithmic learning rate, the suggestion marked.

A pure function of plain data (the curve's lists and the rates to mark); no Streamlit, no model.
"""
from __future__ import annotations

from typing import Optional, Sequence

import plotly.graph_objects as go

from cifar_core.charts import CHART_HEIGHT, HIGHLIGHT_COLOR, TRAIN_COLOR, _clean, _no_data

LR_FINDER_TITLE = "Loss against learning rate (range test)"
OTHER_RULE_COLOR = "#7f7f7f"


def lr_finder_curve(learning_rates: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                    suggestion: Optional[float] = None, rule: str = "",
                    others: Sequence[tuple[str, Optional[float]]] = ()) -> go.Figure:
    """Each step's loss (faint) and its smoothed loss against the rate on a log axis; a dashed line
    at `suggestion` named with `rule`, and dotted lines at the `others` (label, rate) left unchosen."""
    fig = go.Figure()
    fig.update_layout(title=LR_FINDER_TITLE, height=CHART_HEIGHT, margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                      hovermode="x unified")
    if not learning_rates:
        return _no_data(fig, "No steps were taken")
    lrs = list(map(float, learning_rates))
    fig.add_trace(go.Scatter(x=lrs, y=_clean(losses), name="loss per step", mode="lines",
                             line=dict(color=TRAIN_COLOR, width=1), opacity=0.35,
                             hovertemplate="%{y:.4f}<extra>loss</extra>"))
    fig.add_trace(go.Scatter(x=lrs, y=_clean(smoothed), name="smoothed loss", mode="lines",
                             line=dict(color=TRAIN_COLOR, width=2.5),
                             hovertemplate="%{y:.4f}<extra>smoothed</extra>"))
    # The marks are traces, not shapes: Plotly places a shape's annotation on a log axis by log10(x).
    values = [v for v in _clean(losses) + _clean(smoothed) if v is not None] or [0.0]
    first = next((v for v in _clean(smoothed) if v is not None), values[0])
    bottom = min(values)
    # As much room above the first loss as it fell: a divergence leaves through the top instead of
    # squashing the curve (its last loss may be thousands of times the first)
    top = min(max(values), first + max(first - bottom, 0.05 * abs(first)))
    span = max(top - bottom, 1e-9)
    marks = [(f"{label} {rate:.2g}", rate, OTHER_RULE_COLOR, "dot") for label, rate in others if rate is not None]
    if suggestion is not None:
        marks.append((f"suggested {suggestion:.2g}" + (f" ({rule})" if rule else ""), suggestion, HIGHLIGHT_COLOR, "dash"))
    for name, rate, color, dash in marks:
        fig.add_trace(go.Scatter(x=[rate, rate], y=[bottom, top], name=name,
                                 mode="lines", line=dict(color=color, dash=dash, width=2), hoverinfo="skip"))
    fig.update_xaxes(type="log", title_text="learning rate (log scale)", exponentformat="power")
    fig.update_yaxes(title_text="training loss", range=[bottom - 0.05 * span, top + 0.05 * span])
    return fig
