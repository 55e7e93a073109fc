"""Calibration (issue 11): ECE and reliability bins, the temperature fit and what scaling keeps,
the held-out split, calibration.json per model file, and the Evaluate and Predict pages."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from cifar_core.insight import calibration, evaluation
from cifar_core import runs
from cifar_core.data import make_synthetic
from cifar_core.data.labels import CLASS_NAMES, NUM_CLASSES

from test_pages import chart_titles, open_page, png_bytes, raised, texts


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_fixture(n: int = 40_000, scale: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits, and labels drawn from their own softmax: calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, NUM_CLASSES)) * scale
    p = _softmax(z)
    labels = (rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1)
    return z, np.minimum(labels, NUM_CLASSES - 1)


def _exactly_calibrated(num_bins: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """20 images at each confidence c = 0.15, 0.20 .. 0.95, exactly c * 20 of them right."""
    probs, labels = [], []
    for c in np.linspace(0.15, 0.95, 17):
        for i in range(20):
            p = np.full(NUM_CLASSES, (1 - c) / (NUM_CLASSES - 1))
            p[3] = c
            probs.append(p)
            labels.append(3 if i < round(c * 20) else 5)
    return np.array(probs), np.array(labels)


# --- the maths ---------------------------------------------------------------------------

def test_a_perfectly_calibrated_fixture_has_an_ece_of_about_zero():
    probs, labels = _exactly_calibrated()
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    z, drawn = _calibrated_fixture()
    assert calibration.expected_calibration_error(_softmax(z), drawn) < 0.01  # sampling noise only
    overconfident = _softmax(3 * z)
    assert calibration.expected_calibration_error(overconfident, drawn) > 0.15


def test_reliability_bins_count_every_image_once():
    z, labels = _calibrated_fixture(5000)
    bins = calibration.reliability_bins(_softmax(z), labels)
    assert len(bins) == calibration.NUM_BINS and sum(b["count"] for b in bins) == 5000
    for b in bins:
        if b["count"]:
            assert b["lower"] <= b["confidence"] <= b["upper"] and 0 <= b["accuracy"] <= 1
    certain = np.eye(NUM_CLASSES)[[0, 1]]  # confidence exactly 1.0 lands in the last bin
    assert calibration.reliability_bins(certain, np.array([0, 2]))[-1]["count"] == 2


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 1.7, 10.0])
def test_temperature_scaling_keeps_the_predicted_class(temperature):
    rng = np.random.default_rng(3)
    probs = _softmax(rng.normal(size=(2000, NUM_CLASSES)) * 4).astype(np.float32)
    scaled = calibration.apply_temperature(probs, temperature)
    assert np.array_equal(scaled.argmax(axis=1), probs.argmax(axis=1))
    assert np.allclose(scaled.sum(axis=1), 1.0)
    if temperature > 1:
        assert (scaled.max(axis=1) <= probs.max(axis=1) + 1e-6).all()  # softer
    with pytest.raises(ValueError, match="positive"):
        calibration.apply_temperature(probs, 0.0)


def test_the_fit_recovers_the_temperature_and_lowers_the_held_out_error():
    z, labels = _calibrated_fixture()
    assert calibration.fit_temperature(_softmax(z), labels) == pytest.approx(1.0, abs=0.05)
    over, under = _softmax(2.0 * z), _softmax(0.5 * z)
    assert calibration.fit_temperature(over, labels) == pytest.approx(2.0, rel=0.05)
    assert calibration.fit_temperature(under, labels) == pytest.approx(0.5, rel=0.05)
    report = calibration.calibrate(evaluation.TestPredictions(over.astype(np.float32), labels), seed=7)
    rep = report["report"]
    assert report["temperature"] == pytest.approx(2.0, rel=0.05)
    assert rep["ece_after"] < 0.02 < 0.1 < rep["ece_before"] and rep["nll_after"] < rep["nll_before"]
    assert report["split"]["fit_images"] + report["split"]["report_images"] == len(labels)


def test_the_split_is_stratified_disjoint_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(NUM_CLASSES), 21)
    fit, report = calibration.split_halves(labels, seed=1)
    assert not set(fit) & set(report) and sorted([*fit, *report]) == list(range(len(labels)))
    assert np.bincount(labels[fit]).tolist() == [10] * NUM_CLASSES
    assert np.bincount(labels[report]).tolist() == [11] * NUM_CLASSES
    again, _ = calibration.split_halves(labels, seed=1)
    other, _ = calibration.split_halves(labels, seed=2)
    assert np.array_equal(fit, again) and not np.array_equal(fit, other)


# --- stored with the run -----------------------------------------------------------------

def test_the_calibration_is_stored_once_per_model_file(with_run, artifacts):
    run = runs.load_run(with_run)
    path = run.path / calibration.CALIBRATION_FILE
    assert not path.exists()
    first = calibration.calibration_for(run)  # from the predictions the trainer cached
    assert first is not None and path.is_file()
    stored = json.loads(path.read_text())
    assert stored["model_stamp"] == runs.current_model_stamp(run.path) and stored["temperature"] > 0
    assert stored["split"]["fit_images"] + stored["split"]["report_images"] == run.metrics["num_test_images"]
    written = path.stat().st_mtime_ns
    assert calibration.calibration_for(run) == first and path.stat().st_mtime_ns == written  # read, not refit

    path.write_text("{ damaged")
    assert calibration.calibration_for(run)["temperature"] == pytest.approx(first["temperature"])
    model = run.path / "model.keras"
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # another model file: the old fit is stale
    assert calibration.read_calibration(run.path, runs.current_model_stamp(run.path)) is None
    assert calibration.calibration_for(run) is None  # its predictions are stale too: nothing to fit on
    preds = evaluation.test_predictions(run)  # predicted again (and cached) for the new file
    again = calibration.calibration_for(run, preds)
    assert again["model_stamp"] == runs.current_model_stamp(run.path)


def test_a_calibration_is_filed_under_the_model_its_predictions_came_from(with_run):
    """A page still holding an earlier model's predictions when the next model file lands (the
    trainer's next checkpoint) must not file a fit of them under the new file's stamp."""
    run = runs.load_run(with_run)
    old = evaluation.load_cached_predictions(run)  # the trainer's, of the model file it saved
    model, _ = runs.load_model_stamped(run.run_id)
    weights = model.get_weights()
    weights[-2] = weights[-2] * 3.0  # the last layer's kernel: a sharper, differently calibrated model
    model.set_weights(weights)
    runs.save_model(model, run.path / "model.keras")
    run = runs.load_run(with_run)
    new_stamp = runs.current_model_stamp(run.path)

    assert calibration.calibration_for(run, old) is None  # stale, and nothing of the new file to fit on yet
    assert calibration.read_calibration(run.path, new_stamp) is None  # nothing filed under the new model
    assert old.model_stamp != new_stamp
    fresh = evaluation.test_predictions(run)  # the new file's, predicted and cached
    assert fresh.model_stamp == new_stamp
    report = calibration.calibration_for(run, fresh)
    assert report["model_stamp"] == new_stamp
    assert report["temperature"] == pytest.approx(calibration.calibrate(fresh, run.config.seed)["temperature"])
    assert report["temperature"] != pytest.approx(calibration.calibrate(old, run.config.seed)["temperature"])
    assert calibration.read_calibration(run.path, new_stamp) == report


# --- pages -------------------------------------------------------------------------------

def test_evaluate_shows_the_reliability_diagram_ece_and_temperature(with_run):
    at = open_page("pages/evaluate.py")
    assert not at.error, texts(at.error)
    assert "Calibration" in [h.value for h in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    assert re.fullmatch(r"\d{1,3}\.\d%", metrics["ECE"]) and re.fullmatch(r"\d{1,3}\.\d%", metrics["ECE with temperature"])
    assert float(metrics["Temperature"]) > 0
    assert "Reliability diagram" in chart_titles(at)
    found = [re.search(r"Temperature fitted on (\d+) test images.*of the run's 200 .*the other (\d+) images", c.value)
             for c in at.caption]
    fit, report = next(m.groups() for m in found if m)
    assert int(fit) + int(report) == 200 and abs(int(fit) - int(report)) <= NUM_CLASSES  # halves per class


def _verdict_text(at) -> str:
    shown = [e.value for e in (*at.success, *at.warning)]
    assert len(shown) == 1, shown
    return shown[0]


def test_predict_uses_the_calibrated_probability_and_says_so(with_run, artifacts):
    folder = artifacts / "runs" / with_run
    fitted = calibration.calibration_for(runs.load_run(with_run))  # the run's calibration.json ...
    runs.write_json(folder / calibration.CALIBRATION_FILE, {**fitted, "temperature": 3.0})  # ... far from 1
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([("good.png", png_bytes(make_synthetic(10, 10, seed=3).x_test[0]), "image/png")])
    at.run()
    assert not at.exception, raised(at)
    text = _verdict_text(at)
    assert "calibrated with temperature 3.00" in text
    named = [n for n in CLASS_NAMES if re.search(rf"\b{n}\b", text)]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    bars = chart["data"][0]
    assert named == [bars["y"][0]]  # the same answer as the model's raw top class ...
    assert re.findall(r"\d+\.\d%", text) == [bars["text"][0]]  # ... with one probability on the card
    assert chart["layout"]["title"]["text"] == "Top 3 (calibrated probability)"  # which one the bars show


def test_predict_says_when_a_run_has_no_calibration(with_run, artifacts):
    folder = artifacts / "runs" / with_run
    (folder / evaluation.PREDICTIONS_FILE).unlink()  # nothing to fit a temperature on
    at = open_page("pages/predict.py")
    at.file_uploader[0].set_value([("good.png", png_bytes(make_synthetic(10, 10, seed=3).x_test[0]), "image/png")])
    at.run()
    assert not at.exception, raised(at)
    assert "no calibration yet" in _verdict_text(at)
    assert not (folder / calibration.CALIBRATION_FILE).exists()


def test_the_verdict_warns_on_the_calibrated_probability_but_keeps_the_class():
    from cifar_ui.calibration import verdict

    probs = np.full(NUM_CLASSES, 0.4 / 9)
    probs[4] = 0.6  # sure by the model's own probability ...
    unsure, text = verdict(probs, None)
    assert not unsure and "**deer** (60.0%" in text
    unsure, text = verdict(probs, {"temperature": 3.0})  # ... unsure once an overconfident model is calibrated
    assert unsure and "its best guess, deer," in text and "calibrated with temperature 3.00" in text
