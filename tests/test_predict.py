"""Tests for cifar_core.insight.predict: every upload format and mode, every bad upload, and the model-side
helpers on the real (untrained) assignment model. All images are made here with Pillow."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from cifar_core.data import CLASS_NAMES, INPUT_SHAPE, NUM_CLASSES, make_synthetic
from cifar_core.insight.predict import (
    LOW_CONFIDENCE, MAX_IMAGE_PIXELS, MAX_OCCLUSION_VARIANTS, MAX_UPLOAD_BYTES, ImageError,
    decode_image, first_four, is_low_confidence, occlusion_map, overlay_heatmap,
    predict_proba, prepare_image, to_model_input, top_k,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


# --- helpers that make image bytes ---------------------------------------------------------


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def handmade_png(width: int, height: int, bit_depth: int, colour_type: int, row: bytes) -> bytes:
    """A PNG Pillow cannot write itself (e.g. 16-bit RGB): every row is `row`, filter 0."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for _ in range(height)))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def with_declared_size(png: bytes, width: int, height: int) -> bytes:
    """The same PNG with its IHDR claiming width x height (CRC fixed, so only the size lies)."""
    assert png[12:16] == b"IHDR"
    body = png[16:29]
    body = struct.pack(">II", width, height) + body[8:]
    return png[:8] + png_chunk(b"IHDR", body) + png[33:]


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Incompressible pixels, so a cut anywhere lands inside the pixel data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def model_input(data: bytes, name: str = "test") -> np.ndarray:
    _, x = prepare_image(data, name)
    assert x.shape == INPUT_SHAPE and x.dtype == np.uint8
    return x


def assert_colour(x: np.ndarray, colour, tol: int = 6) -> None:
    diff = np.abs(x.reshape(-1, 3).astype(int) - np.array(colour)).max()
    assert diff <= tol, f"expected every pixel ~{colour}, max difference {diff}; first pixel {x[0, 0]}"


# --- formats and modes ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt, options, tol", [
    ("PNG", {}, 0),
    ("JPEG", {"quality": 95}, 6),
    ("WEBP", {"lossless": True}, 0),
    ("BMP", {}, 0),
    ("GIF", {}, 0),
])
def test_each_format_decodes_to_its_colour(fmt, options, tol):
    data = encode(Image.new("RGB", (48, 40), RED), fmt, **options)
    img, x = prepare_image(data, f"red.{fmt.lower()}")
    assert img.mode == "RGB" and img.size == (48, 40)  # the original, not yet resized
    assert_colour(x, RED, tol)


def test_alpha_is_composited_over_white():
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    im.paste((255, 0, 0, 255), (16, 0, 32, 32))
    x = model_input(encode(im, "PNG"))
    assert_colour(x[:, :14], WHITE, 0)  # fully transparent -> white, not black or red
    assert_colour(x[:, 18:], RED, 0)
    half = model_input(encode(Image.new("RGBA", (8, 8), (255, 0, 0, 128)), "PNG"))
    assert_colour(half, (255, 127, 127), 2)


@pytest.mark.parametrize("mode, colour, expected", [
    ("L", 100, (100, 100, 100)),
    ("LA", (100, 255), (100, 100, 100)),
    ("LA", (100, 0), WHITE),
    ("1", 1, WHITE),
    ("1", 0, (0, 0, 0)),
])
def test_grayscale_modes(mode, colour, expected):
    x = model_input(encode(Image.new(mode, (20, 20), colour), "PNG"))
    assert_colour(x, expected, 0)


def palette_image() -> Image.Image:
    im = Image.new("P", (32, 32), 0)
    im.putpalette([0, 255, 0] + list(RED) + [0] * (256 * 3 - 6))
    im.paste(1, (16, 0, 32, 32))
    return im


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_composites_to_white(fmt):
    x = model_input(encode(palette_image(), fmt, transparency=0))
    assert_colour(x[:, :14], WHITE, 0)  # index 0 is green in the palette but transparent
    assert_colour(x[:, 18:], RED, 0)


def test_palette_without_transparency_keeps_palette_colours():
    x = model_input(encode(palette_image(), "PNG"))
    assert_colour(x[:, :14], (0, 255, 0), 0)


@pytest.mark.parametrize("pixels, key, kept", [
    (np.array([[(255, 0, 0), (0, 0, 255)]], np.uint8), (255, 0, 0), (0, 0, 255)),  # RGB colour key
    (np.array([[50, 200]], np.uint8), 50, (200, 200, 200)),  # 8-bit gray key
    (np.array([[5000, 128 * 257]], np.uint16), 5000, (128, 128, 128)),  # 16-bit gray key
])
def test_png_transparency_keys_composite_to_white(pixels, key, kept):
    data = encode(Image.fromarray(np.repeat(np.repeat(pixels, 8, axis=0), 8, axis=1)), "PNG", transparency=key)
    arr = np.asarray(decode_image(data, "keyed.png"))
    assert_colour(arr[:, :8], WHITE, 0)
    assert_colour(arr[:, 8:], kept, 0)


def test_16bit_rgb_png_is_scaled_not_clipped():
    red = handmade_png(8, 8, 16, 2, b"\xff\xff\x00\x00\x00\x00" * 8)
    assert_colour(model_input(red), RED, 0)
    dim = handmade_png(8, 8, 16, 2, b"\x80\x80\x40\x40\x00\x00" * 8)  # 0x8080 = 128 * 257
    assert_colour(model_input(dim), (128, 64, 0), 1)


def test_16bit_grayscale_png_is_scaled_not_clipped():
    values = np.full((16, 16), 128 * 257, dtype=np.uint16)  # clipping would give 255
    values[:, 8:] = 65535
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode in ("I", "I;16")
    img = decode_image(data, "gray16.png")
    arr = np.asarray(img)
    assert_colour(arr[:, :8], (128, 128, 128), 0)
    assert_colour(arr[:, 8:], WHITE, 0)


def test_16bit_rgba_png_with_half_alpha():
    data = handmade_png(8, 8, 16, 6, b"\xff\xff\x00\x00\x00\x00\x80\x00" * 8)
    assert_colour(model_input(data), (255, 127, 127), 2)


def test_wide_integer_modes_given_directly_are_scaled():
    for mode in ("I", "I;16"):
        im = Image.new(mode, (8, 8), 32896)  # 128 * 257
        assert_colour(to_model_input(im), (128, 128, 128), 0)


def test_cmyk_jpeg_comes_out_red():
    data = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    x = model_input(data).astype(int)
    assert x[..., 0].min() > 200 and x[..., 1:].max() < 60


def test_exif_orientation_is_applied():
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:10] = RED  # top half red as stored
    stored[10:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)
    img = decode_image(data, "phone.jpg")
    assert img.size == (20, 40)  # width and height swapped
    arr = np.asarray(img)
    assert_colour(arr[:, 15:], RED, 8)  # the stored top is now the right-hand side
    assert_colour(arr[:, :5], BLUE, 8)


@pytest.mark.parametrize("fmt, options", [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_animation_uses_the_first_frame(fmt, options):
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE, (0, 255, 0))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert_colour(model_input(data), RED, 0)


def test_non_square_is_center_cropped():
    wide = np.zeros((32, 96, 3), dtype=np.uint8)
    wide[:, :32] = BLUE
    wide[:, 32:64] = RED
    wide[:, 64:] = (0, 255, 0)
    x = model_input(encode(Image.fromarray(wide), "PNG"))
    assert_colour(x, RED, 0)
    tall = np.zeros((96, 32, 3), dtype=np.uint8)
    tall[32:64] = RED
    assert_colour(model_input(encode(Image.fromarray(tall), "PNG")), RED, 0)


def test_large_photo_is_downscaled_smoothly():
    # 1-pixel stripes average to mid-gray with a proper filter; nearest would keep black/white.
    stripes = np.zeros((1200, 1600, 3), dtype=np.uint8)
    stripes[::2] = 255
    img, x = prepare_image(encode(Image.fromarray(stripes), "PNG"), "stripes.png")
    assert img.size == (1600, 1200)
    assert 100 < x.mean() < 155 and x.std() < 20


def test_to_model_input_returns_a_fresh_writable_array():
    img = Image.new("RGB", (32, 32), RED)
    x = to_model_input(img)
    assert x.flags.writeable and x.flags.c_contiguous
    x[:] = 0
    assert img.getpixel((0, 0)) == RED
    with pytest.raises(TypeError):
        to_model_input(np.zeros((32, 32, 3), np.uint8))


# --- bad uploads ---------------------------------------------------------------------------


def test_empty_bytes():
    with pytest.raises(ImageError, match=r"^x\.png is empty \(0 bytes\)$"):
        decode_image(b"", "x.png")


def test_text_file_is_not_an_image():
    with pytest.raises(ImageError, match=r"notes\.txt is not an image file Pillow can read"):
        decode_image(b"hello, this is not a picture\n" * 20, "notes.txt")


def test_unsupported_format_is_refused_clearly():
    with pytest.raises(ImageError, match=r"scan\.tif is not an image .*PNG, JPEG, WebP, BMP or GIF"):
        decode_image(encode(Image.new("RGB", (8, 8)), "TIFF"), "scan.tif")


def test_too_many_bytes_is_refused_before_parsing():
    with pytest.raises(ImageError, match=r"big\.png is 30\.1 MB; the limit is 10 MB"):
        decode_image(b"\x00" * int(30.1 * 1024 * 1024), "big.png")
    with pytest.raises(ImageError, match=r"10,485,761 bytes; the limit is 10 MB"):
        decode_image(b"\x00" * (MAX_UPLOAD_BYTES + 1), "edge.png")
    small = encode(noise(64, 64), "PNG")
    with pytest.raises(ImageError, match="the limit is"):
        decode_image(small, "small.png", max_bytes=len(small) - 1)
    assert decode_image(small, "small.png", max_bytes=len(small)).size == (64, 64)


@pytest.mark.parametrize("fmt, cut", [("PNG", 0.5), ("PNG", 0.97), ("JPEG", 0.5), ("JPEG", 0.97)])
def test_truncated_files(fmt, cut):
    data = encode(noise(96, 96), fmt, quality=95)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageError, match=r"cut\.\w+ is truncated or corrupt"):
        decode_image(data[: int(len(data) * cut)], f"cut.{fmt.lower()}")


@pytest.mark.parametrize("width, height, shown", [
    (100_000, 100_000, r"declares 10,000 megapixels"),  # beyond Pillow's own hard limit
    (10_000, 10_000, r"declares 100 megapixels"),  # Pillow's warning range
    (8_000, 6_000, r"declares 8000x6000 pixels"),  # only our limit
])
def test_decompression_bombs_are_refused_before_decoding(width, height, shown):
    bomb = with_declared_size(encode(Image.new("RGB", (4, 4)), "PNG"), width, height)
    assert len(bomb) < 200
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=rf"^bomb\.png {shown}; the limit is {MAX_IMAGE_PIXELS / 1e6:g} megapixels$"):
        decode_image(bomb, "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # Pillow's global was left alone


def test_pixel_limit_is_a_parameter():
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(ImageError, match=r"declares 64x64 pixels; the limit is 0.001 megapixels"):
        decode_image(data, "a.png", max_pixels=1000)


def test_non_bytes_is_a_programming_error():
    with pytest.raises(TypeError):
        decode_image("photo.png")  # type: ignore[arg-type]


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def _seed_files() -> list[bytes]:
    small = noise(12, 10, seed=3)
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, BLUE)]
    return [
        encode(small, "PNG"),
        encode(small.convert("RGBA"), "PNG"),
        encode(small, "JPEG", quality=80),
        encode(small, "GIF"),
        encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        encode(small, "BMP"),
        encode(small, "WEBP"),
    ]


SEEDS = _seed_files()


@st.composite
def mutated_files(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@st.composite
def png_with_lying_chunk(draw) -> bytes:
    """Mutate the body of one PNG chunk and fix its CRC, so the lie reaches the decoder."""
    data = SEEDS[0]
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        chunks.append([data[pos + 4:pos + 8], bytearray(data[pos + 8:pos + 8 + length])])
        pos += 12 + length
    kind, body = chunks[draw(st.integers(0, len(chunks) - 1))]
    for _ in range(draw(st.integers(1, 4))):
        if body:
            body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(bytes(k), bytes(b)) for k, b in chunks)


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 "]
hostile_bytes = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=512)),
    mutated_files(),
    png_with_lying_chunk(),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_bytes)
def test_hostile_bytes_give_image_error_or_a_valid_input(data):
    try:
        _, x = prepare_image(data, "fuzz.bin")
    except ImageError as exc:
        assert str(exc).startswith("fuzz.bin ")
        return
    assert x.shape == INPUT_SHAPE and x.dtype == np.uint8


def test_module_imports_without_tensorflow():
    code = (
        "import sys, cifar_core.insight.predict\n"
        "bad = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- model-side helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    from cifar_core.config import TrainConfig
    from cifar_core.models import build_model

    return build_model(TrainConfig())


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(200, 50)


def test_predict_proba_shapes_and_sums(model, dataset):
    probs = predict_proba(model, dataset.x_test[:7])
    assert probs.shape == (7, NUM_CLASSES) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    one = predict_proba(model, dataset.x_test[3])
    assert one.shape == (1, NUM_CLASSES)
    np.testing.assert_allclose(one[0], probs[3], atol=1e-5)
    assert predict_proba(model, np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, NUM_CLASSES)


@pytest.mark.parametrize("shape", [(32, 32), (2, 28, 28, 3), (32, 32, 4), (1, 1, 32, 32, 3)])
def test_predict_proba_refuses_wrong_shapes(model, shape):
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        predict_proba(model, np.zeros(shape, np.uint8))


def test_uploaded_photo_end_to_end(model):
    _, x = prepare_image(encode(noise(300, 200), "JPEG", quality=85), "photo.jpg")
    (probs,) = predict_proba(model, x)
    assert probs.shape == (NUM_CLASSES,) and probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert top_k(probs, 1)[0] == (CLASS_NAMES[int(np.argmax(probs))], pytest.approx(float(probs.max())))


def test_top_k():
    probs = np.array([0.05, 0.1, 0.4, 0.05, 0.0, 0.2, 0.05, 0.05, 0.05, 0.05])
    names = [name for name, _ in top_k(probs, 3)]
    assert names == ["bird", "dog", "automobile"]
    values = [p for _, p in top_k(probs, NUM_CLASSES)]
    assert values == sorted(values, reverse=True)
    assert len(top_k(probs, 50)) == NUM_CLASSES
    # Ties keep CLASS_NAMES order, so the display never flickers between equal classes.
    assert [n for n, _ in top_k(np.full(NUM_CLASSES, 0.1), 3)] == list(CLASS_NAMES[:3])
    with pytest.raises(ValueError, match="k must be"):
        top_k(probs, 0)
    with pytest.raises(ValueError, match="10 numbers"):
        top_k(probs[:5])


def test_low_confidence():
    unsure = np.full(NUM_CLASSES, 0.1)
    sure = np.eye(NUM_CLASSES)[4]
    assert is_low_confidence(unsure) and not is_low_confidence(sure)
    edge = np.zeros(NUM_CLASSES)
    edge[0], edge[1] = LOW_CONFIDENCE, 1 - LOW_CONFIDENCE
    assert not is_low_confidence(edge)  # exactly at the threshold is not "unsure"


def test_first_four_matches_argmax(model, dataset):
    rows = first_four(model, dataset)
    probs = predict_proba(model, dataset.x_test[:4])
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    keys = {"index", "image", "true_label", "true_name", "predicted_label", "predicted_name",
            "confidence", "correct"}
    for row, p in zip(rows, probs):
        assert set(row) == keys
        i = row["index"]
        assert row["image"].shape == INPUT_SHAPE and row["image"].dtype == np.uint8
        np.testing.assert_array_equal(row["image"], dataset.x_test[i])
        assert row["true_label"] == int(dataset.y_test[i])
        assert row["true_name"] == CLASS_NAMES[row["true_label"]]
        assert row["predicted_label"] == int(np.argmax(p))
        assert row["predicted_name"] == CLASS_NAMES[row["predicted_label"]]
        assert row["confidence"] == pytest.approx(float(p.max()), abs=1e-5)
        assert row["correct"] is (row["predicted_label"] == row["true_label"])
    assert len(first_four(model, dataset, n=1000)) == len(dataset.x_test)
    with pytest.raises(ValueError, match="n must be"):
        first_four(model, dataset, n=0)


def test_occlusion_map_on_the_real_model(model, dataset):
    heat = occlusion_map(model, dataset.x_test[0])
    assert heat.shape == (32, 32) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1
    assert heat.max() in (0.0, 1.0)  # normalised, or nothing hurt at all
    assert occlusion_map(model, dataset.x_test[0], label=9, patch=8, stride=4).shape == (32, 32)


class TopLeftModel:
    """A stand-in model whose class 0 depends only on the top-left 8x8 pixels' brightness."""

    def __init__(self):
        self.calls = 0

    def predict(self, x, verbose=0, batch_size=None):
        self.calls += 1
        brightness = np.asarray(x, np.float32)[:, :8, :8, :].mean(axis=(1, 2, 3)) / 255
        first = 0.1 + 0.8 * brightness
        rest = np.repeat(((1 - first) / (NUM_CLASSES - 1))[:, None], NUM_CLASSES - 1, axis=1)
        return np.concatenate([first[:, None], rest], axis=1)

    def predict_on_batch(self, x):
        return self.predict(x)


def test_occlusion_map_finds_the_region_that_matters_in_one_call():
    stand_in = TopLeftModel()
    heat = occlusion_map(stand_in, np.full(INPUT_SHAPE, 255, np.uint8))
    assert stand_in.calls == 1  # every occluded copy went in one batch
    assert heat[:8, :8].max() == 1.0
    assert heat[10:, :].max() == 0 and heat[:, 10:].max() == 0


def test_occlusion_map_refuses_bad_arguments(model, dataset):
    image = dataset.x_test[0]
    with pytest.raises(ValueError, match="patch"):
        occlusion_map(model, image, patch=0)
    with pytest.raises(ValueError, match="stride"):
        occlusion_map(model, image, stride=40)
    with pytest.raises(ValueError, match="label"):
        occlusion_map(model, image, label=10)
    with pytest.raises(ValueError, match=str(MAX_OCCLUSION_VARIANTS)):
        occlusion_map(model, image, patch=2, stride=1)
    with pytest.raises(ValueError, match="shape"):
        occlusion_map(model, image[:16])


def test_overlay_heatmap():
    image = np.zeros(INPUT_SHAPE, np.uint8)
    image[:] = (0, 0, 200)
    heat = np.zeros((32, 32), np.float32)
    heat[:, 16:] = 1.0
    out = overlay_heatmap(image, heat)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (256, 256)
    arr = np.asarray(out).astype(int)
    np.testing.assert_array_equal(arr[:, :100], np.broadcast_to((0, 0, 200), (256, 100, 3)))
    assert arr[:, 160:, 0].min() > 100 and arr[:, 160:, 2].max() < 120  # heat shows as red
    assert overlay_heatmap(image, heat, size=64).size == (64, 64)
    with pytest.raises(ValueError, match="heat must have shape"):
        overlay_heatmap(image, heat[:8])
