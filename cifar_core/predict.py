"""Turning uploaded bytes into the model's 32x32 input, and predictions with class names.

Nothing here imports TensorFlow or Keras: pages import this module without a model, and only
the functions that take a model ever call it (through `model.predict`).
"""
from __future__ import annotations

import dataclasses
import io
import re
import warnings
from typing import Any, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import CLASS_NAMES, INPUT_SHAPE, NUM_CLASSES, Dataset

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # larger uploads are refused before Pillow sees them
MAX_IMAGE_PIXELS = 40_000_000  # declared width * height above this is refused before decoding
# Formats a browser upload is expected to be; narrowing Image.open also narrows what hostile
# bytes can reach (Pillow has ~40 decoders, most never meant for an upload box).
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
ACCEPTED_FORMATS_TEXT = "PNG, JPEG, WebP, BMP or GIF"
LOW_CONFIDENCE = 0.5  # a top probability below this is shown as "the model is unsure"
PREDICT_BATCH_SIZE = 256  # images per model.predict step; one occlusion map fits in one step
OCCLUSION_FILL = 128  # raw pixel value of the gray patch (mid-gray, the model rescales inside)
MAX_OCCLUSION_VARIANTS = 256  # occluded copies per map; keeps one map to one cheap predict call
BACKGROUND_RGB = (255, 255, 255)  # transparent pixels are shown to the model as white paper

_MODEL_SIDE = INPUT_SHAPE[0]
_BYTES_PER_MB = 1024 * 1024


class ImageError(ValueError):
    """An upload cannot be used as an image; the message is one sentence naming the problem."""


# --- bytes -> image -----------------------------------------------------------------------


DECODE_PIXELS = 512  # JPEGs decode at no less than this a side; previews are shown at most this large


def decode_image(
    data: bytes,
    name: str = "image",
    *,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode uploaded bytes into an RGB image, upright per its EXIF orientation, at least 512 px a side for JPEG (decoded at reduced scale), else full size.

    Args:
      data: the file's bytes (PNG, JPEG, WebP, BMP or GIF; only an animation's first frame).
      name: the file name, used only in error messages.
      max_bytes: refuse larger uploads without parsing them.
      max_pixels: refuse images whose header declares more pixels, before decoding them.
    Returns:
      A loaded RGB image: alpha and palette transparency are composited over white, grayscale
      is expanded, 16-bit samples are scaled (not clipped) to 8 bits, CMYK is converted.
    Raises:
      ImageError: the bytes are empty, too large, not a supported image, declare too many
        pixels, or are truncated or corrupt. Whatever Pillow raises on hostile bytes comes out
        as ImageError.
      TypeError: `data` is not bytes-like (a programming error, not a bad upload).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image needs the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ImageError(f"{name} is empty (0 bytes)")
    if len(data) > max_bytes:
        size, limit = _size_texts(len(data), max_bytes)
        raise ImageError(f"{name} is {size}; the limit is {limit}")
    try:
        # Only the bomb warning becomes an error, and only inside this block; our own
        # max_pixels check below is the real limit (Pillow's default is ~89 megapixels).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as im:
                width, height = im.size
                if width <= 0 or height <= 0:
                    raise ImageError(f"{name} declares {width}x{height} pixels, which is no image at all")
                if width * height > max_pixels:
                    raise ImageError(
                        f"{name} declares {width}x{height} pixels; "
                        f"the limit is {max_pixels / 1e6:g} megapixels"
                    )
                if im.format == "JPEG":
                    # Let libjpeg decode at 1/2..1/8 scale, never below DECODE_PIXELS a side: a
                    # 12 MP photo decodes ~8x faster and nothing we show or feed needs more.
                    im.draft(None, (DECODE_PIXELS, DECODE_PIXELS))
                im.load()  # decodes frame 0 only; truncation and corruption surface here
                return _to_rgb(_upright(im))
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name} is not an image file Pillow can read as {ACCEPTED_FORMATS_TEXT}"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name} {_bomb_size_text(exc)}; the limit is {max_pixels / 1e6:g} megapixels") from exc
    except MemoryError as exc:
        raise ImageError(f"{name} is too large to decode in the memory available") from exc
    except Exception as exc:  # noqa: BLE001 - hostile bytes make Pillow raise nearly any type
        raise ImageError(f"{name} is truncated or corrupt; Pillow could not decode it ({_short(exc)})") from exc


def to_model_input(img: Image.Image) -> np.ndarray:
    """The model's input for `img`: center square crop, LANCZOS down to 32x32, uint8 RGB."""
    if not isinstance(img, Image.Image):
        raise TypeError(f"to_model_input needs a PIL image, got {type(img).__name__}")
    rgb = _to_rgb(img)
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    # reducing_gap first shrinks by whole factors (cheap, box filter) then LANCZOS-resamples;
    # the result is indistinguishable from pure LANCZOS and a 40 MP photo stays fast.
    small = rgb.resize(
        (_MODEL_SIDE, _MODEL_SIDE), Image.Resampling.LANCZOS,
        box=(left, top, left + side, top + side), reducing_gap=3.0,
    )
    return np.array(small, dtype=np.uint8).reshape(INPUT_SHAPE)


def prepare_image(data: bytes, name: str = "image") -> tuple[Image.Image, np.ndarray]:
    """Decode an upload and make the model's input: (full RGB image, (32, 32, 3) uint8)."""
    img = decode_image(data, name)
    return img, to_model_input(img)


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a damaged EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - bad metadata should not cost the user a good picture
        return im.copy()


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, with transparency composited over white."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _wide_gray_to_rgb(im)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info
    if has_alpha:
        # convert("RGBA") applies palette transparency and RGB/L colour keys too.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _wide_gray_to_rgb(im: Image.Image) -> Image.Image:
    """16/32-bit grayscale -> RGB by scaling 0..65535 to 0..255 (convert('L') would clip)."""
    values = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        gray = values  # float images are taken as 0..255; none of the accepted formats make them
    else:
        # PNG is the only accepted format with >8-bit samples, and its 16-bit grayscale opens
        # as I;16 or I: full scale is 65535 either way, so scale by 255/65535 = 1/257.
        gray = values / 257.0
    gray = np.clip(np.rint(np.nan_to_num(gray)), 0, 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    key = im.info.get("transparency")
    if isinstance(key, int) and not isinstance(key, bool):
        rgb[values == key] = BACKGROUND_RGB  # a tRNS colour key marks fully transparent pixels
    return Image.fromarray(rgb)


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _bomb_size_text(exc: Exception) -> str:
    """'declares N megapixels' from Pillow's bomb message, which carries the pixel count."""
    found = _BOMB_PIXELS.search(str(exc))
    if found is None:
        return "declares more pixels than Pillow will decode"
    return f"declares {int(found.group(1)) / 1e6:,.0f} megapixels"


def _size_texts(num_bytes: int, limit_bytes: int) -> tuple[str, str]:
    """('30.1 MB', '10 MB'), or exact bytes where one decimal would make them look equal."""
    size, limit = num_bytes / _BYTES_PER_MB, limit_bytes / _BYTES_PER_MB
    if f"{size:.1f}" == f"{limit:.1f}":
        return f"{num_bytes:,} bytes", f"{limit:g} MB ({limit_bytes:,} bytes)"
    return f"{size:.1f} MB", f"{limit:g} MB"


def _short(exc: BaseException, limit: int = 120) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- model -> probabilities ---------------------------------------------------------------


def predict_proba(model: Any, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 10) float32 for raw-pixel images (N, 32, 32, 3) or one (32, 32, 3)."""
    x = np.asarray(images)
    if x.ndim == len(INPUT_SHAPE):
        x = x[None]
    if x.ndim != len(INPUT_SHAPE) + 1 or x.shape[1:] != INPUT_SHAPE:
        raise ValueError(
            f"images must have shape (N, 32, 32, 3) or (32, 32, 3) with raw 0..255 pixels, "
            f"got {tuple(np.shape(images))}"
        )
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"images must be numeric pixels, got dtype {x.dtype}")
    if len(x) == 0:
        return np.zeros((0, NUM_CLASSES), dtype=np.float32)
    # float32 is what the model computes in; uint8 in, rescaling happens inside the model.
    x = x.astype(np.float32)
    if len(x) <= PREDICT_BATCH_SIZE:
        # One compiled call: model.predict builds an iterator and callbacks each time
        # (bench/predict_latency.py: ~55 ms vs ~3.5 ms p50 for one image on this CPU).
        probs = np.asarray(model.predict_on_batch(x))
    else:
        probs = np.asarray(model.predict(x, verbose=0, batch_size=PREDICT_BATCH_SIZE))
    if probs.shape != (len(x), NUM_CLASSES):
        raise ValueError(f"the model returned shape {probs.shape}; expected ({len(x)}, {NUM_CLASSES})")
    return probs.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The model's answer for one image: the top class and every class's probability."""

    label: int  # index into CLASS_NAMES of the most probable class
    class_name: str  # CLASS_NAMES[label]
    confidence: float  # probability of `label`, 0..1
    probabilities: tuple[float, ...]  # one per class, in CLASS_NAMES order

    @classmethod
    def from_probabilities(cls, probs: Union[np.ndarray, Sequence[float]]) -> "Prediction":
        p = _check_probs(probs)
        label = int(np.argmax(p))
        return cls(label, CLASS_NAMES[label], float(p[label]), tuple(float(v) for v in p))

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        return top_k(np.asarray(self.probabilities), k)

    @property
    def is_low_confidence(self) -> bool:
        return self.confidence < LOW_CONFIDENCE


def predict_images(model: Any, images: np.ndarray) -> list[Prediction]:
    """One Prediction per image of (N, 32, 32, 3) or a single (32, 32, 3)."""
    return [Prediction.from_probabilities(p) for p in predict_proba(model, images)]


def top_k(probs: Union[np.ndarray, Sequence[float]], k: int = 3) -> list[tuple[str, float]]:
    """The k most probable (class name, probability), highest first; ties keep class order."""
    p = _check_probs(probs)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    order = np.argsort(-p, kind="stable")[: min(int(k), NUM_CLASSES)]
    return [(CLASS_NAMES[i], float(p[i])) for i in order]


def is_low_confidence(probs: Union[np.ndarray, Sequence[float], Prediction]) -> bool:
    """True when the top probability is below LOW_CONFIDENCE."""
    if isinstance(probs, Prediction):
        return probs.is_low_confidence
    return float(np.max(_check_probs(probs))) < LOW_CONFIDENCE


def _check_probs(probs: Union[np.ndarray, Sequence[float]]) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.shape != (NUM_CLASSES,):
        raise ValueError(f"probabilities must be {NUM_CLASSES} numbers, one per class, got shape {np.shape(probs)}")
    return p


def first_four(model: Any, dataset: Dataset, n: int = 4) -> list[dict[str, Any]]:
    """The assignment's step 4: predict the first n test images and compare with the truth.

    Returns one dict per image with index, image (uint8 32x32x3), true_label, true_name,
    predicted_label, predicted_name, confidence and correct.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    images = np.asarray(dataset.x_test[:n])
    truths = np.asarray(dataset.y_test[:n]).reshape(-1)
    if len(images) == 0:
        raise ValueError("the dataset has no test images")
    probs = predict_proba(model, images)
    rows = []
    for i, (image, truth, p) in enumerate(zip(images, truths, probs)):
        predicted = int(np.argmax(p))
        rows.append({
            "index": i,
            "image": np.asarray(image, dtype=np.uint8),
            "true_label": int(truth),
            "true_name": CLASS_NAMES[int(truth)],
            "predicted_label": predicted,
            "predicted_name": CLASS_NAMES[predicted],
            "confidence": float(p[predicted]),
            "correct": predicted == int(truth),
        })
    return rows


# --- why: occlusion sensitivity -----------------------------------------------------------


def occlusion_map(
    model: Any,
    image: np.ndarray,
    label: Optional[int] = None,
    patch: int = 4,
    stride: int = 2,
) -> np.ndarray:
    """How much hiding each region with a gray patch lowers the probability of `label`.

    Args:
      model: a model taking raw pixels (N, 32, 32, 3) and returning probabilities.
      image: one (32, 32, 3) image of raw pixels.
      label: the class to explain; None explains the model's own prediction.
      patch: side of the square gray patch, in pixels.
      stride: step between patch positions, in pixels.
    Returns:
      (32, 32) float32 in [0, 1]: 1 where hiding hurts the class most, 0 where it does not
      hurt (regions whose hiding raises the probability count as 0). All zeros if nothing hurts.
    """
    x = np.asarray(image)
    if x.shape != INPUT_SHAPE:
        raise ValueError(f"image must have shape {INPUT_SHAPE}, got {x.shape}")
    side = _MODEL_SIDE
    for field, value in (("patch", patch), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= side:
            raise ValueError(f"{field} must be an integer between 1 and {side}, got {value!r}")
    if label is not None and (isinstance(label, bool) or not isinstance(label, (int, np.integer))
                              or not 0 <= label < NUM_CLASSES):
        raise ValueError(f"label must be a class index 0..{NUM_CLASSES - 1} or None, got {label!r}")
    starts = list(range(0, side - patch + 1, stride))
    if starts[-1] != side - patch:
        starts.append(side - patch)  # so the last rows and columns are covered too
    positions = [(top, left) for top in starts for left in starts]
    if len(positions) > MAX_OCCLUSION_VARIANTS:
        raise ValueError(
            f"patch={patch}, stride={stride} makes {len(positions)} occluded copies; the limit is "
            f"{MAX_OCCLUSION_VARIANTS}: use a larger stride or patch"
        )
    batch = np.repeat(x[None].astype(np.float32), len(positions) + 1, axis=0)
    for i, (top, left) in enumerate(positions, start=1):
        batch[i, top:top + patch, left:left + patch, :] = OCCLUSION_FILL
    probs = predict_proba(model, batch)  # the original and every occluded copy in one call
    target = int(np.argmax(probs[0])) if label is None else int(label)
    drops = np.maximum(probs[0, target] - probs[1:, target], 0.0)
    total = np.zeros((side, side), dtype=np.float64)
    covered = np.zeros((side, side), dtype=np.float64)
    for drop, (top, left) in zip(drops, positions):
        total[top:top + patch, left:left + patch] += drop
        covered[top:top + patch, left:left + patch] += 1
    heat = total / np.maximum(covered, 1)
    peak = heat.max()
    return (heat / peak if peak > 0 else heat).astype(np.float32)


def overlay_heatmap(image_uint8_32: np.ndarray, heat: np.ndarray, size: int = 256) -> Image.Image:
    """An upscaled RGB picture of `image` with `heat` (0..1, same height and width) in red."""
    img = np.asarray(image_uint8_32)
    h = np.asarray(heat, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {img.shape}")
    if h.shape != img.shape[:2]:
        raise ValueError(f"heat must have shape {img.shape[:2]} to match the image, got {h.shape}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= 4096:
        raise ValueError(f"size must be an integer between 1 and 4096 pixels, got {size!r}")
    h = np.clip(np.nan_to_num(h), 0.0, 1.0)
    # Nearest keeps the 32x32 pixels honest; the heat is smooth, so bilinear suits it.
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    heat_big = Image.fromarray(np.rint(h * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR)
    alpha = (np.asarray(heat_big, dtype=np.float32) / 255.0 * 0.6)[..., None]  # 0.6: the photo stays visible
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    mixed = np.asarray(base, dtype=np.float32) * (1 - alpha) + red * alpha
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
