"""Near-duplicates between the training and test images: for every test image, its nearest
training image and how far apart they are.

The measure: both images shrunk to 16x16 (2x2 averages: JPEG noise and one-pixel shifts fade),
each centred on its own mean and scaled to unit length, then compared by cosine similarity; the
distance is 1 - the similarity, so 0 is the same picture up to brightness and contrast, and a
mirrored copy counts (the test image is compared flipped too). That is the Pearson correlation of
the small images: cheap enough to compare all 10,000 x 50,000 pairs as a few matrix products
(BENCHMARKS.md: the time on the full set), and blind to what ciFAIR (Barz and Denzler 2020) also
counted as near-duplicates: crops, rescales and recolourings of one photo. Those want a learned
feature space; this finds the copies that are the same picture.

Results are cached per data content under `artifacts/cache/near-duplicates/`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Optional

import numpy as np

from cifar_core.files import replace_atomically

SIDE = 16  # the images are compared at this size
CHUNK = 1024  # test images per matrix product (a 1024 x 50,000 float32 block is 200 MB)
# The distance below which a pair counts as a near-duplicate by default (BENCHMARKS.md: what the
# pairs under it look like on the real images); the Data page lets the user move it.
DEFAULT_THRESHOLD = 0.03
CACHE_FOLDER = "near-duplicates"


@dataclasses.dataclass(frozen=True)
class NearestTrain:
    """For test image i: `index[i]`, its nearest training image, `distance[i]` in [0, 2], and
    `flipped[i]`, whether the match is the mirrored test image."""

    index: np.ndarray  # (N_test,) int64
    distance: np.ndarray  # (N_test,) float32
    flipped: np.ndarray  # (N_test,) bool

    def below(self, threshold: float) -> np.ndarray:
        """Which test images have a near-duplicate in training at this threshold."""
        return self.distance <= threshold

    def closest(self, n: int) -> np.ndarray:
        """The n test images closest to a training image, closest first."""
        return np.argsort(self.distance, kind="stable")[:n]


def features(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) uint8 -> (N, 16*16*3) float32 rows, each zero-mean and unit-length (an
    image of one flat colour, which has no direction, becomes all zeros)."""
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise ValueError(f"images must be (N, 32, 32, 3), got {x.shape}")
    small = x.reshape(len(x), SIDE, 32 // SIDE, SIDE, 32 // SIDE, 3).mean(axis=(2, 4)).reshape(len(x), -1)
    small -= small.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(small, axis=1, keepdims=True)
    return np.divide(small, norm, out=np.zeros_like(small), where=norm > 1e-6)


def nearest_train(x_train: np.ndarray, x_test: np.ndarray) -> NearestTrain:
    """Each test image's nearest training image under the measure above."""
    if len(x_train) == 0:
        raise ValueError("there are no training images to compare with")
    train = features(x_train)
    index = np.zeros(len(x_test), np.int64)
    best = np.full(len(x_test), -2.0, np.float32)
    flipped = np.zeros(len(x_test), bool)
    for start in range(0, len(x_test), CHUNK):
        part = np.asarray(x_test[start:start + CHUNK])
        for mirrored, view in ((False, part), (True, part[:, :, ::-1])):
            sims = features(view) @ train.T
            top = sims.argmax(axis=1)
            value = sims[np.arange(len(top)), top]
            better = value > best[start:start + len(top)]
            best[start:start + len(top)][better] = value[better]
            index[start:start + len(top)][better] = top[better]
            flipped[start:start + len(top)][better] = mirrored
    return NearestTrain(index=index, distance=np.clip(1.0 - best, 0.0, 2.0).astype(np.float32), flipped=flipped)


def content_key(x_train: np.ndarray, x_test: np.ndarray) -> str:
    """Changes when any image of either split changes (a few hundred ms on the full set)."""
    h = hashlib.blake2b(digest_size=12)
    for a in (x_train, x_test):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _cache_path(x_train: np.ndarray, x_test: np.ndarray, cache_dir: Path, key: Optional[str]) -> Path:
    return Path(cache_dir) / CACHE_FOLDER / f"{key or content_key(x_train, x_test)}.npz"


def read_cached(x_train: np.ndarray, x_test: np.ndarray, cache_dir: Optional[Path],
                key: Optional[str] = None) -> Optional[NearestTrain]:
    """The kept result for these images, or None (never computed, or unreadable). `key`: their
    `content_key` when the caller already has it (a page keeps it per source)."""
    path = None if cache_dir is None else _cache_path(x_train, x_test, cache_dir, key)
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            found = NearestTrain(index=f["index"], distance=f["distance"], flipped=f["flipped"])
    except (OSError, ValueError, KeyError):
        return None
    return found if len(found.index) == len(x_test) and (found.index < len(x_train)).all() else None


def cached_nearest_train(x_train: np.ndarray, x_test: np.ndarray, cache_dir: Optional[Path],
                         key: Optional[str] = None) -> NearestTrain:
    """`nearest_train`, kept per data content in `cache_dir` (None: not kept). A cache file that
    cannot be read is recomputed; one that cannot be written only costs the time."""
    key = key or content_key(x_train, x_test)
    found = read_cached(x_train, x_test, cache_dir, key)
    if found is not None:
        return found
    path = None if cache_dir is None else _cache_path(x_train, x_test, cache_dir, key)
    found = nearest_train(x_train, x_test)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_atomically(path, lambda tmp: np.savez(tmp, index=found.index, distance=found.distance,
                                                          flipped=found.flipped))
        except OSError:
            pass
    return found


def accuracy_split(correct: np.ndarray, has_duplicate: np.ndarray) -> dict[str, Optional[float]]:
    """Test accuracy on the images with a near-duplicate in training and on the rest."""
    correct, has_duplicate = np.asarray(correct, bool), np.asarray(has_duplicate, bool)
    if correct.shape != has_duplicate.shape:
        raise ValueError(f"{correct.shape} predictions for {has_duplicate.shape} test images")
    with_dup, without = correct[has_duplicate], correct[~has_duplicate]
    return {"with": float(with_dup.mean()) if len(with_dup) else None, "with_count": int(len(with_dup)),
            "without": float(without.mean()) if len(without) else None, "without_count": int(len(without)),
            "all": float(correct.mean()) if len(correct) else None}
