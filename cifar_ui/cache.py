"""Cached loading for the pages: a run's model (per run and model file), its test images, its
test-set predictions, and the explanation of an upload. Nothing here is the model being trained."""
from __future__ import annotations

import html
from typing import Any

import numpy as np
import streamlit as st

from cifar_core.insight import evaluation, predict, report
from cifar_core import runs
from cifar_core.data import DataError, Dataset
from cifar_core.insight.evaluation import TestPredictions

from . import access, fmt

# What loading a run's model, data or predictions can raise; pages show these as st.error.
LOAD_ERRORS = (runs.RunError, DataError, OSError)


class NotComputedForViewers(runs.RunError):
    """A viewer asked for test-set predictions nobody has computed yet: predicting the test set is
    work only those who may act start (cifar_ui/access.py)."""


def model_stamp(run: runs.Run) -> str:
    """runs.current_model_stamp, for pages: changes whenever the run's model file is replaced (a
    new checkpoint, a resumed run); no model yet is a RunError the page shows."""
    stamp = runs.current_model_stamp(run.path)
    if stamp is None:
        raise runs.RunError(f"run {run.run_id} has no saved model yet")
    return stamp


def _usable(run: runs.Run) -> None:
    if run.broken:
        raise runs.RunError(f"run {run.run_id} is broken ({run.broken}); its model is not loaded")
    if run.config is None:
        raise runs.RunError(f"run {run.run_id} has no readable config.json")


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _model(run_id: str, stamp: str) -> tuple[Any, str]:
    """The model, and the stamp of the file it came from (`stamp` unless the trainer replaced it
    meanwhile). Keras safe_mode: a model file cannot run code."""
    return runs.load_model_stamped(run_id)


def model_for(run: runs.Run) -> Any:
    """The run's saved model, loaded once per run and model file."""
    _usable(run)
    return _model(run.run_id, model_stamp(run))[0]


# Cached functions take the Run the page already read as an unhashed `_run` argument: the key is
# (id, model stamp, config), and nothing below reads the run folder's JSON again.

@st.cache_resource(max_entries=4, show_spinner="Loading the test images…")
def _test_data(run_id: str, config_json: str, _run: runs.Run) -> Dataset:
    return evaluation.run_test_data(_run)


def test_data_for(run: runs.Run) -> Dataset:
    """The exact test images the run was validated on (shared, read-only)."""
    _usable(run)
    return _test_data(run.run_id, run.config.to_json(), run)


@st.cache_data(max_entries=8, show_spinner="Predicting the test set (once per model)…")
def _predictions(run_id: str, stamp: str, config_json: str, may_act: bool, _run: runs.Run) -> TestPredictions:
    cached = evaluation.load_cached_predictions(_run)
    if cached is not None:  # the usual case: training cached them; no model, no TensorFlow
        return cached
    if not may_act:  # raised, so not cached: the next visit finds them once someone made them
        raise NotComputedForViewers(f"the test-set predictions of run {run_id} are not computed yet; "
                                    "viewers see them once someone who may act has opened this run")
    model, loaded_stamp = _model(run_id, stamp)
    return evaluation.test_predictions(_run, model=model, data=_test_data(run_id, config_json, _run),
                                       model_stamp=loaded_stamp)


def predictions_for(run: runs.Run) -> tuple[TestPredictions, Dataset]:
    """The run's test-set predictions and the images they belong to: predicted (and kept in the run
    folder) once per model file for a session that may act; a viewer (cifar_ui/access.py) only
    reads what is kept, else gets NotComputedForViewers, a RunError the pages show."""
    _usable(run)
    preds = _predictions(run.run_id, model_stamp(run), run.config.to_json(), access.can_act(), run)
    data = test_data_for(run)
    if not np.array_equal(preds.labels, data.y_test):
        raise runs.RunError(f"the cached predictions of run {run.run_id} do not match its test set "
                            f"(was the data source changed?); delete predictions.npz in the run folder")
    return preds, data


PREVIEW_PIXELS = 512  # the original is kept only this large: a 40 MP upload would be ~120 MB


@st.cache_data(max_entries=32, show_spinner="Classifying…")
def _explain(run_id: str, stamp: str, upload_id: str, name: str, _data: bytes) -> dict[str, Any]:
    # keyed on the upload's id: hashing every upload's bytes on every rerun cost more than the page
    original, small = predict.prepare_image(_data, name)  # ImageError for a bad upload
    original.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS))
    model = _model(run_id, stamp)[0]
    probabilities = predict.predict_proba(model, small)[0]
    heat = predict.occlusion_map(model, small)
    return {"original": original, "small": small, "probabilities": probabilities, "heat": heat}


def explain_upload(run: runs.Run, upload: Any) -> dict[str, Any]:
    """An upload's full picture, the 32x32 input, class probabilities and occlusion heatmap.
    `upload` is Streamlit's UploadedFile: its `file_id` is new for every file uploaded.

    Raises:
      predict.ImageError: the upload is not a usable image (the message says why).
    """
    _usable(run)
    return _explain(run.run_id, model_stamp(run), upload.file_id, upload.name, upload.getvalue())


def report_html(run: runs.Run) -> bytes:
    """The run's self-contained HTML report (cifar_core/insight/report.py), made from the same
    predictions the pages show (so a viewer's download writes nothing into the run folder).
    A report that cannot be made is a one-line page saying why. A viewer's copy shows no server
    internals (access.sees_internals): paths inside the artifacts or data folder, no host."""
    redact = None if access.sees_internals() else fmt.public_text
    try:
        preds, _ = predictions_for(run)
        text = report.build_report(run.run_id, preds=preds, redact=redact)
    except (report.ReportError, *LOAD_ERRORS) as exc:
        why = html.escape((redact or str)(str(exc)), quote=True)
        text = (f"<!DOCTYPE html><meta charset='utf-8'><p>No report for run {html.escape(run.run_id)}: "
                f"{why}</p>")
    return text.encode("utf-8")
