"""Predictions with class names: probabilities, top-k, the first four test images, occlusion maps.

Nothing here imports TensorFlow or Keras: pages import this module without a model, and only
the functions that take a model ever call it (through `model.predict`). Decoding uploads lives
in `cifar_core.data.images` (re-exported here for the pages).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
from PIL import Image

from cifar_core.data import Dataset
from cifar_core.data.images import (
    ACCEPTED_FORMATS, ACCEPTED_FORMATS_TEXT, MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES, ImageError,
    decode_image, prepare_image, to_model_input,
)
from cifar_core.data.labels import CLASS_NAMES, INPUT_SHAPE, NUM_CLASSES

LOW_CONFIDENCE = 0.5  # a top probability below this is shown as "the model is unsure"
PREDICT_BATCH_SIZE = 256  # images per model.predict step; one occlusion map fits in one step
OCCLUSION_FILL = 128  # raw pixel value of the gray patch (mid-gray, the model rescales inside)
MAX_OCCLUSION_VARIANTS = 256  # occluded copies per map; keeps one map to one cheap predict call

_MODEL_SIDE = INPUT_SHAPE[0]


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


def top_k(probs: Union[np.ndarray, Sequence[float]], k: int = 3) -> list[tuple[str, float]]:
    """The k most probable (class name, probability), highest first; ties keep class order."""
    p = _check_probs(probs)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    order = np.argsort(-p, kind="stable")[: min(int(k), NUM_CLASSES)]
    return [(CLASS_NAMES[i], float(p[i])) for i in order]


def is_low_confidence(probs: Union[np.ndarray, Sequence[float]]) -> bool:
    """True when the top probability is below LOW_CONFIDENCE."""
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
