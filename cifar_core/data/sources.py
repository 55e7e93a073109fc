"""Readers for each kind of CIFAR-10 source: the Keras download, the official python batches
(folder or archive, read with an unpickler that builds only arrays), an image folder
`<root>/{train,test}/<class>/*`, and the synthetic demo set."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Optional

import numpy as np

from cifar_core.data.dataset import DataError, Dataset
from cifar_core.data.labels import CLASS_NAMES, NUM_CLASSES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SYNTHETIC_TRAIN_SIZE = 6000  # enough for a small model to beat chance within seconds
SYNTHETIC_TEST_SIZE = 1000


def load_keras() -> Dataset:
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


def read_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
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
        return read_batch(f.read_bytes(), str(f))

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
                return read_batch(tar.extractfile(members[name]).read(), f"{archive}:{name}")

            return _assemble(read, source=f"official archive {archive}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read archive {archive}: {exc}") from exc


def load_image_folder(root: Path) -> Dataset:
    """Read `<root>/{train,test}/<class>/*.{png,jpg,jpeg}`; class folders use CLASS_NAMES.

    The training split is shuffled with a fixed seed (folders are grouped by class); the test
    split keeps the folder order.
    """
    root = Path(root)
    (x_train, y_train), (x_test, y_test) = (read_image_split(root, split) for split in ("train", "test"))
    order = np.random.default_rng(0).permutation(len(x_train))
    return Dataset(x_train[order], y_train[order], x_test, y_test, source=f"image folder {root}")


def read_image_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from cifar_core.data.images import ImageError, prepare_image

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


def keras_download_folder() -> Optional[Path]:
    """Where keras.datasets.cifar10.load_data() extracted the batches, if it has."""
    homes = [Path(os.environ["KERAS_HOME"])] if os.environ.get("KERAS_HOME") else []
    homes += [Path.home() / ".keras", Path("/tmp/.keras")]
    for home in homes:
        folder = home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
        if (folder / "test_batch").is_file():
            return folder
    return None
