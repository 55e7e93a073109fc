"""Calibration: expected calibration error, reliability bins, and a temperature fitted on one
stratified half of a run's test split and reported on the other, stored as calibration.json.

Computed from the cached test-set probabilities (no model, no TensorFlow), once per model file.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifar_core import runs
from cifar_core.insight.evaluation import TestPredictions, load_cached_predictions
from cifar_core.data.labels import NUM_CLASSES

CALIBRATION_FILE = "calibration.json"
FORMAT_VERSION = 1
NUM_BINS = 15  # equal-width confidence bins, the usual choice for ECE (Guo et al. 2017)
MIN_IMAGES = 20  # fewer test images than this: no split worth fitting on
SPLIT_SEED_OFFSET = 1009  # the split's seed is the run's seed plus this: not the test subset's own draw
_LOG_FLOOR = 1e-12  # probabilities are clipped here before the log (a float32 softmax can reach 0)
_BETA_RANGE = (1e-2, 1e2)  # inverse temperatures searched
_GOLDEN_STEPS = 60  # golden-section steps on log(beta): the bracket shrinks to ~1e-12 of its width


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS) -> list[dict[str, Any]]:
    """Per equal-width bin of top-class confidence: its bounds, image count, mean confidence and
    accuracy (None in an empty bin)."""
    p = np.asarray(probabilities, np.float64)
    confidence, correct = p.max(axis=1), p.argmax(axis=1) == np.asarray(labels).reshape(-1)
    which = np.minimum((confidence * num_bins).astype(np.int64), num_bins - 1)  # 1.0 goes to the last bin
    rows = []
    for b in range(num_bins):
        inside = which == b
        n = int(inside.sum())
        rows.append({"lower": b / num_bins, "upper": (b + 1) / num_bins, "count": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return rows


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, num_bins: int = NUM_BINS) -> float:
    """ECE: the image-weighted mean gap between accuracy and confidence over the bins (0: calibrated)."""
    bins = reliability_bins(probabilities, labels, num_bins)
    total = sum(b["count"] for b in bins)
    if not total:
        return float("nan")
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / total)


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T): the model's logits divided by T, since log(p) differs from the logits
    only by a constant per image. T > 1 softens, T < 1 sharpens; the order of classes is kept."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    z = np.log(np.clip(np.asarray(probabilities, np.float64), _LOG_FLOOR, 1.0)) / float(temperature)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean cross-entropy of the true class after temperature scaling."""
    q = apply_temperature(probabilities, temperature)
    return float(-np.log(np.clip(q[np.arange(len(q)), np.asarray(labels).reshape(-1)], _LOG_FLOOR, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of `labels`. The NLL is convex in
    beta = 1/T (log-sum-exp minus a linear term), so a golden-section search over log(beta) finds
    its one minimum; a T at the edge of [0.01, 100] means the probabilities carry no signal."""
    z = np.log(np.clip(np.asarray(probabilities, np.float64), _LOG_FLOOR, 1.0))
    true = z[np.arange(len(z)), np.asarray(labels).reshape(-1)]

    def nll(log_beta: float) -> float:
        s = z * math.exp(log_beta)
        top = s.max(axis=1)
        return float((top + np.log(np.exp(s - top[:, None]).sum(axis=1)) - true * math.exp(log_beta)).mean())

    lo, hi = math.log(_BETA_RANGE[0]), math.log(_BETA_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(_GOLDEN_STEPS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(1.0 / math.exp((lo + hi) / 2))


def split_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, report) sorted indices: each class's images shuffled by `seed` and halved (an odd
    one goes to report), so both halves keep the class mix and never share an image."""
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    fit, report = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fit.append(members[: len(members) // 2])
        report.append(members[len(members) // 2:])
    if not fit:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(report))


def calibrate(preds: TestPredictions, seed: int) -> dict[str, Any]:
    """Fit a temperature on one half of `preds` and report ECE and reliability bins before and after
    on the other half. Raises ValueError with fewer than MIN_IMAGES images."""
    if len(preds.labels) < MIN_IMAGES:
        raise ValueError(f"{len(preds.labels)} test images are too few to fit and check a temperature "
                         f"(at least {MIN_IMAGES})")
    split_seed = int(seed) + SPLIT_SEED_OFFSET
    fit_idx, report_idx = split_halves(preds.labels, split_seed)
    p_fit, y_fit = preds.probabilities[fit_idx], preds.labels[fit_idx]
    p_rep, y_rep = preds.probabilities[report_idx], preds.labels[report_idx]
    t = fit_temperature(p_fit, y_fit)
    scaled = apply_temperature(p_rep, t)
    return {
        "version": FORMAT_VERSION, "temperature": t, "num_bins": NUM_BINS,
        "split": {"method": "stratified half of the run's test split", "seed": split_seed,
                  "fit_images": int(len(fit_idx)), "report_images": int(len(report_idx)),
                  "test_images": int(len(preds.labels))},
        "fit": {"nll_before": negative_log_likelihood(p_fit, y_fit), "nll_after": negative_log_likelihood(p_fit, y_fit, t)},
        "report": {"ece_before": expected_calibration_error(p_rep, y_rep),
                   "ece_after": expected_calibration_error(scaled, y_rep),
                   "nll_before": negative_log_likelihood(p_rep, y_rep),
                   "nll_after": negative_log_likelihood(p_rep, y_rep, t),
                   "accuracy": float((p_rep.argmax(axis=1) == y_rep).mean()),
                   "bins_before": reliability_bins(p_rep, y_rep), "bins_after": reliability_bins(scaled, y_rep)},
    }


def read_calibration(run_dir: Path, model_stamp: Optional[str]) -> Optional[dict[str, Any]]:
    """calibration.json when it was computed for the model file `model_stamp`; else None (missing,
    damaged, another format, or an older model)."""
    try:
        found = runs.read_json(Path(run_dir) / CALIBRATION_FILE)
    except runs.RunError:
        return None
    if not isinstance(found, dict) or found.get("version") != FORMAT_VERSION or model_stamp is None \
            or found.get("model_stamp") != model_stamp:
        return None
    t = found.get("temperature")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not (math.isfinite(t) and t > 0):
        return None
    return found


def calibration_for(run: "runs.Run", preds: Optional[TestPredictions] = None,
                    store: bool = True) -> Optional[dict[str, Any]]:
    """The run's calibration for its current model: from calibration.json when it matches the model
    file, else computed from `preds` (the run's test-set predictions; an earlier model's are stale)
    or the cached ones, stamped with the model they came from (stored only under a known stamp), and
    stored unless `store` is False. None when the run has no model or no predictions of it yet, or
    too few test images."""
    stamp = runs.current_model_stamp(run.path)
    stored = read_calibration(run.path, stamp)
    if stored is not None:
        return stored
    if preds is not None and preds.model_stamp not in (None, stamp):
        preds = None  # an earlier model's (a page's, while the trainer wrote the next checkpoint): stale
    preds = preds if preds is not None else load_cached_predictions(run)
    if preds is None or stamp is None or run.config is None:
        return None
    try:
        report = calibrate(preds, run.config.seed)
    except ValueError:
        return None
    report.update(model_stamp=preds.model_stamp, computed_at=time.time())  # the model it was fitted on
    if preds.model_stamp is None:
        return report  # predictions of a model not known by its file: shown, never filed under a stamp
    if not store:
        return report
    try:
        runs.write_json(run.path / CALIBRATION_FILE, report)
    except OSError:
        pass  # a full disk or read-only folder costs the cache (a few ms), never the answer
    return report


def calibrated(probabilities: np.ndarray, calibration: Optional[dict[str, Any]]) -> np.ndarray:
    """`probabilities` scaled by the calibration's temperature (unchanged without one)."""
    p = np.asarray(probabilities, np.float64)
    if calibration is None:
        return p
    if p.shape[-1] != NUM_CLASSES:
        raise ValueError(f"need {NUM_CLASSES} probabilities per image, got shape {p.shape}")
    return apply_temperature(p, float(calibration["temperature"]))
