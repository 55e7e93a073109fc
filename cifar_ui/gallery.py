"""Views of a run's cached test-set predictions for the pages: scores, filters, order, pages, tiles."""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from cifar_core.data import CLASS_NAMES, Dataset
from cifar_core.insight.evaluation import TestPredictions

PER_PAGE = 24  # four rows of six tiles
SORTS = {
    "worst": "Worst mistakes",  # short: a select shows its value in a quarter of a 1280 px page
    "loss": "Highest loss",
    "least_confident": "Least confident",
    "most_confident": "Most confident",
    "index": "Test-set order",
}
SORTS_HELP = ("Worst mistakes: the wrong predictions first, highest loss first, then the right ones. Highest loss, least and most "
              "confident: every image the filters keep, in that order. Test-set order: as the data source lists them.")
OUTCOMES = {"all": "All", "wrong": "Wrong only", "correct": "Correct only"}


def scores(preds: TestPredictions, label_smoothing: float = 0.0) -> dict[str, float]:
    """Test loss (mean cross-entropy with the run's label smoothing, as Keras reports its val_loss)
    and accuracy from the predictions."""
    return {"test_loss": preds.mean_loss(label_smoothing),
            "test_accuracy": preds.accuracy, "num_test_images": len(preds.labels)}


def select(preds: TestPredictions, true_label: Optional[int] = None, predicted_label: Optional[int] = None,
           outcome: str = "all", sort: str = "worst") -> np.ndarray:
    """Indices of the test images that pass the filters, in the chosen order."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    predicted, labels = preds.predicted, preds.labels
    keep = np.ones(len(labels), dtype=bool)
    if true_label is not None:
        keep &= labels == true_label
    if predicted_label is not None:
        keep &= predicted == predicted_label
    if outcome != "all":
        keep &= (predicted != labels) if outcome == "wrong" else (predicted == labels)
    idx = np.flatnonzero(keep)
    if sort == "index":
        return idx
    if sort == "worst":  # lexsort: last key is primary; wrong (0) before right (1), then by loss
        return idx[np.lexsort((-preds.losses[idx], (predicted[idx] == labels[idx]).astype(int)))]
    key = {"loss": -preds.losses, "least_confident": preds.confidence,
           "most_confident": -preds.confidence}[sort]
    return idx[np.argsort(key[idx], kind="stable")]


def num_pages(count: int, per_page: int = PER_PAGE) -> int:
    return max(1, math.ceil(count / per_page))


def page_of(indices: np.ndarray, page: int, per_page: int = PER_PAGE) -> np.ndarray:
    """The 1-based `page` of `indices`; a page past the end is clamped to the last one."""
    page = min(max(1, int(page)), num_pages(len(indices), per_page))
    return indices[(page - 1) * per_page: page * per_page]


def page_span(count: int, page: int, per_page: int = PER_PAGE) -> tuple[int, int]:
    """1-based numbers of the first and last image on `page` (clamped like `page_of`)."""
    page = min(max(1, int(page)), num_pages(count, per_page))
    first = (page - 1) * per_page + 1
    return min(first, count), min(page * per_page, count)


def tile(preds: TestPredictions, data: Dataset, i: int) -> dict[str, Any]:
    """What one test image's tile shows (same keys as cifar_core.insight.predict.first_four, plus loss)."""
    true_label, predicted = int(preds.labels[i]), int(preds.predicted[i])
    return {
        "index": int(i),
        "image": np.asarray(data.x_test[i], dtype=np.uint8),
        "true_label": true_label,
        "true_name": CLASS_NAMES[true_label],
        "predicted_label": predicted,
        "predicted_name": CLASS_NAMES[predicted],
        "confidence": float(preds.confidence[i]),
        "correct": predicted == true_label,
        "loss": float(preds.losses[i]),
        "probabilities": preds.probabilities[i],
    }


def first_tiles(preds: TestPredictions, data: Dataset, n: int = 4) -> list[dict[str, Any]]:
    """The assignment's step 4 from the cached predictions: the first n test images."""
    return [tile(preds, data, i) for i in range(min(n, len(preds.labels)))]
