"""Floating-point operations of a network's forward pass on one image, counted from its layers."""
from __future__ import annotations

from typing import Any

import numpy as np


def forward_flops(model: Any) -> int:
    """2 x multiply-adds of every convolution and dense layer for one image (element-wise
    layers, pooling and normalisation are left out: they are a few percent of the total)."""
    return int(sum(layer_flops(layer, layer.output.shape) for layer in model.layers))


def layer_flops(layer: Any, output_shape: tuple) -> int:
    """`forward_flops`'s count for one layer, given the shape of the output it gives in the model
    (with or without the batch axis): 0 for the layers it leaves out."""
    import keras

    from cifar_core.models.layers import PatchWhitening

    if isinstance(layer, (keras.layers.Conv2D, PatchWhitening)):
        kh, kw, cin, cout = layer.kernel.shape
        h, w = output_shape[-3:-1]
        return int(2 * kh * kw * cin * cout * h * w)
    if isinstance(layer, keras.layers.Dense):
        return int(2 * np.prod(layer.kernel.shape))
    return 0
