"""A compact airbench-style network (KellerJordan/cifar10-airbench, airbench94), in Keras.

Patch-whitening 2x2 conv, then three blocks of conv -> maxpool -> BN -> act -> conv -> BN -> act,
a global max pool, one bias-free linear layer scaled by 1/9, softmax. No 1024-wide head.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from cifar_core.config import TrainConfig
from cifar_core.data import INPUT_SHAPE, NUM_CLASSES

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel pixel mean / 255 (official training set)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
BN_MOMENTUM = 0.6  # Keras' meaning: weight of the old moving statistic (airbench: PyTorch momentum 0.4)
BN_BIAS_LR_MULTIPLIER = 64.0  # BatchNorm shifts learn this much faster (airbench's bias_scaler)
OUTPUT_SCALE = 1 / 9  # logits are scaled down before the softmax (airbench's scaling_factor)
WHITENING_SAMPLE = 5000  # training images that set the whitening kernel


def build_network(config: TrainConfig, x_train: Optional[np.ndarray] = None):
    """The network; with `x_train` (uint8 images) the whitening layer is set from its first
    WHITENING_SAMPLE images, otherwise it keeps a random kernel until weights are loaded."""
    import keras
    from keras import layers

    from cifar_core.models.augment import augmentation_layers
    from cifar_core.models.layers import FusedBatchNorm, PatchWhitening, whitening_kernel

    # PyTorch's default init, U(+-1/sqrt(fan_in)), as airbench has it. Keras' glorot_uniform starts
    # 3x3 convs about twice as large, and behind BatchNorm larger weights learn more slowly
    # (the effective step is lr / |w|^2): a short schedule cannot afford that.
    def init() -> keras.initializers.Initializer:
        return keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")

    def norm(name: str) -> FusedBatchNorm:
        return FusedBatchNorm(momentum=BN_MOMENTUM, scale=False, bias_scale=float(np.sqrt(BN_BIAS_LR_MULTIPLIER)),
                              name=name)

    pixels = keras.Input(shape=INPUT_SHAPE, name="pixels")
    x = pixels
    for layer in augmentation_layers(config):
        x = layer(x)
    normalise = layers.Normalization(mean=[255 * m for m in CIFAR_MEAN],
                                     variance=[(255 * s) ** 2 for s in CIFAR_STD], name="normalise")
    x = normalise(x)
    if config.whitening:
        whiten = PatchWhitening(2, name="whiten")
        x = whiten(x)
    else:
        x = layers.Conv2D(24, 2, padding="valid", kernel_initializer=init(), name="stem")(x)
    x = layers.Activation(config.activation, name="stem_act")(x)
    for block, width in enumerate(config.widths, start=1):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=init(),
                          name=f"block{block}_conv1")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = norm(f"block{block}_norm1")(x)
        x = layers.Activation(config.activation, name=f"block{block}_act1")(x)
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=init(),
                          name=f"block{block}_conv2")(x)
        x = norm(f"block{block}_norm2")(x)
        x = layers.Activation(config.activation, name=f"block{block}_act2")(x)
    x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    x = layers.Dense(NUM_CLASSES, use_bias=False, kernel_initializer=init(), name="classes")(x)
    x = layers.Rescaling(OUTPUT_SCALE, name="logit_scale")(x)
    probabilities = layers.Activation("softmax", dtype="float32", name="softmax")(x)  # float32 under any policy
    model = keras.Model(pixels, probabilities, name="airbench")
    for block in range(1, len(config.widths) + 1):
        for i in (1, 2):
            _partial_identity(model.get_layer(f"block{block}_conv{i}"))
    if config.whitening and x_train is not None:
        sample = np.asarray(normalise(x_train[:WHITENING_SAMPLE].astype("float32")))
        whiten.kernel.assign(whitening_kernel(sample, patch_size=2))
    return model


def _partial_identity(conv) -> None:
    """airbench's init: the first `in_channels` filters of a 3x3 conv start as the identity
    (each passes its own input channel through), the rest stay random."""
    kernel = np.array(conv.kernel)
    cin, cout = kernel.shape[2], kernel.shape[3]
    n = min(cin, cout)
    kernel[:, :, :, :n] = 0.0
    kernel[1, 1, np.arange(n), np.arange(n)] = 1.0
    conv.kernel.assign(kernel)
