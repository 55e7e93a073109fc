"""Grad-CAM and feature maps on real Keras models: the lab's three networks built small, and a
fixture network with fixed weights that can only see one region of the image. Plus the pictures
(overlay, feature grid), the clickable confusion grid and Browse's URL parameters."""
from __future__ import annotations

import numpy as np
import pytest

from cifar_core.charts import explain as charts_explain
from cifar_core.insight import explain
from cifar_core.data import images
from cifar_core.config import TrainConfig
from cifar_core.data.labels import CLASS_NAMES, INPUT_SHAPE

# The region the fixture model sees: rows 4..11, columns 18..27 (half-open).
TOP, BOTTOM, LEFT, RIGHT = 4, 12, 18, 28
ARCHITECTURES = {  # architecture -> (extra config, the layer Grad-CAM must pick)
    "assignment": ({}, "block3_conv2"),
    "assignment_bn": ({}, "block3_act2"),
    "airbench": ({"widths": (8, 16, 16), "augment": "flip_translate"}, "block3_act2"),
}


def noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, INPUT_SHAPE).astype(np.uint8)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def lab_network(request):
    """(architecture, the network built untrained; airbench's whitening set from noise)."""
    from cifar_core.models import build_network

    extra, _ = ARCHITECTURES[request.param]
    x_train = np.stack([noise(s) for s in range(64)])
    return request.param, build_network(TrainConfig(architecture=request.param, **extra), x_train)


def region_model():
    """Sees only the region: crop it, pad back with zeros, two ReLU convs (the last at 16x16),
    global average, Dense softmax. Fixed weights: class 0 rises with every channel, class 1 falls."""
    import keras
    from keras import layers

    crop = ((TOP, 32 - BOTTOM), (LEFT, 32 - RIGHT))
    pixels = keras.Input(INPUT_SHAPE, name="pixels")
    x = layers.Rescaling(1 / 255, name="rescale")(pixels)
    x = layers.Cropping2D(crop, name="crop")(x)
    x = layers.ZeroPadding2D(crop, name="pad")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    probs = layers.Dense(10, activation="softmax", name="classes")(x)
    model = keras.Model(pixels, probs, name="region")
    rng = np.random.default_rng(7)
    for name in ("conv1", "conv2"):
        kernel, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([np.abs(rng.normal(0.2, 0.1, kernel.shape)).astype("float32"),
                                           np.zeros_like(bias)])
    dense = np.tile(np.linspace(1.0, -1.0, 10, dtype="float32"), (4, 1))  # column 0: +1, column 9: -1
    dense[:, 1] = -1.0
    model.get_layer("classes").set_weights([dense, np.zeros(10, "float32")])
    return model


@pytest.fixture(scope="module")
def region():
    return region_model()


# --- Grad-CAM on the fixture model ------------------------------------------------------------

def test_the_fixture_model_depends_only_on_its_region(region):
    image, other = noise(1), noise(2)
    other[TOP:BOTTOM, LEFT:RIGHT] = image[TOP:BOTTOM, LEFT:RIGHT]
    p = region.predict_on_batch(np.stack([image, other]).astype("float32"))
    np.testing.assert_allclose(p[0], p[1], atol=1e-6)


def test_grad_cam_peaks_in_the_region_the_model_looks_at(region):
    heat = explain.grad_cams(region, noise(1)).maps[0]
    assert heat.shape == INPUT_SHAPE[:2] and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
    top, left = np.unravel_index(np.argmax(heat), heat.shape)
    assert TOP <= top < BOTTOM and LEFT <= left < RIGHT, (top, left)
    inside = np.zeros(heat.shape, bool)
    inside[max(0, TOP - 5):BOTTOM + 5, LEFT - 5:RIGHT + 5] = True  # two 3x3 convs, a pool, upsampling: a blur
    assert heat[inside].sum() / heat.sum() > 0.97
    assert heat[~inside].max() < 0.2


def test_grad_cam_is_the_gradient_weighted_feature_map(region):
    """Grad-CAM of GAP -> Dense is computable by hand: class k's map is ReLU(sum_c W[c, k] A_c)."""
    import keras

    image = noise(3)
    features = keras.Model(region.inputs[0], region.get_layer("conv2").output)(image[None].astype("float32"))
    a = np.asarray(features)[0]  # (16, 16, 4)
    w = region.get_layer("classes").get_weights()[0]
    cams = explain.grad_cams(region, image)
    assert cams.layer == "conv2" and cams.score == "logit" and cams.cells == (16, 16)
    for k in (0, 2, 4):
        expected = explain.normalise(explain.upsample(np.maximum(a @ w[:, k], 0), (32, 32)))
        np.testing.assert_allclose(cams.maps[k], expected, atol=1e-5)


def test_a_class_nothing_speaks_for_gets_an_all_zero_map_not_nan(region):
    cams = explain.grad_cams(region, noise(1))
    assert cams.empty[1] and not cams.empty[0]  # class 1's weights are all negative
    assert np.array_equal(cams.maps[1], np.zeros((32, 32), np.float32))
    black = explain.grad_cams(region, np.zeros(INPUT_SHAPE, np.uint8))  # every ReLU dead
    assert all(black.empty) and np.isfinite(black.maps).all() and black.maps.max() == 0


def test_grad_cam_refuses_bad_input(region):
    with pytest.raises(ValueError, match="shape"):
        explain.grad_cams(region, np.zeros((28, 28, 3)))
    with pytest.raises(ValueError, match="Grad-CAM needs"):
        explain.grad_cams(region, noise(), layer="gap")


def test_without_a_reachable_logit_the_log_probability_is_explained():
    import keras
    from keras import layers

    pixels = keras.Input(INPUT_SHAPE)
    x = layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(pixels)
    x = layers.GlobalAveragePooling2D()(x)
    probs = layers.Softmax(name="softmax_layer")(layers.Dense(10)(x))
    cams = explain.grad_cams(keras.Model(pixels, probs), noise())
    assert cams.score == "log-probability" and cams.layer == "conv"
    assert cams.maps.shape == (10, 32, 32) and 0 <= cams.maps.min() and cams.maps.max() <= 1


# --- every network the lab trains ---------------------------------------------------------------

def test_grad_cam_works_for_every_lab_network(lab_network):
    architecture, model = lab_network
    image = noise(5)
    cams = explain.grad_cams(model, image)
    assert cams.layer == ARCHITECTURES[architecture][1]  # the last conv's map, after BN and activation
    assert cams.score == "logit"
    assert cams.maps.shape == (10, 32, 32) and cams.maps.dtype == np.float32
    assert np.isfinite(cams.maps).all() and cams.maps.min() >= 0 and cams.maps.max() <= 1
    for k in range(10):
        assert cams.empty[k] == (cams.maps[k].max() == 0)
        assert cams.empty[k] or cams.maps[k].max() == pytest.approx(1.0)
    # inference mode: augmentation, dropout and BatchNorm statistics stay put, so it repeats exactly
    np.testing.assert_array_equal(explain.grad_cams(model, image).maps, cams.maps)
    np.testing.assert_allclose(cams.probabilities, model.predict_on_batch(image[None].astype("float32"))[0],
                               atol=1e-5)
    assert cams.predicted == int(np.argmax(cams.probabilities))


def test_a_saved_and_loaded_network_gets_the_same_maps(lab_network, tmp_path):
    """A loaded model's layers carry stale call nodes from the rebuild; the maps must come from the
    model's own graph (the page explains loaded models, never freshly built ones)."""
    import keras

    from cifar_core.models import register_custom_objects

    architecture, model = lab_network
    register_custom_objects()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    image = noise(9)
    mine, theirs = explain.grad_cams(model, image), explain.grad_cams(loaded, image)
    assert (theirs.layer, theirs.score) == (mine.layer, mine.score)
    np.testing.assert_allclose(theirs.maps, mine.maps, atol=1e-4)
    assert explain.conv_layers(loaded) == explain.conv_layers(model)
    np.testing.assert_allclose(explain.feature_maps(loaded, image)[1], explain.feature_maps(model, image)[1],
                               atol=1e-4)


def test_feature_maps_of_the_first_layers_of_every_lab_network(lab_network):
    architecture, model = lab_network
    convs = explain.conv_layers(model)
    assert len(convs) >= 6
    first = {"assignment": "block1_conv1", "assignment_bn": "block1_conv1", "airbench": "whiten"}[architecture]
    assert convs[0] == first
    name, maps = explain.feature_maps(model, noise(6))
    assert name == {"assignment": "block1_conv1", "assignment_bn": "block1_act1", "airbench": "stem_act"}[architecture]
    side = 31 if architecture == "airbench" else 32  # whitening is a 'valid' 2x2 convolution
    assert maps.shape[1:] == (side, side) and 1 <= len(maps) <= explain.MAX_FEATURE_CHANNELS
    assert maps.min() >= 0  # after the ReLU
    activity = np.abs(maps).mean(axis=(1, 2))
    assert np.all(np.diff(activity) <= 1e-6), "most active channel first"
    name2, maps2 = explain.feature_maps(model, noise(6), convs[1], max_channels=5)
    assert name2 != name and len(maps2) == 5


# --- pictures ---------------------------------------------------------------------------------------

def test_heat_overlay_blends_the_jet_map_by_opacity():
    image = noise(8)
    heat = np.zeros((32, 32), np.float32)
    heat[:16] = 1.0
    plain = np.asarray(images.heat_overlay(image, heat, opacity=0.0, size=64))
    assert plain.shape == (64, 64, 3)
    np.testing.assert_array_equal(plain[::2, ::2], image)
    full = np.asarray(images.heat_overlay(image, heat, opacity=1.0, size=32))
    assert tuple(full[0, 0]) == (128, 0, 0) and tuple(full[31, 0]) == (0, 0, 128)  # jet: dark red ... dark blue
    with pytest.raises(ValueError, match="opacity"):
        images.heat_overlay(image, heat, opacity=1.5)
    with pytest.raises(ValueError, match="map"):
        images.heat_overlay(image, heat[:10])


def test_feature_grid_tiles_each_map_on_its_own_scale():
    maps = np.stack([np.full((8, 8), 5.0), np.arange(64, dtype=float).reshape(8, 8), -np.ones((8, 8))])
    grid = images.feature_grid(maps, columns=2, tile=16, gap=2)
    assert grid.size == (2 * 16 + 2, 2 * 16 + 2) and grid.mode == "L"
    pixels = np.asarray(grid)
    assert pixels[:16, :16].max() == 0  # a constant map is flat black, not NaN
    assert pixels[:16, 18:].min() == 0 and pixels[:16, 18:].max() == 255
    assert (pixels[16:18] == 255).all()  # the gap


# --- the clickable confusion grid -----------------------------------------------------------------

def test_confusion_grid_has_one_square_per_cell_that_names_its_pair():
    cm = np.arange(100).reshape(10, 10)
    fig = charts_explain.confusion_grid(cm)
    trace = fig.data[0]
    assert trace.type == "scatter" and trace.marker.symbol == "square" and len(trace.x) == 100
    i = 3 * 10 + 7
    assert (trace.y[i], trace.x[i]) == (CLASS_NAMES[3], CLASS_NAMES[7])
    assert list(trace.customdata[i]) == [3, 7, 37] and trace.text[i] == "37"
    assert fig.layout.title.text == "Confusion matrix"
    point = {"curve_number": 0, "point_index": i, "x": CLASS_NAMES[7], "y": CLASS_NAMES[3],
             "customdata": [3, 7, 37]}  # what Streamlit's selection returns for a click
    assert charts_explain.selected_pair([point]) == (3, 7)
    assert charts_explain.selected_pair([]) is None
    with pytest.raises(ValueError, match="10x10"):
        charts_explain.confusion_grid(np.zeros((3, 3)))
