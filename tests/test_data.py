"""Data sources: official python batches (archive and folder), image folders, synthetic, cache."""
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from cifar_core import data
from cifar_core.data import CLASS_NAMES, DataError, load_dataset


def _batch_bytes(n, label_offset, seed):
    """An official-format batch: a pickled dict of bytes keys, data (N, 3072) channel-major."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = [(i + label_offset) % 10 for i in range(n)]
    flat = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    payload = {b"batch_label": b"test", b"labels": labels, b"data": flat, b"filenames": [b"x.png"] * n}
    return pickle.dumps(payload, protocol=2), images, np.array(labels)


def _write_official(folder):
    folder.mkdir(parents=True)
    expected_x, expected_y = [], []
    for i in range(1, 6):
        raw, x, y = _batch_bytes(4, i, seed=i)
        (folder / f"data_batch_{i}").write_bytes(raw)
        expected_x.append(x)
        expected_y.append(y)
    raw, xt, yt = _batch_bytes(3, 0, seed=99)
    (folder / "test_batch").write_bytes(raw)
    return np.concatenate(expected_x), np.concatenate(expected_y), xt, yt


def test_official_batch_folder_and_archive_decode_to_the_same_pixels(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    x, y, xt, yt = _write_official(folder)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for source in (folder, tmp_path, archive):
        ds = load_dataset(str(source))
        assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == (20, 32, 32, 3)
        np.testing.assert_array_equal(ds.x_train, x)  # channel-major rows became HWC pixels
        np.testing.assert_array_equal(ds.y_train, y)
        np.testing.assert_array_equal(ds.x_test, xt)
        np.testing.assert_array_equal(ds.y_test, yt)


def test_a_batch_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_official(folder)

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        load_dataset(str(folder))


def test_truncated_archive_gives_a_clear_error(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00 definitely not a whole archive")
    with pytest.raises(DataError, match="cannot read archive"):
        load_dataset(str(bad))


def _write_image_folder(root, per_class=2):
    colours = {}
    for split in ("train", "test"):
        for k, name in enumerate(CLASS_NAMES):
            d = root / split / name
            d.mkdir(parents=True)
            colours[name] = (k * 25, 255 - k * 25, 100)
            for i in range(per_class):
                Image.new("RGB", (32, 32), colours[name]).save(d / f"{i:04d}.png")
    (root / "train" / "cat" / "notes.txt").write_text("ignored: not an image")
    return colours


def test_image_folder_of_pngs(tmp_path):
    colours = _write_image_folder(tmp_path / "imgs")
    ds = load_dataset(str(tmp_path / "imgs"))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (20, 32, 32, 3)
    assert sorted(np.bincount(ds.y_train)) == [2] * 10
    for x, y in zip(ds.x_train, ds.y_train):  # labels follow the folder names, after the shuffle
        assert tuple(x[0, 0]) == colours[CLASS_NAMES[y]]
    assert list(ds.y_test) == sorted(ds.y_test)  # test order is the folder order


def test_image_folder_missing_a_class_names_it(tmp_path):
    _write_image_folder(tmp_path / "imgs")
    for f in (tmp_path / "imgs" / "test" / "truck").iterdir():
        f.unlink()
    (tmp_path / "imgs" / "test" / "truck").rmdir()
    with pytest.raises(DataError, match="test/truck"):
        load_dataset(str(tmp_path / "imgs"))


def test_decoded_local_data_is_cached_as_npy_and_reused(tmp_path):
    _write_image_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    first = load_dataset(str(tmp_path / "imgs"), cache_dir=cache)
    files = sorted(p.name for p in cache.rglob("*.npy"))
    assert files == ["x_test.npy", "x_train.npy", "y_test.npy", "y_train.npy"]
    second = load_dataset(str(tmp_path / "imgs"), cache_dir=cache)
    assert second.source.endswith("(cached)")
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert not list(cache.rglob("*.pkl")) and not list(cache.rglob("*.pickle"))


def test_synthetic_is_deterministic_balanced_and_distinct():
    a, b = data.make_synthetic(200, 50, seed=3), data.make_synthetic(200, 50, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.dtype == np.uint8 and a.x_train.shape == (200, 32, 32, 3)
    assert sorted(np.bincount(a.y_train)) == [20] * 10
    means = np.array([a.x_train[a.y_train == k].mean(axis=0).ravel() for k in range(10)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=2)[~np.eye(10, dtype=bool)]
    assert distances.min() > 100  # every class looks different on average


def test_source_comes_from_argument_then_environment(monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", "synthetic")
    assert data.resolve_source() == "synthetic"
    assert data.resolve_source("/x") == "/x"
    monkeypatch.delenv("CIFAR10_DATA")
    assert data.resolve_source() == "keras"
    assert "keras.datasets.cifar10.load_data" in data.describe_source()


def test_missing_path_says_what_to_use(tmp_path):
    with pytest.raises(DataError, match="does not exist.*synthetic"):
        load_dataset(str(tmp_path / "nope"))


def test_offline_keras_download_explains_how_to_use_a_local_copy(monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://www.cs.toronto.edu/: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(DataError, match="CIFAR10_DATA=/path/to/cifar-10-python.tar.gz"):
        load_dataset("keras")


def test_subset_is_seeded_mixed_and_ordered():
    ds = data.make_synthetic(500, 100)
    small = ds.subset(100, 30, seed=7)
    assert len(small.x_train) == 100 and len(small.x_test) == 30
    assert len(set(small.y_train)) == 10
    np.testing.assert_array_equal(small.y_train, ds.subset(100, 30, seed=7).y_train)


def test_a_source_is_recognised_without_reading_its_images(tmp_path):
    folder = tmp_path / "batches" / "cifar-10-batches-py"
    _write_official(folder)
    _write_image_folder(tmp_path / "nested" / "imgs")
    (tmp_path / "cifar.tar.gz").write_bytes(b"not read here")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    assert data.locate_source("synthetic") == ("synthetic", None)
    assert data.locate_source(str(tmp_path / "batches")) == ("batches", folder)
    assert data.locate_source(str(tmp_path / "nested")) == ("images", tmp_path / "nested" / "imgs")
    assert data.locate_source(str(tmp_path / "cifar.tar.gz")) == ("archive", tmp_path / "cifar.tar.gz")
    with pytest.raises(DataError, match="holds no CIFAR-10 data"):
        data.locate_source(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="not a .tar.gz archive"):
        data.locate_source(str(tmp_path / "notes.txt"))
    with pytest.raises(DataError, match="does not exist"):
        data.locate_source(str(tmp_path / "typo"))
