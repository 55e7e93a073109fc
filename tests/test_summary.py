"""The network drawn as a table (cifar_core/models/summary.py), on the real networks: parameters
pinned, FLOPs as flops.py counts them, receptive fields worked out by hand and checked by
perturbing single pixels of a tiny network, training-only layers, and a saved run's model."""
from __future__ import annotations

import io

import keras
import numpy as np
import pytest

from cifar_core import cli, runs
from cifar_core.config import TrainConfig
from cifar_core.models import ASSIGNMENT_PARAMS, build_network
from cifar_core.models.augment import AUGMENT_PREFIX
from cifar_core.models.flops import forward_flops
from cifar_core.models.keras_private import layer_calls
from cifar_core.models.summary import format_table, summarize
from cifar_core.recipes.presets import preset_config

# The assignment's network by hand: 2 x multiply-adds of each conv (3x3, "same") and dense layer.
ASSIGNMENT_CONV_FLOPS = [2 * 9 * cin * cout * side * side for cin, cout, side in
                         ((3, 32, 32), (32, 32, 32), (32, 64, 16), (64, 64, 16), (64, 128, 8), (128, 128, 8))]
ASSIGNMENT_FLOPS = sum(ASSIGNMENT_CONV_FLOPS) + 2 * (2048 * 1024 + 1024 * 512 + 512 * 10)  # 82,520,064

# rf_out = rf_in + (k - 1) * jump_in, jump_out = jump_in * stride, from 1 pixel with jump 1:
# conv3 3, conv3 5, pool2 6 (jump 2), conv3 10, conv3 14, pool2 16 (jump 4), conv3 24, conv3 32, pool2 36 (jump 8).
ASSIGNMENT_FIELDS = [("block1_conv1", 3, 1), ("block1_conv2", 5, 1), ("block1_pool", 6, 2),
                     ("block2_conv1", 10, 2), ("block2_conv2", 14, 2), ("block2_pool", 16, 4),
                     ("block3_conv1", 24, 4), ("block3_conv2", 32, 4), ("block3_pool", 36, 8)]
# airbench: whitening 2x2 "valid" 2, then per block conv3 -> pool2 -> conv3:
# 4, 5 (jump 2), 9; 13, 15 (jump 4), 23; 31, 35 (jump 8), 51.
AIRBENCH_FIELDS = [("whiten", 2, 1), ("block1_conv1", 4, 1), ("block1_pool", 5, 2), ("block1_conv2", 9, 2),
                   ("block2_conv1", 13, 2), ("block2_pool", 15, 4), ("block2_conv2", 23, 4),
                   ("block3_conv1", 31, 4), ("block3_pool", 35, 8), ("block3_conv2", 51, 8)]
SMALL_AIRBENCH = dict(architecture="airbench", widths=(8, 16, 16))


def fields(summary) -> list[tuple[str, int, int]]:
    out = []
    for row in summary.convolutions():
        (rh, rw), (jh, jw) = row.receptive_field, row.jump
        assert rh == rw and jh == jw, row
        out.append((row.name, rh, jh))
    return out


def test_the_assignment_network_drawn_exactly():
    model = build_network(TrainConfig())
    s = summarize(model)
    assert [r.name for r in s.rows] == [layer.name for layer in model.layers]
    assert s.params == s.trainable_params == ASSIGNMENT_PARAMS and s.non_trainable_params == 0
    assert s.flops == forward_flops(model) == ASSIGNMENT_FLOPS == 82_520_064
    assert [r.flops for r in s.rows if r.kind == "Conv2D"] == ASSIGNMENT_CONV_FLOPS
    assert fields(s) == ASSIGNMENT_FIELDS
    assert s.row("block3_conv2").receptive_field == (32, 32)  # the last conv sees exactly the whole image
    assert s.row("block1_pool").window == "2x2, stride 2" and s.row("block1_conv1").window == "3x3, stride 1"
    assert s.row("block3_pool").output_shape == (4, 4, 128) and s.row("flatten").output_shape == (2048,)
    assert s.row("classes").output_shape == (10,) and s.row("classes").receptive_field is None
    assert s.row("dense1024").params == 2048 * 1024 + 1024
    # element-wise layers pass the field on unchanged
    assert s.row("block1_dropout").receptive_field == s.row("block1_conv1").receptive_field
    assert s.input_shape == (32, 32, 3)
    assert s.training_only == ("block1_dropout", "block2_dropout", "block3_dropout", "flatten_dropout",
                               "dense1024_dropout", "dense512_dropout")
    text = format_table(s)
    assert "2,915,114 parameters" in text and "82,520,064 FLOPs" in text


@pytest.mark.parametrize("config", [TrainConfig(architecture="assignment_bn"), TrainConfig(**SMALL_AIRBENCH),
                                    TrainConfig(**SMALL_AIRBENCH, whitening=False), preset_config("fast")],
                         ids=["assignment_bn", "airbench", "airbench-no-whitening", "fast"])
def test_every_network_totals_match_keras_and_flops_py(config):
    model = build_network(config, np.zeros((8, 32, 32, 3), np.uint8))
    s = summarize(model)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    assert [r.name for r in s.rows] == [layer.name for layer in layers]
    assert s.params == model.count_params()
    assert s.trainable_params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert s.flops == forward_flops(model)
    # each row's shape is what the layer really gives for one image
    calls = layer_calls(model)
    probe = keras.Model(model.inputs[0], [calls[r.name].output for r in s.rows])
    outputs = probe(np.zeros((1, 32, 32, 3), np.float32), training=False)
    assert [tuple(np.shape(o))[1:] for o in outputs] == [r.output_shape for r in s.rows]
    if config.architecture == "assignment_bn":
        assert fields(s) == ASSIGNMENT_FIELDS
        assert s.non_trainable_params == 2 * 2 * (32 + 64 + 128)  # BatchNorm's moving mean and variance
    elif config.whitening:
        assert fields(s) == AIRBENCH_FIELDS
        assert s.row("whiten").non_trainable_params == 2 * 2 * 3 * 24  # the fixed whitening kernel
    else:  # a trained 2x2 "valid" stem instead: the same geometry
        assert fields(s) == [("stem", 2, 1)] + AIRBENCH_FIELDS[1:]


def test_training_only_layers_are_marked_and_really_do_nothing_at_inference():
    config = preset_config("assignment", augment="flip_translate", dropout=0.3)
    model = build_network(config)
    s = summarize(model)
    augment = [layer.name for layer in model.layers if layer.name.startswith(AUGMENT_PREFIX)]
    dropout = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert augment == ["augment_flip", "augment_translate"] and len(dropout) == 6
    assert set(s.training_only) == set(augment + dropout)
    assert not any(r.training_only for r in s.rows if r.name not in augment + dropout)
    assert s.row("augment_translate").window == f"shift up to {config.translate_pixels:g} px"
    assert s.row("block1_dropout").window == "rate 0.3"
    assert [r["training only"] for r in s.records()] == [r.training_only for r in s.rows]
    # augmentation sees the input pixels one to one: the fields are those of the plain network
    assert fields(s) == ASSIGNMENT_FIELDS
    calls = layer_calls(model)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    for name in s.training_only:
        shape = (2, *[int(d) for d in calls[name].inputs[0].shape[1:]])
        y = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32) if name not in augment else x
        layer = model.get_layer(name)
        assert np.array_equal(np.asarray(layer(y, training=False)), y), f"{name} changed its input at inference"
        if name in dropout:  # and they do act in training
            assert not np.array_equal(np.asarray(layer(y, training=True)), y), name


def tiny_network() -> keras.Model:
    """No BatchNorm, linear, all-ones kernels: a pixel changes every output position whose
    receptive field holds it. Pool size and stride differ, one dilated, one strided convolution."""
    ones = dict(kernel_initializer="ones", bias_initializer="zeros")
    x = inputs = keras.Input((48, 48, 1), name="pixels")
    x = keras.layers.Conv2D(1, 3, name="conv_a", **ones)(x)  # rf 3, jump 1
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool_a")(x)  # 3 + 2*1 = 5, jump 2
    x = keras.layers.Conv2D(1, 3, dilation_rate=2, name="conv_dilated", **ones)(x)  # 5 + 2*2*2 = 13, jump 2
    x = keras.layers.AveragePooling2D(2, name="pool_b")(x)  # 13 + 1*2 = 15, jump 4
    x = keras.layers.Activation("linear", name="act")(x)  # unchanged
    x = keras.layers.Conv2D(1, 3, strides=2, name="conv_strided", **ones)(x)  # 15 + 2*4 = 23, jump 8
    return keras.Model(inputs, x, name="tiny")


def test_receptive_fields_agree_with_perturbing_one_input_pixel_at_a_time():
    model = tiny_network()
    s = summarize(model)
    assert fields(s) == [("conv_a", 3, 1), ("pool_a", 5, 2), ("conv_dilated", 13, 2), ("pool_b", 15, 4),
                         ("conv_strided", 23, 8)]
    assert "dilation 2" in s.row("conv_dilated").window
    side = model.inputs[0].shape[1]
    # one image per input pixel, that pixel set to 1 on a blank image
    images = np.zeros((side * side, side, side, 1), np.float32)
    images[np.arange(side * side), np.arange(side * side) // side, np.arange(side * side) % side, 0] = 1.0
    calls = layer_calls(model)
    for row in s.rows:
        probe = keras.Model(model.inputs[0], calls[row.name].output)
        blank = np.asarray(probe(np.zeros((1, side, side, 1), np.float32)))[0, ..., 0]
        changed = np.abs(np.asarray(probe(images))[..., 0] - blank) > 1e-6  # (pixel, out_y, out_x)
        for oy, ox in ((0, 0), (1, 1), (changed.shape[1] - 1, 0)):
            seen = np.argwhere(changed[:, oy, ox].reshape(side, side))  # the pixels output (oy, ox) sees
            (rf_h, rf_w), (jump_h, jump_w) = row.receptive_field, row.jump
            assert seen.min(axis=0).tolist() == [oy * jump_h, ox * jump_w], (row.name, oy, ox)  # "valid": no padding
            assert (seen.max(axis=0) - seen.min(axis=0) + 1).tolist() == [rf_h, rf_w], (row.name, oy, ox)


def test_a_loaded_runs_model_gives_the_same_table_as_the_built_network(with_run):
    run = runs.load_run(with_run)
    loaded = summarize(runs.load_model(with_run))
    built = summarize(build_network(run.config))
    assert loaded == built
    assert loaded.params == ASSIGNMENT_PARAMS and loaded.flops == ASSIGNMENT_FLOPS


def test_the_cli_prints_a_recipe_or_a_run(with_run):
    out = io.StringIO()
    assert cli.main(["summary", "--architecture", "airbench", "--widths", "8,16,16", "--augment", "flip"], out=out) == 0
    text = out.getvalue()
    assert "block3_conv2" in text and "GlobalMaxPooling2D" in text and "training only" in text
    assert "training only (identity at inference): augment_flip" in text
    out = io.StringIO()
    assert cli.main(["summary", with_run], out=out) == 0
    assert f"run {with_run}" in out.getvalue() and "2,915,114 parameters" in out.getvalue()
    assert cli.main(["summary", "no-such-run"], out=io.StringIO()) == 1
