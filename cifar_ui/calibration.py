"""Calibration on the pages: Evaluate's reliability diagram, ECE and temperature, and Predict's
confidence verdict in calibrated probability."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import streamlit as st

from cifar_core.insight import calibration, predict
from cifar_core.charts import insight as charts_insight
from cifar_core import runs
from cifar_core.insight.evaluation import TestPredictions
from cifar_core.data.labels import CLASS_NAMES

from . import access, fmt


def calibration_for(run: runs.Run, preds: Optional[TestPredictions] = None) -> Optional[dict[str, Any]]:
    """The run's stored calibration for its current model, computed once from its test-set
    predictions (`preds`, else the cached ones) and stored when this session may act
    (cifar_ui/access.py; a viewer's is computed, a few ms, and never written); None when there are
    none yet. Not cached in Streamlit: the core reads calibration.json through its parse cache."""
    try:
        return calibration.calibration_for(run, preds, store=access.can_act())
    except OSError:
        return None


def render_calibration(run: runs.Run, preds: TestPredictions) -> None:
    """ECE before and after temperature scaling, the temperature, where it was fitted, and the
    reliability diagram."""
    report = calibration_for(run, preds)
    if report is None:
        st.caption(f"Calibration needs at least {calibration.MIN_IMAGES} test images: half to fit a temperature, "
                   f"half to check it.")
        return
    rep, split, t = report["report"], report["split"], report["temperature"]
    cols = st.columns(4)
    cols[0].metric("ECE", fmt.pct(rep["ece_before"]), help="Expected calibration error of the model's own "
                   f"probabilities: the mean gap between confidence and accuracy over {report['num_bins']} "
                   "confidence bins, weighted by images. 0 is perfectly calibrated.")
    cols[1].metric("ECE with temperature", fmt.pct(rep["ece_after"]),
                   delta=f"{(rep['ece_after'] - rep['ece_before']) * 100:+.1f} points", delta_color="inverse")
    cols[2].metric("Temperature", f"{t:.2f}", help="Probabilities are rescaled as softmax(log p / T). "
                   "T > 1: the model was overconfident; T < 1: underconfident (label smoothing does that).")
    cols[3].metric("NLL with temperature", fmt.number(rep["nll_after"], 3),
                   delta=f"{rep['nll_after'] - rep['nll_before']:+.3f}", delta_color="inverse")
    st.plotly_chart(charts_insight.reliability_diagram(rep["bins_before"], rep["bins_after"], rep["ece_before"],
                                                       rep["ece_after"], t), key="calibration-reliability")
    st.caption(f"Temperature fitted on {split['fit_images']:,} test images, a class-stratified half of the run's "
               f"{split['test_images']:,} (seed {split['seed']}), by minimising their negative log-likelihood. "
               f"ECE, NLL and the diagram are measured on the other {split['report_images']:,} images, which the "
               f"fit never saw. Scaling keeps every predicted class. Predict shows the calibrated probability "
               f"(its \"unsure\" warning too).")


def shown_probabilities(probabilities: np.ndarray, report: Optional[dict[str, Any]]) -> np.ndarray:
    """The one probability per class that a picture's card shows everywhere (its sentence, its
    bars, its "why" panel): the calibrated one when the run has a temperature, else the model's own."""
    return calibration.calibrated(probabilities, report)


def probability_kind(report: Optional[dict[str, Any]]) -> str:
    """Which probability shown_probabilities gives, for a chart's title."""
    return "model's own probability" if report is None else "calibrated probability"


def verdict(probabilities: np.ndarray, report: Optional[dict[str, Any]]) -> tuple[bool, str]:
    """(unsure?, the sentence) for one picture: the top class is the model's own; its probability
    is the calibrated one when the run has a temperature, and the sentence says which it is."""
    shown = shown_probabilities(probabilities, report)
    top = int(np.argmax(probabilities))  # temperature scaling keeps the order of classes: the answer is unchanged
    name, p = CLASS_NAMES[top], float(shown[top])
    if report is None:
        how = "the model's own probability; this run has no calibration yet (open Evaluate)"
    else:
        how = f"calibrated with temperature {report['temperature']:.2f}"
    low = predict.is_low_confidence(shown)
    if low:
        return True, (f"The model is unsure: its best guess, {name}, has only {fmt.pct(p)} ({how}). "
                      f"The picture may show none of the ten classes.")
    return False, f"**{name}** ({fmt.pct(p)}, {how})"
