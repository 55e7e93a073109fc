"""A loaded CIFAR-10 split pair, and the one error every data source raises."""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


class DataError(RuntimeError):
    """A data source could not be read; the message says what failed and what to do."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split as uint8 images (N, 32, 32, 3) and integer labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # human-readable description of where the data came from

    def subset(self, train: Optional[int] = None, test: Optional[int] = None, seed: int = 0) -> "Dataset":
        """Keep a class-mixed random subset of each split, in the original order."""
        x_tr, y_tr = _take(self.x_train, self.y_train, train, seed)
        x_te, y_te = _take(self.x_test, self.y_test, test, seed + 1)
        return dataclasses.replace(self, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)


def _take(x: np.ndarray, y: np.ndarray, n: Optional[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(x):
        return x, y
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=n, replace=False))
    return x[keep], y[keep]
