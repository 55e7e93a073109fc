""""The network" on the pages: a recipe's network (Train) or a run's saved model (Runs) as a table
of layers with output shapes, parameters, FLOPs and receptive fields, the totals, and the layers
that act only in training. The expander runs its content only when opened: a closed one imports
no TensorFlow and builds or loads no model."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from cifar_core import runs
from cifar_core.charts.network import receptive_field_bars
from cifar_core.config import TrainConfig
from cifar_core.models.summary import NetworkSummary, summarize

from . import cache

LABEL = "The network"
ICON = ":material/account_tree:"
COLUMNS = ("layer", "type", "output shape", "window", "parameters", "FLOPs", "receptive field", "jump",
           "training only")


@st.cache_resource(max_entries=8, show_spinner="Building the network…")
def _recipe_summary(config_json: str, _config: TrainConfig) -> NetworkSummary:
    from cifar_core.models import build_network

    # Uncompiled, and without data: a whitening layer keeps its random kernel, its shape is the same.
    return summarize(build_network(_config))


@st.cache_resource(max_entries=8, show_spinner=False)
def _run_summary(run_id: str, stamp: str, _model: Any) -> NetworkSummary:
    return summarize(_model)


def recipe_config(base: TrainConfig, recipe: dict) -> TrainConfig:
    """`base` with the form's recipe fields on top, or `base` where they do not make a config."""
    try:
        return base.replace(**recipe)
    except ValueError:
        return base


def recipe_section(config: TrainConfig, key: str = "cifar_train_network") -> None:
    """The expander for the network a recipe builds (Train)."""
    box = st.expander(LABEL, icon=ICON, key=key, on_change="rerun")
    with box:
        if not box.open:
            return
        st.caption("The network this recipe trains, as the form was last submitted.")
        render(_recipe_summary(config.to_json(), config), key=key)


def run_section(run: runs.Run, key: str = "runs_network") -> None:
    """The expander for a run's saved model (Runs), loaded in Keras safe_mode."""
    box = st.expander(LABEL, icon=ICON, key=key, on_change="rerun")
    with box:
        if not box.open:
            return
        try:
            model = cache.model_for(run)
            stamp = cache.model_stamp(run)
        except cache.LOAD_ERRORS as exc:
            st.info(str(exc), icon=":material/info:")
            return
        st.caption(f"The saved model of run `{run.run_id}`.")
        render(_run_summary(run.run_id, stamp, model), key=key)


def render(summary: NetworkSummary, key: str) -> None:
    """Totals, the table of layers, which layers act only in training, the receptive fields."""
    # Text, not st.metric: on Train this sits in the form's narrow column, where metrics are cut short.
    totals = summary.totals()
    st.markdown(f"**{totals['parameters']:,} parameters** ({totals['trainable']:,} trainable, "
                f"{totals['non-trainable']:,} non-trainable) · **{totals['FLOPs'] / 1e6:,.1f} M FLOPs** per image",
                help=f"Non-trainable: BatchNorm's moving statistics, a fixed whitening kernel. FLOPs: "
                     f"{totals['FLOPs']:,}, 2 x the multiply-adds of the convolutions and dense layers in one "
                     "forward pass (element-wise layers, pooling and normalisation left out).")
    st.dataframe(pd.DataFrame(summary.records()), hide_index=True, column_order=COLUMNS, key=f"{key}_table",
                 column_config={
                     "parameters": st.column_config.NumberColumn(format="localized"),
                     "FLOPs": st.column_config.NumberColumn(format="compact"),
                     "receptive field": st.column_config.Column(
                         help="Side, in input pixels, of the patch one output position sees"),
                     "jump": st.column_config.Column(
                         help="Input pixels between neighbouring output positions (the product of the strides)"),
                     "training only": st.column_config.CheckboxColumn(
                         help="Active only in training; passes its input through unchanged at inference"),
                 })
    if summary.training_only:
        st.caption(f"Training only ({len(summary.training_only)}): {', '.join(summary.training_only)}. "
                   "Augmentation and dropout act while the network trains and pass their input through "
                   "unchanged when it predicts.")
    else:
        st.caption("No layer acts only in training: no augmentation or dropout.")
    windows = [r for r in summary.convolutions() if r.receptive_field]
    if windows:
        side = summary.input_shape[0]
        convs = [r for r in windows if not r.kind.endswith("Pooling2D")] or windows
        st.caption(f"Receptive field: the side of the input patch one output position sees; rf = rf before + "
                   f"(kernel - 1) x dilation x jump before, and the jump (input pixels between neighbouring "
                   f"positions) multiplies by the stride. The last convolution, {convs[-1].name}, sees "
                   f"{max(convs[-1].receptive_field)} pixels of the {side}-pixel image.")
        st.plotly_chart(receptive_field_bars([r.name for r in windows], [max(r.receptive_field) for r in windows],
                                             [max(r.jump) for r in windows], side), key=f"{key}_rf")
