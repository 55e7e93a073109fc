"""CIFAR-10 data: the class names, and loading any source into uint8 arrays with a .npy cache.

Sources: the official Keras download (default), a local copy of the official python batches
(archive or folder), an image folder `<root>/{train,test}/<class>/*`, and a synthetic demo set.

May import: config, files, paths, quiet, trainer_lock.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Optional

import numpy as np

from cifar_core.data.dataset import DataError, Dataset
from cifar_core.files import replace_atomically
from cifar_core.data.labels import CLASS_NAMES, INPUT_SHAPE, NUM_CLASSES  # noqa: F401 (re-exported as data.*)
from cifar_core.data.sources import (
    IMAGE_SUFFIXES, SYNTHETIC_TEST_SIZE, SYNTHETIC_TRAIN_SIZE, keras_download_folder, load_keras,
    read_batch, load_image_folder, load_official_archive, load_official_folder, make_synthetic,
    read_image_split,
)

DATA_ENV = "CIFAR10_DATA"


def resolve_source(source: Optional[str] = None) -> str:
    """The source to use: the argument, else $CIFAR10_DATA, else 'keras'."""
    chosen = source or os.environ.get(DATA_ENV) or "keras"
    return chosen.strip()


def describe_source(source: Optional[str] = None) -> str:
    """One line for people: what `source` means, without loading anything."""
    s = resolve_source(source)
    if s == "keras":
        return "official CIFAR-10 via keras.datasets.cifar10.load_data() (downloads once, needs internet)"
    if s == "synthetic":
        return "built-in synthetic demo set (10 learnable pattern classes, no download)"
    return f"local copy at {s}"


def load_dataset(source: Optional[str] = None, cache_dir: Optional[Path] = None) -> Dataset:
    """Load a whole dataset from `source` ('keras', 'synthetic', or a path).

    Args:
      source: see `resolve_source`. A path may be `cifar-10-python.tar.gz`, the extracted
        `cifar-10-batches-py` folder (or a folder holding either), or an image folder.
      cache_dir: where decoded local sources are cached as .npy; None disables the cache.
    Returns:
      The Dataset, uint8 images and int64 labels.
    Raises:
      DataError: the source is missing or unreadable; the message says how to fix it.
    """
    s = resolve_source(source)
    if s == "keras":
        return load_keras()
    if s == "synthetic":
        return make_synthetic()
    kind, where = locate_source(s)
    path = Path(s).expanduser()  # the cache is keyed on the path as given
    if cache_dir is not None:
        cached = _read_cache(cache_dir, path)
        if cached is not None:
            return cached
    dataset = _READERS[kind](where)
    if cache_dir is not None:
        _write_cache(cache_dir, path, dataset)
    return dataset


@functools.lru_cache(maxsize=2)
def _get_dataset(source: str) -> Dataset:
    from cifar_core.paths import cache_dir

    dataset = load_dataset(source, cache_dir=cache_dir())
    for a in _ARRAYS:
        getattr(dataset, a).flags.writeable = False  # shared by every caller in the process
    return dataset


def get_dataset(source: Optional[str] = None) -> Dataset:
    """`load_dataset` with the artifacts .npy cache, kept in memory for the process (read-only)."""
    return _get_dataset(resolve_source(source))


def load_training_data(config) -> Dataset:
    """A TrainConfig's data: its source, subset as configured (seeded by config.seed)."""
    return get_dataset(config.data).subset(config.train_subset, config.test_subset, seed=config.seed)


def get_test_split(source: Optional[str] = None) -> Dataset:
    """Only the test split of `source` (the training arrays are empty), read without the training
    images and, where the files are on disk, without TensorFlow: what pages need to show test
    images. Equal to `get_dataset(source)`'s test split, so subsets of it match too."""
    return _get_test_split(resolve_source(source))


def _test_only(d: Dataset) -> Dataset:
    empty = np.zeros((0, *INPUT_SHAPE), np.uint8)
    return Dataset(empty, np.zeros((0,), np.int64), d.x_test, d.y_test, source=d.source)


@functools.lru_cache(maxsize=2)
def _get_test_split(source: str) -> Dataset:
    from cifar_core.paths import cache_dir

    dataset = _load_test_split(source, cache_dir())
    for a in _ARRAYS:
        getattr(dataset, a).flags.writeable = False
    return dataset


def _load_test_split(s: str, cache_root: Optional[Path]) -> Dataset:
    if s == "synthetic":
        return _test_only(make_synthetic())  # generated in a blink; the test split follows the train split
    if s == "keras":
        downloaded = keras_download_folder()
        if downloaded is None:
            return _test_only(load_keras())  # not downloaded yet: Keras downloads it
        x, y = read_batch((downloaded / "test_batch").read_bytes(), str(downloaded / "test_batch"))
        return _test_only(Dataset(x, y, x, y, source="keras.datasets.cifar10"))
    kind, where = locate_source(s)
    path = Path(s).expanduser()
    if cache_root is not None:
        for key in (_cache_key(path), _cache_key(path) + "-test"):  # a whole-source cache, or a test-only one
            cached = _read_cache(Path(cache_root), path, key=key, arrays=("x_test", "y_test"))
            if cached is not None:
                return cached
    if kind != "images":
        return _test_only(load_dataset(s, cache_dir=cache_root))  # batches and archives: read whole
    root = where
    x, y = read_image_split(root, "test")
    dataset = _test_only(Dataset(x, y, x, y, source=f"image folder {root}"))
    if cache_root is not None:
        _write_cache(Path(cache_root), path, dataset, key=_cache_key(path) + "-test", arrays=("x_test", "y_test"))
    return dataset


def locate_source(source: Optional[str] = None) -> tuple[str, Optional[Path]]:
    """What kind of source `source` is, without reading its images: ("keras" | "synthetic", None),
    or ("archive" | "batches" | "images", the path to read). Train's Start calls it so a typo or an
    empty folder is refused before a run folder exists.

    Raises:
      DataError: the path does not exist or holds no CIFAR-10 data in a known layout.
    """
    s = resolve_source(source)
    if s in ("keras", "synthetic"):
        return s, None
    path = Path(s).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {s!r} does not exist. Use 'keras', 'synthetic', a cifar-10-python.tar.gz "
            f"archive, a cifar-10-batches-py folder, or an image folder <root>/train|test/<class>/*.png"
        )
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return "archive", path
        raise DataError(f"{path} is a file but not a .tar.gz archive of the official python batches")
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file():
            return "batches", candidate
    if (path / "cifar-10-python.tar.gz").is_file():
        return "archive", path / "cifar-10-python.tar.gz"
    try:
        folders = sorted(p for p in path.iterdir() if p.is_dir())
    except OSError as exc:
        raise DataError(f"cannot read the folder {path}: {exc.strerror or exc}") from exc
    for candidate in (path, *folders):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return "images", candidate
    raise DataError(
        f"{path} holds no CIFAR-10 data: expected data_batch_1..5 and test_batch, "
        f"cifar-10-python.tar.gz, or train/ and test/ folders of class subfolders"
    )


_READERS = {"archive": load_official_archive, "batches": load_official_folder, "images": load_image_folder}


# --- .npy cache of decoded local sources -------------------------------------------------

_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _cache_key(path: Path) -> str:
    """Changes when the source path, size or modification time changes."""
    p = path.resolve()
    st = p.stat()
    parts = [str(p), str(st.st_size), str(st.st_mtime_ns)]
    if p.is_dir():  # class folders change their mtime when images are added or replaced
        parts += [f"{c.relative_to(p)}:{c.stat().st_mtime_ns}" for c in sorted(p.glob("*/*")) if c.is_dir()]
        parts += [f"{c.name}:{c.stat().st_mtime_ns}" for c in sorted(p.iterdir())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _read_cache(cache_dir: Path, path: Path, key: Optional[str] = None,
                arrays: tuple[str, ...] = _ARRAYS) -> Optional[Dataset]:
    """The cached `arrays` (the others empty), or None."""
    folder = Path(cache_dir) / (key or _cache_key(path))
    if not all((folder / f"{a}.npy").is_file() for a in arrays):
        return None
    try:
        loaded = {a: np.load(folder / f"{a}.npy", allow_pickle=False) for a in arrays}
    except (OSError, ValueError):
        return None  # a damaged cache is rebuilt, never trusted
    empty = {"x_train": np.zeros((0, *INPUT_SHAPE), np.uint8), "y_train": np.zeros((0,), np.int64),
             "x_test": np.zeros((0, *INPUT_SHAPE), np.uint8), "y_test": np.zeros((0,), np.int64)}
    return Dataset(**{**empty, **loaded}, source=f"local copy at {path} (cached)")


def _write_cache(cache_dir: Path, path: Path, dataset: Dataset, key: Optional[str] = None,
                 arrays: tuple[str, ...] = _ARRAYS) -> None:
    folder = Path(cache_dir) / (key or _cache_key(path))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for a in arrays:
            replace_atomically(folder / f"{a}.npy", lambda tmp, a=a: np.save(tmp, getattr(dataset, a), allow_pickle=False))
    except OSError:
        pass  # a cache we cannot write only costs time
