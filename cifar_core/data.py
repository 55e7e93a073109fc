"""CIFAR-10 data: the class names, and loading any source into uint8 arrays with a .npy cache.

Sources: the official Keras download (default), a local copy of the official python batches
(archive or folder), an image folder `<root>/{train,test}/<class>/*`, and a synthetic demo set.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
NUM_CLASSES = len(CLASS_NAMES)
INPUT_SHAPE = (32, 32, 3)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DATA_ENV = "CIFAR10_DATA"
SYNTHETIC_TRAIN_SIZE = 6000  # enough for a small model to beat chance within seconds
SYNTHETIC_TEST_SIZE = 1000


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
        return _load_keras()
    if s == "synthetic":
        return make_synthetic()
    path = Path(s).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {s!r} does not exist. Use 'keras', 'synthetic', a cifar-10-python.tar.gz "
            f"archive, a cifar-10-batches-py folder, or an image folder <root>/train|test/<class>/*.png"
        )
    if cache_dir is not None:
        cached = _read_cache(cache_dir, path)
        if cached is not None:
            return cached
    dataset = _load_local(path)
    if cache_dir is not None:
        _write_cache(cache_dir, path, dataset)
    return dataset


@functools.lru_cache(maxsize=2)
def _get_dataset(source: str) -> Dataset:
    from .paths import cache_dir

    dataset = load_dataset(source, cache_dir=cache_dir())
    for a in _ARRAYS:
        getattr(dataset, a).flags.writeable = False  # shared by every caller in the process
    return dataset


def get_dataset(source: Optional[str] = None) -> Dataset:
    """`load_dataset` with the artifacts .npy cache, kept in memory for the process (read-only)."""
    return _get_dataset(resolve_source(source))


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
    from .paths import cache_dir

    dataset = _load_test_split(source, cache_dir())
    for a in _ARRAYS:
        getattr(dataset, a).flags.writeable = False
    return dataset


def _load_test_split(s: str, cache_root: Optional[Path]) -> Dataset:
    if s == "synthetic":
        return _test_only(make_synthetic())  # generated in a blink; the test split follows the train split
    if s == "keras":
        downloaded = _keras_download_folder()
        if downloaded is None:
            return _test_only(_load_keras())  # not downloaded yet: Keras downloads it
        x, y = _read_batch((downloaded / "test_batch").read_bytes(), str(downloaded / "test_batch"))
        return _test_only(Dataset(x, y, x, y, source="keras.datasets.cifar10"))
    path = Path(s).expanduser()
    if cache_root is not None and path.exists():
        for key in (_cache_key(path), _cache_key(path) + "-test"):  # a whole-source cache, or a test-only one
            cached = _read_cache(Path(cache_root), path, key=key, arrays=("x_test", "y_test"))
            if cached is not None:
                return cached
    if not path.is_dir() or any((c / "data_batch_1").is_file() for c in (path, path / "cifar-10-batches-py")):
        return _test_only(load_dataset(s, cache_dir=cache_root))  # batches and archives: read whole
    root = next((c for c in (path, *sorted(p for p in path.iterdir() if p.is_dir()))
                 if (c / "train").is_dir() and (c / "test").is_dir()), None)
    if root is None:
        return _test_only(load_dataset(s, cache_dir=cache_root))  # an archive inside, or a DataError
    x, y = _read_image_split(root, "test")
    dataset = _test_only(Dataset(x, y, x, y, source=f"image folder {root}"))
    if cache_root is not None:
        _write_cache(Path(cache_root), path, dataset, key=_cache_key(path) + "-test", arrays=("x_test", "y_test"))
    return dataset


def _keras_download_folder() -> Optional[Path]:
    """Where keras.datasets.cifar10.load_data() extracted the batches, if it has."""
    homes = [Path(os.environ["KERAS_HOME"])] if os.environ.get("KERAS_HOME") else []
    homes += [Path.home() / ".keras", Path("/tmp/.keras")]
    for home in homes:
        folder = home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
        if (folder / "test_batch").is_file():
            return folder
    return None


def _load_local(path: Path) -> Dataset:
    if path.is_file():
        if path.name.endswith((".tar.gz", ".tgz", ".tar")):
            return load_official_archive(path)
        raise DataError(f"{path} is a file but not a .tar.gz archive of the official python batches")
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file():
            return load_official_folder(candidate)
    archive = path / "cifar-10-python.tar.gz"
    if archive.is_file():
        return load_official_archive(archive)
    for candidate in (path, *sorted(p for p in path.iterdir() if p.is_dir())):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return load_image_folder(candidate)
    raise DataError(
        f"{path} holds no CIFAR-10 data: expected data_batch_1..5 and test_batch, "
        f"cifar-10-python.tar.gz, or train/ and test/ folders of class subfolders"
    )


def _load_keras() -> Dataset:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # offline: urllib and Keras raise several types
        raise DataError(
            f"downloading CIFAR-10 with keras.datasets.cifar10.load_data() failed ({exc}). "
            f"Offline? Point at a local copy with CIFAR10_DATA=/path/to/cifar-10-python.tar.gz "
            f"(or the cifar-10-batches-py folder, or an image folder), or use CIFAR10_DATA=synthetic."
        ) from exc
    return Dataset(
        x_train.astype(np.uint8), y_train.reshape(-1).astype(np.int64),
        x_test.astype(np.uint8), y_test.reshape(-1).astype(np.int64),
        source="keras.datasets.cifar10",
    )


class _BatchUnpickler(pickle.Unpickler):
    """Reads the official batches (dicts of bytes, lists and ndarrays) and nothing that runs code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how protocol-2 pickles carry raw bytes
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{name} is not an official CIFAR-10 python batch ({exc})") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{name}: expected data of shape (N, 3072) and N labels, got {data.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{name}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _assemble(read, source: str) -> Dataset:
    train = [read(n) for n in _TRAIN_BATCHES]
    x_test, y_test = read("test_batch")
    return Dataset(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
        x_test, y_test, source=source,
    )


def load_official_folder(folder: Path) -> Dataset:
    """Read an extracted `cifar-10-batches-py` folder (data_batch_1..5, test_batch)."""
    folder = Path(folder)

    def read(name: str):
        f = folder / name
        if not f.is_file():
            raise DataError(f"{folder} is missing {name}: is it a complete cifar-10-batches-py folder?")
        return _read_batch(f.read_bytes(), str(f))

    return _assemble(read, source=f"official batches in {folder}")


def load_official_archive(archive: Path) -> Dataset:
    """Read `cifar-10-python.tar.gz` without extracting it to disk."""
    archive = Path(archive)
    try:
        with tarfile.open(archive) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str):
                if name not in members:
                    raise DataError(f"{archive} has no {name}: is it the official cifar-10-python.tar.gz?")
                return _read_batch(tar.extractfile(members[name]).read(), f"{archive}:{name}")

            return _assemble(read, source=f"official archive {archive}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read archive {archive}: {exc}") from exc


def load_image_folder(root: Path) -> Dataset:
    """Read `<root>/{train,test}/<class>/*.{png,jpg,jpeg}`; class folders use CLASS_NAMES.

    The training split is shuffled with a fixed seed (folders are grouped by class); the test
    split keeps the folder order.
    """
    root = Path(root)
    (x_train, y_train), (x_test, y_test) = (_read_image_split(root, split) for split in ("train", "test"))
    order = np.random.default_rng(0).permutation(len(x_train))
    return Dataset(x_train[order], y_train[order], x_test, y_test, source=f"image folder {root}")


def _read_image_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from .predict import ImageError, prepare_image

    images, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        folder = root / split / name
        if not folder.is_dir():
            raise DataError(f"{root} has no {split}/{name}/ folder (class folders must be {', '.join(CLASS_NAMES)})")
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:  # the same decoding as an upload: alpha, 16-bit, palettes, crop to square
                images.append(prepare_image(f.read_bytes(), f.name)[1])
            except (ImageError, OSError) as exc:
                raise DataError(f"cannot read image {f}: {exc}") from exc
            labels.append(label)
    if not images:
        raise DataError(f"{root / split} holds no .png/.jpg images")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def make_synthetic(num_train: int = SYNTHETIC_TRAIN_SIZE, num_test: int = SYNTHETIC_TEST_SIZE, seed: int = 0) -> Dataset:
    """A deterministic demo set: 10 classes of distinct colour-and-pattern images with noise."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n, dtype=np.int64) % NUM_CLASSES
        rng.shuffle(labels)
        return _synthetic_images(labels, rng), labels

    x_train, y_train = split(num_train)
    x_test, y_test = split(num_test)
    return Dataset(x_train, y_train, x_test, y_test, source="synthetic demo set")


# One RGB colour per class; shapes differ too, so colour alone is not the whole story.
_SYNTH_COLOURS = np.array([
    [220, 40, 40], [40, 160, 40], [40, 70, 220], [230, 200, 30], [200, 60, 200],
    [30, 200, 200], [240, 130, 20], [120, 120, 120], [250, 250, 250], [110, 60, 20],
], dtype=np.float32)


def _synthetic_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    yy, xx = yy[None], xx[None]
    shift = rng.integers(-4, 5, size=(n, 2)).astype(np.float32)
    cy, cx = (15.5 + shift[:, 0])[:, None, None], (15.5 + shift[:, 1])[:, None, None]
    phase = rng.integers(0, 4, size=n).astype(np.float32)[:, None, None]
    lab = labels[:, None, None]
    r = np.hypot(yy - cy, xx - cx)
    masks = [
        (np.mod(yy + phase, 8) < 4),  # horizontal stripes
        (np.mod(xx + phase, 8) < 4),  # vertical stripes
        r < 9,  # disc
        (np.abs(yy - cy) < 8) & (np.abs(xx - cx) < 8),  # square
        (np.mod(xx + yy + phase, 8) < 4),  # diagonal stripes
        ((np.mod(xx // 4 + yy // 4 + phase, 2)) < 1),  # checkerboard
        (r > 6) & (r < 11),  # ring
        (np.abs(xx - cx) < 3) | (np.abs(yy - cy) < 3),  # cross
        (np.abs(xx - cx) + np.abs(yy - cy)) < 10,  # diamond
        (yy > cy),  # lower half
    ]
    mask = np.zeros((n, 32, 32), dtype=bool)
    for k, m in enumerate(masks):
        mask |= (lab == k) & m
    fg = _SYNTH_COLOURS[labels][:, None, None, :]
    bg = rng.uniform(0, 90, size=(n, 1, 1, 3)).astype(np.float32)
    img = np.where(mask[..., None], fg, bg)
    img += rng.normal(0, 18, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


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
            tmp = folder / f".{a}.{os.getpid()}.tmp.npy"
            np.save(tmp, getattr(dataset, a), allow_pickle=False)
            os.replace(tmp, folder / f"{a}.npy")
    except OSError:
        pass  # a cache we cannot write only costs time
