"""Near-duplicates between train and test: a planted, slightly altered copy of a training image is
found (also mirrored), unrelated images are not, and the cache follows the data's content."""
from __future__ import annotations

import numpy as np
import pytest

from cifar_core.data import make_synthetic
from cifar_core.data.duplicates import (
    CACHE_FOLDER, DEFAULT_THRESHOLD, accuracy_split, cached_nearest_train, features, nearest_train,
)


def photos(n: int, seed: int) -> np.ndarray:
    """Smooth random pictures (blurred noise at several scales), unlike each other."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 32, 32, 3), np.float32)
    for size in (4, 8, 16):
        coarse = rng.normal(size=(n, size, size, 3)).astype(np.float32)
        out += np.repeat(np.repeat(coarse, 32 // size, axis=1), 32 // size, axis=2) * (size / 16)
    out = (out - out.min()) / (out.max() - out.min()) * 255
    return out.astype(np.uint8)


def altered(image: np.ndarray, seed: int) -> np.ndarray:
    """Brighter, lower contrast, a little JPEG-like noise: the same picture, not the same bytes."""
    noise = np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(image.astype(np.float32) * 0.8 + 30 + noise, 0, 255).astype(np.uint8)


def test_a_planted_altered_copy_is_found_and_nothing_else_is():
    train, test = photos(400, seed=1), photos(60, seed=2)
    test[7] = altered(train[123], seed=3)
    test[20] = altered(train[5], seed=4)[:, ::-1]  # mirrored
    found = nearest_train(train, test)
    assert np.flatnonzero(found.below(DEFAULT_THRESHOLD)).tolist() == [7, 20]
    assert found.index[7] == 123 and not found.flipped[7]
    assert found.index[20] == 5 and found.flipped[20]
    assert found.closest(2).tolist() in ([7, 20], [20, 7])
    others = np.delete(found.distance, [7, 20])
    assert others.min() > 5 * DEFAULT_THRESHOLD, "unrelated pictures came near"


def test_without_a_planted_copy_nothing_is_a_near_duplicate():
    found = nearest_train(photos(400, seed=1), photos(60, seed=2))
    assert not found.below(DEFAULT_THRESHOLD).any()


def test_a_flat_image_is_compared_without_nan():
    flat = np.full((2, 32, 32, 3), 128, np.uint8)
    assert np.isfinite(features(flat)).all() and not features(flat).any()
    found = nearest_train(photos(50, seed=1), flat)
    assert np.isfinite(found.distance).all() and (found.distance == 1.0).all()


def test_the_cache_is_kept_per_content_and_used(tmp_path):
    d = make_synthetic(300, 50, seed=1)
    first = cached_nearest_train(d.x_train, d.x_test, tmp_path)
    (cached,) = (tmp_path / CACHE_FOLDER).iterdir()
    again = cached_nearest_train(d.x_train, d.x_test, tmp_path)
    np.testing.assert_array_equal(first.index, again.index)
    changed = d.x_test.copy()
    changed[0, 0, 0, 0] ^= 1
    cached_nearest_train(d.x_train, changed, tmp_path)
    assert len(list((tmp_path / CACHE_FOLDER).iterdir())) == 2
    cached.write_bytes(b"garbled")  # a cache file that cannot be read is recomputed
    np.testing.assert_array_equal(cached_nearest_train(d.x_train, d.x_test, tmp_path).distance, first.distance)


def test_accuracy_with_and_without_a_near_duplicate():
    split = accuracy_split(np.array([1, 1, 0, 1, 0]), np.array([True, True, False, False, False]))
    assert split == {"with": 1.0, "with_count": 2, "without": pytest.approx(1 / 3), "without_count": 3, "all": 0.6}
    assert accuracy_split(np.array([1]), np.array([False]))["with"] is None
    with pytest.raises(ValueError):
        accuracy_split(np.ones(3), np.ones(4, bool))
