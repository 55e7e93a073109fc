"""What a dataset holds, for people: images per class, a few images of each class, and the
per-channel mean and standard deviation the network's inputs have."""
from __future__ import annotations

import numpy as np

from cifar_core.data.labels import CLASS_NAMES, NUM_CLASSES


def class_counts(labels: np.ndarray) -> list[int]:
    """Images per class, in CLASS_NAMES order."""
    return np.bincount(np.asarray(labels, np.int64).reshape(-1), minlength=NUM_CLASSES)[:NUM_CLASSES].tolist()


def samples_per_class(labels: np.ndarray, per_class: int, seed: int = 0) -> dict[str, list[int]]:
    """Up to `per_class` image indices of each class, the same for the same seed."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).reshape(-1)
    out = {}
    for k, name in enumerate(CLASS_NAMES):
        found = np.flatnonzero(labels == k)
        out[name] = sorted(rng.choice(found, size=min(per_class, len(found)), replace=False).tolist())
    return out


def channel_stats(images: np.ndarray, chunk: int = 10_000) -> dict[str, list[float]]:
    """Per-channel (R, G, B) mean and standard deviation of uint8 images, on the 0-255 scale,
    in float64 and in chunks (the full training set is 150 M values)."""
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
        raise ValueError(f"images must be a non-empty (N, H, W, 3) array, got {x.shape}")
    total = np.zeros(3)
    squares = np.zeros(3)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].reshape(-1, 3).astype(np.float64)
        total += part.sum(axis=0)
        squares += (part ** 2).sum(axis=0)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    mean = total / n
    return {"mean": mean.tolist(), "std": np.sqrt(np.maximum(squares / n - mean ** 2, 0.0)).tolist()}
