"""Floating-point operations of a network's forward pass on one image, counted from its layers."""
from __future__ import annotations

from typing import Any

import numpy as np


def forward_flops(model: Any) -> int:
    """2 x multiply-adds of every convolution and dense layer for one image (element-wise
    layers, pooling and normalisation are left out: they are a few percent of the total)."""
    import keras

    from cifar_core.models.layers import PatchWhitening

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, PatchWhitening)):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return int(total)
