"""Evolving evaluation: each epoch's confusion matrix on a fixed, stratified sample of the test
split, recorded by a Keras callback in the run folder (evolution.json), and read back per class.

The sample is chosen once per run from its test labels and seed (the same on resume); the last
epoch reuses the live callback's full validation predictions instead of predicting again.
"""
from __future__ import annotations

import dataclasses
import time
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifar_core import runs
from cifar_core.insight.evaluation import confusion_matrix
from cifar_core.data.labels import CLASS_NAMES, NUM_CLASSES

EVOLUTION_FILE = "evolution.json"
FORMAT_VERSION = 1
SAMPLE_SIZE = 1000  # test images predicted at each epoch's end: ~100 per class, ~10% of a full validation
IMPROVED_SHOWN = 3  # classes listed as most improved
STUCK_SHOWN = 3  # classes listed as stuck
STUCK_GAIN = 0.02  # a class that gained at most this (2 images in 100) over the recent epochs is stuck...
STUCK_BELOW = 0.9  # ...unless it is already this accurate: then it has little left to gain
RECENT_EPOCHS = 3  # "recent" for stuck: the change over the last this many epochs


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of `size` images with each class's share of `labels` (largest remainders
    round), chosen at random by `seed`; every index when `size` covers them all."""
    labels = np.asarray(labels).reshape(-1)
    if size >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    take = np.floor(exact).astype(np.int64)
    take[np.argsort(-(exact - take), kind="stable")[: size - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _fingerprint(labels: np.ndarray) -> int:
    """Identifies the sample's labels: a resume on changed test data starts a new series."""
    return zlib.crc32(np.ascontiguousarray(labels, dtype=np.int64).tobytes())


def sample_header(labels: np.ndarray, indices: np.ndarray, seed: int) -> dict[str, Any]:
    """What evolution.json says about its sample (indices into the run's test split)."""
    picked = np.asarray(labels).reshape(-1)[indices]
    return {"version": FORMAT_VERSION, "seed": int(seed), "test_images": int(len(labels)),
            "sample_size": int(len(indices)), "indices": [int(i) for i in indices],
            "labels_crc32": _fingerprint(picked),
            "per_class": np.bincount(picked, minlength=NUM_CLASSES).astype(int).tolist()}


def make_evolution_callback(job: Any, x_test: np.ndarray, y_test: np.ndarray, initial_epoch: int = 0,
                            sample_size: Optional[int] = None):
    """A Keras callback recording each epoch's confusion matrix on the run's evolution sample.

    Args:
      job: the TrainingJob (run_dir, config.seed and config.validation_batch_size are read; its
        `final_probabilities`, set by the live callback for the last epoch, are reused).
      x_test, y_test: the run's test split, as validated.
      initial_epoch: epochs already done (a resume): the recorded series is cut there and continues.
      sample_size: images in the sample (default SAMPLE_SIZE; the whole split when it is smaller).

    Put it right after the live callback: it then sees the weights the epoch was validated with,
    and the last epoch's full-split predictions.
    """
    import keras

    run_dir = Path(job.run_dir)
    labels = np.asarray(y_test).reshape(-1).astype(np.int64)
    indices = stratified_sample(labels, SAMPLE_SIZE if sample_size is None else sample_size, job.config.seed)
    x_sample = np.ascontiguousarray(np.asarray(x_test)[indices])
    y_sample = labels[indices]
    header = sample_header(labels, indices, job.config.seed)

    class EvolvingEvaluation(keras.callbacks.Callback):
        """Appends each epoch's confusion matrix on the sample to evolution.json."""

        def on_train_begin(self, logs=None):
            self._entries = continued_entries(run_dir, header, initial_epoch)
            if (run_dir / EVOLUTION_FILE).exists():  # readers must not show epochs being retrained
                runs.write_json(run_dir / EVOLUTION_FILE, {**header, "epochs": self._entries})

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            started = time.perf_counter()
            final = getattr(job, "final_probabilities", None)
            if final is not None and len(final) == len(labels):
                predicted, source = np.asarray(final)[indices].argmax(axis=1), "validation"  # no second pass
            else:
                from cifar_core.insight.evaluation import predict_test_set

                probs = predict_test_set(self.model, x_sample, job.config.validation_batch_size)
                predicted, source = probs.argmax(axis=1), "sample"
            cm = confusion_matrix(y_sample, predicted)
            now = time.perf_counter()
            entry = {"epoch": epoch + 1, "confusion": cm.astype(int).tolist(), "source": source,
                     "seconds": round(now - started, 4),
                     "epoch_seconds": round(now - getattr(self, "_epoch_start", started), 3)}
            self._entries = [e for e in self._entries if e["epoch"] < epoch + 1] + [entry]
            runs.write_json(run_dir / EVOLUTION_FILE, {**header, "epochs": self._entries})

    return EvolvingEvaluation()


def continued_entries(run_dir: Path, header: dict[str, Any], initial_epoch: int) -> list[dict[str, Any]]:
    """The recorded epochs a (resumed) job continues: those up to `initial_epoch`, if the file's
    sample is this job's; none for a fresh run, another sample or a damaged file."""
    if initial_epoch <= 0:
        return []
    try:
        raw = runs.read_json(run_dir / EVOLUTION_FILE)
    except runs.RunError:
        return []
    same = isinstance(raw, dict) and all(raw.get(k) == header[k] for k in ("indices", "labels_crc32", "version"))
    if not same:
        return []
    return [e for e in _valid_entries(raw.get("epochs"), header["per_class"])[0] if e["epoch"] <= initial_epoch]


def _valid_entries(raw: Any, per_class: list[int]) -> tuple[list[dict[str, Any]], int]:
    """The well-formed entries (a 10x10 count matrix whose rows sum to the sample's class sizes),
    in epoch order, and how many were dropped."""
    if not isinstance(raw, list):
        return [], 0
    good = []
    for e in raw:
        try:
            cm = np.asarray(e["confusion"])
            ok = (isinstance(e["epoch"], int) and e["epoch"] >= 1 and cm.shape == (NUM_CLASSES, NUM_CLASSES)
                  and np.issubdtype(cm.dtype, np.integer) and (cm >= 0).all()
                  and cm.sum(axis=1).tolist() == list(per_class))
        except (TypeError, KeyError, ValueError, IndexError):
            ok = False
        if ok:
            good.append(e)
    good.sort(key=lambda e: e["epoch"])
    unique = [e for i, e in enumerate(good) if i + 1 == len(good) or good[i + 1]["epoch"] != e["epoch"]]
    return unique, len(raw) - len(unique)


@dataclasses.dataclass(frozen=True)
class Evolution:
    """A run's recorded series: one confusion matrix on the sample per recorded epoch."""

    epochs: tuple[int, ...] = ()  # 1-based, increasing (a gap: an epoch whose record was lost)
    confusion: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, NUM_CLASSES, NUM_CLASSES), np.int64))
    sources: tuple[str, ...] = ()  # per epoch: "sample" (predicted at epoch end) or "validation" (reused)
    seconds: tuple[float, ...] = ()  # per epoch: the callback's own cost
    epoch_seconds: tuple[float, ...] = ()  # per epoch: the epoch's wall time, training and validation included
    sample_size: int = 0
    test_images: int = 0
    seed: Optional[int] = None
    note: Optional[str] = None  # why nothing (or not everything) could be shown

    @property
    def per_class_accuracy(self) -> np.ndarray:
        """(E, 10): the share of each class's sampled images classified correctly (NaN: none sampled)."""
        diag = np.diagonal(self.confusion, axis1=1, axis2=2).astype(np.float64)
        totals = self.confusion.sum(axis=2).astype(np.float64)
        return np.divide(diag, totals, out=np.full(diag.shape, np.nan), where=totals > 0)

    @property
    def accuracy(self) -> np.ndarray:
        """(E,): accuracy on the whole sample."""
        total = self.confusion.sum(axis=(1, 2))
        return np.trace(self.confusion, axis1=1, axis2=2) / np.maximum(total, 1)

    def at(self, epoch: int) -> np.ndarray:
        """The confusion matrix of `epoch` (KeyError when it was not recorded)."""
        if epoch not in self.epochs:
            raise KeyError(f"epoch {epoch} was not recorded")
        return self.confusion[self.epochs.index(epoch)]


def read_evolution(run_dir: Path) -> Evolution:
    """A run's evolution.json; never raises: a missing or damaged file gives an empty series whose
    `note` says why, damaged entries are left out (and counted in `note`)."""
    path = Path(run_dir) / EVOLUTION_FILE
    if not path.exists():
        return Evolution(note="This run recorded no per-epoch evaluation (it was trained before this "
                              "feature existed, or has not finished its first epoch).")
    try:
        raw = runs.read_json(path)
        if not isinstance(raw, dict):
            raise runs.RunError(f"{EVOLUTION_FILE} is not an object")
        per_class = raw["per_class"]
        if not (isinstance(per_class, list) and len(per_class) == NUM_CLASSES):
            raise runs.RunError(f"{EVOLUTION_FILE} has no per-class sample sizes")
        entries, dropped = _valid_entries(raw.get("epochs"), per_class)
        size, test_images, seed = int(raw["sample_size"]), int(raw["test_images"]), raw.get("seed")
    except (runs.RunError, KeyError, TypeError, ValueError) as exc:
        return Evolution(note=f"{EVOLUTION_FILE} is damaged and was not read ({exc}).")
    note = f"{dropped} damaged epoch record(s) left out." if dropped else None
    return Evolution(
        epochs=tuple(e["epoch"] for e in entries),
        confusion=np.array([e["confusion"] for e in entries], np.int64).reshape(-1, NUM_CLASSES, NUM_CLASSES),
        sources=tuple(str(e.get("source", "sample")) for e in entries),
        seconds=tuple(_number(e.get("seconds")) for e in entries),
        epoch_seconds=tuple(_number(e.get("epoch_seconds")) for e in entries),
        sample_size=size, test_images=test_images, seed=seed if isinstance(seed, int) else None, note=note)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def class_progress(evolution: Evolution, recent_epochs: int = RECENT_EPOCHS) -> dict[str, list[dict[str, Any]]]:
    """The classes that improved most (first to last recorded epoch) and those that are stuck (at
    most STUCK_GAIN better over the last `recent_epochs` epochs and still below STUCK_BELOW), the
    least accurate first. Empty lists with fewer than two recorded epochs."""
    if len(evolution.epochs) < 2:
        return {"improved": [], "stuck": []}
    acc = evolution.per_class_accuracy
    back = min(recent_epochs, len(acc) - 1)
    rows = [{"class": CLASS_NAMES[k], "first": float(acc[0, k]), "last": float(acc[-1, k]),
             "gain": float(acc[-1, k] - acc[0, k]), "recent_gain": float(acc[-1, k] - acc[-1 - back, k]),
             "recent_epochs": back} for k in range(NUM_CLASSES) if not np.isnan(acc[:, k]).any()]
    improved = sorted((r for r in rows if r["gain"] > 0), key=lambda r: -r["gain"])[:IMPROVED_SHOWN]
    stuck = sorted((r for r in rows if r["recent_gain"] <= STUCK_GAIN and r["last"] < STUCK_BELOW),
                   key=lambda r: r["last"])[:STUCK_SHOWN]
    return {"improved": improved, "stuck": stuck}


def cost_summary(evolution: Evolution) -> dict[str, Optional[float]]:
    """The callback's cost: median seconds per predicted epoch and its median share of the epoch."""
    pairs = [(s, e) for s, e, src in zip(evolution.seconds, evolution.epoch_seconds, evolution.sources)
             if src == "sample" and s == s]
    if not pairs:
        return {"seconds": None, "share": None}
    shares = [s / e for s, e in pairs if e == e and e > 0]
    return {"seconds": float(np.median([s for s, _ in pairs])),
            "share": float(np.median(shares)) if shares else None}
