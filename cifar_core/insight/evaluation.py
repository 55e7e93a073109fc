"""Evaluation: test-set predictions cached beside the run, metrics, confusion, and a reading
of the training curves. Only `evaluate_model` and `test_predictions` touch a model."""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifar_core import runs
from cifar_core.data import CLASS_NAMES, NUM_CLASSES, Dataset
from cifar_core.files import replace_atomically

PREDICTIONS_FILE = "predictions.npz"
TTA_FILE = "tta.json"  # TTA evaluations made after training (a job process each): level -> result
_EPS = 1e-7  # Keras clips probabilities by this before the log in categorical cross-entropy


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> np.ndarray:
    """Per-image categorical cross-entropy as Keras' compiled loss computes it from probabilities
    (clipped to [1e-7, 1 - 1e-7], targets smoothed by `label_smoothing`), in float64. The one
    definition behind val_loss, the test loss and the per-image losses."""
    p = np.clip(np.asarray(probabilities, np.float64), _EPS, 1.0 - _EPS)
    targets = np.eye(p.shape[1], dtype=np.float64)[np.asarray(labels).reshape(-1)]
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / targets.shape[1]
    return -(targets * np.log(p)).sum(axis=1)


def loss_note(label_smoothing: float) -> str:
    """What a run's test loss includes, for where it is shown ("" without label smoothing)."""
    return f"with the run's label smoothing {label_smoothing:g}, as its val_loss" if label_smoothing else ""


@dataclasses.dataclass(frozen=True)
class TestPredictions:
    """Class probabilities for a run's test set, with the true labels."""

    probabilities: np.ndarray  # (N, 10) float32
    labels: np.ndarray  # (N,) int64
    # runs.model_stamp of the model file that made them (None: unknown, e.g. a model object in memory)
    model_stamp: Optional[str] = dataclasses.field(default=None, compare=False)

    # Computed once per instance: a Browse page asks for them once per tile.
    @functools.cached_property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @functools.cached_property
    def confidence(self) -> np.ndarray:
        return self.probabilities.max(axis=1)

    @functools.cached_property
    def losses(self) -> np.ndarray:
        """Per-image cross-entropy against the true class alone: high means confidently wrong."""
        return cross_entropy(self.probabilities, self.labels)

    def mean_loss(self, label_smoothing: float = 0.0) -> float:
        """The test loss as the run's own loss defines it (its label smoothing included), so it
        equals the last epoch's val_loss when both see the same weights."""
        if not len(self.labels):
            return float("nan")
        return float(cross_entropy(self.probabilities, self.labels, label_smoothing).mean())

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if len(self.labels) else float("nan")


def predict_test_set(model: Any, x_test: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities for every test image, a compiled batch at a time: model.predict would build
    a tf.data pipeline per call (bench/predict_latency.py: 6.25 s vs 5.53 s for 10k images)."""
    from cifar_core.insight.predict import predict_proba

    chunks = [predict_proba(model, x_test[i:i + batch_size]) for i in range(0, len(x_test), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, NUM_CLASSES), np.float32)


def evaluate_model(model: Any, data: Dataset, run_dir: Path, batch_size: int = 256,
                   tta: str = "none", model_stamp: Optional[str] = None,
                   probabilities: Optional[np.ndarray] = None, label_smoothing: float = 0.0) -> dict[str, Any]:
    """Predict the test set once: write metrics.json and cache the predictions for browsing.
    With `tta` other than "none", also report the test-time-augmented accuracy beside it.
    `label_smoothing`: the run's (TrainConfig.label_smoothing); the test loss is its val_loss's loss.

    `model_stamp` (runs.model_stamp) names the saved file `model` was saved to or loaded from;
    the cached predictions are labelled with it. Without it they are not cached. `probabilities`
    already made for `data.x_test` by this model with these weights (the last epoch's validation)
    are used instead of predicting again."""
    started = time.perf_counter()
    reused = probabilities is not None and len(probabilities) == len(data.x_test)
    probs = probabilities if reused else predict_test_set(model, data.x_test, batch_size)
    preds = TestPredictions(np.asarray(probs, np.float32), np.asarray(data.y_test), model_stamp)
    if model_stamp is not None:
        save_predictions(run_dir, preds, model_stamp)
    metrics = {
        "test_loss": preds.mean_loss(label_smoothing),
        "test_accuracy": preds.accuracy,
        "num_test_images": int(len(preds.labels)),
        "evaluated_at": time.time(),
        "validation_reused": reused,
        "evaluate_seconds": round(time.perf_counter() - started, 3),
    }
    if tta != "none":
        started = time.perf_counter()
        augmented = tta_predictions(model, data, tta, batch_size, plain=preds.probabilities)
        metrics.update(test_accuracy_tta=augmented.accuracy, test_loss_tta=augmented.mean_loss(label_smoothing),
                       tta=tta, tta_seconds=round(time.perf_counter() - started, 3))
    runs.write_metrics(run_dir, metrics)
    return metrics


def tta_predictions(model: Any, data: Dataset, level: str, batch_size: int = 256,
                    plain: Optional[np.ndarray] = None) -> TestPredictions:
    """Test-set predictions averaged over the TTA views of each image (cifar_core.recipes.tta_views);
    `plain` reuses predictions of the unaugmented images already made."""
    from cifar_core.recipes import predict_tta

    probs = predict_tta(lambda x: predict_test_set(model, x, batch_size), data.x_test, level, plain=plain)
    return TestPredictions(probs.astype(np.float32), np.asarray(data.y_test))


def evaluate_tta(run: runs.Run, level: str) -> float:
    """The run's model's test accuracy averaged over `level`'s augmented views, recorded in
    TTA_FILE with the stamp of the model file it came from (a TTA job process calls this)."""
    model, stamp = runs.load_model_stamped(run.run_id)
    accuracy = float(tta_predictions(model, run_test_data(run), level).accuracy)
    record_tta(run.path, level, {"accuracy": accuracy, "model_stamp": stamp, "evaluated_at": time.time()})
    return accuracy


def record_tta(run_dir: Path, level: str, result: dict[str, Any]) -> None:
    """Add one level's result (or {"error": ..., "model_stamp": ...}) to the run's TTA_FILE."""
    try:
        recorded = runs.read_json(run_dir / TTA_FILE)
    except runs.RunError:
        recorded = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    runs.write_json(run_dir / TTA_FILE, {**recorded, level: result})


def recorded_tta(run_dir: Path, level: str, stamp: Optional[str]) -> Optional[dict[str, Any]]:
    """This level's recorded result for the model file `stamp` ({"accuracy"} or {"error"}); None
    when there is none for that very file."""
    try:
        result = runs.read_json(Path(run_dir) / TTA_FILE).get(level)
    except (runs.RunError, AttributeError):
        return None
    if not isinstance(result, dict) or stamp is None or result.get("model_stamp") != stamp:
        return None
    return result


def save_predictions(run_dir: Path, preds: TestPredictions, model_stamp: str) -> None:
    """Cache `preds`, made by the model file `model_stamp`, beside the run. Any number of writers
    (the trainer, page sessions, the CLI) may race: each writes its own temporary file and renames
    it into place, so a reader sees one whole file, its stamp and arrays from the same writer."""
    replace_atomically(run_dir / PREDICTIONS_FILE, lambda tmp: np.savez(
        tmp, probabilities=preds.probabilities, labels=preds.labels, model_stamp=np.str_(model_stamp)))


def read_predictions(path: Path) -> Optional[tuple[TestPredictions, str]]:
    """A predictions file and the stamp of the model that made it; None when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as f:
            stamp = str(f["model_stamp"])
            probs, labels = f["probabilities"].astype(np.float32), f["labels"].astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES or len(probs) != len(labels):
        return None
    return TestPredictions(probs, labels, stamp), stamp


def load_cached_predictions(run: "runs.Run | str") -> Optional[TestPredictions]:
    """The cached predictions if they were made by the model file the run holds now, else None.
    `run` is a loaded Run or a run id."""
    path = (run.path if isinstance(run, runs.Run) else runs.run_path(run)) / PREDICTIONS_FILE
    found = read_predictions(path) if path.is_file() else None
    if found is None or found[1] != runs.current_model_stamp(path.parent):
        return None  # none, damaged, from an older format, or from a model since replaced
    return found[0]


def test_predictions(run: "runs.Run | str", model: Any = None, data: Optional[Dataset] = None,
                     model_stamp: Optional[str] = None) -> TestPredictions:
    """A run's test-set predictions: from the cache beside the run, else computed once and cached.
    `run` is a loaded Run (read once by the caller) or a run id. A `model` passed in is cached
    only with the `model_stamp` of the file it was loaded from."""
    run = run if isinstance(run, runs.Run) else runs.load_run(run)
    cached = load_cached_predictions(run)
    if cached is not None:
        return cached
    if run.config is None:
        raise runs.RunError(f"run {run.run_id} has no readable config.json ({run.broken})")
    if model is None:
        model, model_stamp = runs.load_model_stamped(run.run_id)
    data = data if data is not None else run_test_data(run)
    preds = TestPredictions(predict_test_set(model, data.x_test), np.asarray(data.y_test), model_stamp)
    if model_stamp is not None:
        try:
            save_predictions(run.path, preds, model_stamp)
        except OSError:
            pass  # a full disk or a read-only folder costs the cache (time), never the answer
    return preds


def run_test_data(run: runs.Run) -> Dataset:
    """The exact test images a run was validated on (same source, subset and seed), read without
    the training split."""
    from cifar_core.data import get_test_split

    return get_test_split(run.config.data).subset(None, run.config.test_subset, seed=run.config.seed)


# --- metrics from predictions (no model needed) ------------------------------------------

def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(10, 10) counts: rows are true classes, columns predicted."""
    return np.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def per_class_report(cm: np.ndarray) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class. Per-class accuracy is recall: the share of
    that class's images classified correctly."""
    rows = []
    for k, name in enumerate(CLASS_NAMES):
        tp = int(cm[k, k])
        predicted, actual = int(cm[:, k].sum()), int(cm[k, :].sum())
        precision = tp / predicted if predicted else float("nan")
        recall = tp / actual if actual else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if predicted and actual and (precision + recall) else float("nan")
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1,
                     "accuracy": recall, "support": actual})
    return rows


def most_confused(cm: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most images: (true, predicted, count, share of true)."""
    pairs = []
    for t in range(NUM_CLASSES):
        total = int(cm[t].sum())
        for p in range(NUM_CLASSES):
            if t != p and cm[t, p] > 0:
                pairs.append({"true": CLASS_NAMES[t], "predicted": CLASS_NAMES[p], "count": int(cm[t, p]),
                              "share_of_true": cm[t, p] / total if total else float("nan")})
    pairs.sort(key=lambda r: r["count"], reverse=True)
    return pairs[:top]


def summarize_history(history: dict[str, list[float]], plateau_tolerance: float = 0.005) -> dict[str, Any]:
    """Read the curves the way the assignment's observations do.

    Returns best epoch and validation accuracy, the final train-validation accuracy gap (an
    overfitting signal), and the first epoch after which validation accuracy never improves
    by more than `plateau_tolerance`.
    """
    acc = [a for a in history.get("accuracy", [])]
    val = [v for v in history.get("val_accuracy", [])]
    if not val or all(math.isnan(v) for v in val):
        return {"epochs": len(acc)}
    clean = [(-1.0 if math.isnan(v) else v) for v in val]
    best = int(np.argmax(clean))
    gap = acc[-1] - val[-1] if acc and not math.isnan(acc[-1]) and not math.isnan(val[-1]) else float("nan")
    plateau = None
    for i in range(len(clean)):
        if max(clean[i:]) - clean[i] <= plateau_tolerance and i < len(clean) - 1:
            plateau = i + 1
            break
    val_loss = history.get("val_loss", [])
    loss_min = int(np.nanargmin(val_loss)) + 1 if val_loss and not all(math.isnan(v) for v in val_loss) else None
    return {
        "epochs": len(clean),
        "best_epoch": best + 1,
        "best_val_accuracy": clean[best],
        "final_val_accuracy": val[-1],
        "final_train_accuracy": acc[-1] if acc else float("nan"),
        "final_gap": gap,
        "overfitting": bool(gap == gap and gap > 0.05),
        "plateau_epoch": plateau,
        "val_loss_min_epoch": loss_min,
    }


def describe_summary(summary: dict[str, Any]) -> list[str]:
    """The summary as short sentences for people."""
    if "best_epoch" not in summary:
        return ["No completed epoch with validation yet."]
    lines = [f"Best validation accuracy {summary['best_val_accuracy']:.2%} at epoch {summary['best_epoch']} "
             f"of {summary['epochs']}."]
    gap = summary["final_gap"]
    if gap == gap:
        verdict = ("training accuracy is well above validation: the model is starting to overfit"
                   if summary["overfitting"] else
                   "no sign of overfitting yet" if gap <= 0.02 else "a small generalisation gap")
        lines.append(f"Final training accuracy {summary['final_train_accuracy']:.2%} vs validation "
                     f"{summary['final_val_accuracy']:.2%} (gap {gap:+.2%}): {verdict}.")
    if summary.get("plateau_epoch"):
        lines.append(f"Validation accuracy plateaus from epoch {summary['plateau_epoch']} "
                     f"(never more than 0.5 points better afterwards).")
    elif summary["epochs"] > 1:
        lines.append("Validation accuracy was still improving at the last epoch: more epochs may help.")
    if summary.get("val_loss_min_epoch") and summary["val_loss_min_epoch"] < summary["epochs"]:
        lines.append(f"Validation loss was lowest at epoch {summary['val_loss_min_epoch']} and rose afterwards.")
    return lines


ACCURACY_MILESTONES = (0.7, 0.8, 0.9)  # the time-to-accuracy comparison's columns


def time_to_accuracy(history: dict[str, list[float]], threshold: float) -> Optional[float]:
    """Training minutes until validation accuracy first reached `threshold` (None: never, or the
    run recorded no training time)."""
    accs, seconds = history.get("val_accuracy", []), history.get("train_seconds", [])
    for acc, sec in zip(accs, seconds):
        if acc is not None and acc == acc and acc >= threshold:
            return round(float(sec) / 60, 2)
    return None


def time_to_accuracy_table(histories: dict[str, dict[str, list[float]]],
                           thresholds: tuple[float, ...] = ACCURACY_MILESTONES) -> list[dict[str, Any]]:
    """One row per run that recorded training time: minutes to each threshold, the best accuracy
    and the total training minutes."""
    rows = []
    for label, history in histories.items():
        seconds = history.get("train_seconds", [])
        if not seconds:
            continue
        accs = [a for a in history.get("val_accuracy", []) if a == a]
        row: dict[str, Any] = {"run": label}
        row.update({f"{t:.0%}": time_to_accuracy(history, t) for t in thresholds})
        row.update({"best accuracy": max(accs) if accs else None, "training minutes": round(seconds[-1] / 60, 2)})
        rows.append(row)
    return rows
