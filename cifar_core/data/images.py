"""Turning image bytes (an upload, a file of an image-folder dataset) into the model's 32x32
uint8 input: bounded sizes, upright, alpha over white, centre square, LANCZOS. No TensorFlow."""
from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cifar_core.data.labels import INPUT_SHAPE

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # larger uploads are refused before Pillow sees them
MAX_IMAGE_PIXELS = 40_000_000  # declared width * height above this is refused before decoding
# Formats a browser upload is expected to be; narrowing Image.open also narrows what hostile
# bytes can reach (Pillow has ~40 decoders, most never meant for an upload box).
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
ACCEPTED_FORMATS_TEXT = "PNG, JPEG, WebP, BMP or GIF"
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


# --- pictures of explanations (Grad-CAM, occlusion, feature maps) ----------------------------


def _jet(values: np.ndarray) -> np.ndarray:
    """The classic 'jet' colour map of values in [0, 1]: blue (0) through green to red (1), 0..255."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # where red, green and blue peak
    return np.clip(1.5 - np.abs(4.0 * (v - centres)), 0.0, 1.0) * 255.0


def heat_overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.5, size: int = 256) -> Image.Image:
    """`image` (H, W, 3 uint8) enlarged to `size` pixels with `heat` (H, W in [0, 1]) over it in the jet
    colour map; `opacity` 0 shows only the picture, 1 only the map."""
    img = np.asarray(image)
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, 1.0)
    if img.ndim != 3 or img.shape[2] != 3 or h.shape != img.shape[:2]:
        raise ValueError(f"need an (H, W, 3) image and an (H, W) map, got {img.shape} and {h.shape}")
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"opacity must be between 0 and 1, got {opacity!r}")
    # Nearest keeps the 32x32 pixels honest; the map is smooth, so bilinear suits it.
    base = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    heat_big = Image.fromarray(h, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    mixed = np.asarray(base, dtype=np.float32) * (1 - opacity) + _jet(np.asarray(heat_big)) * opacity
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))


def feature_grid(maps: np.ndarray, columns: int = 8, tile: int = 64, gap: int = 2) -> Image.Image:
    """Feature maps (C, H, W) as one grayscale picture: a grid of `columns` tiles of `tile` pixels,
    each map scaled to its own range (bright = strong), separated by `gap` white pixels."""
    m = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    if m.ndim != 3 or len(m) == 0:
        raise ValueError(f"maps must be (channels, height, width) with at least one channel, got {m.shape}")
    columns = max(1, min(int(columns), len(m)))
    rows = -(-len(m) // columns)
    sheet = Image.new("L", (columns * (tile + gap) - gap, rows * (tile + gap) - gap), 255)
    for k, fmap in enumerate(m):
        low, high = float(fmap.min()), float(fmap.max())
        scaled = (fmap - low) / (high - low) if high > low else np.zeros_like(fmap)
        picture = Image.fromarray(np.rint(scaled * 255).astype(np.uint8)).resize((tile, tile), Image.Resampling.NEAREST)
        sheet.paste(picture, ((k % columns) * (tile + gap), (k // columns) * (tile + gap)))
    return sheet
