"""Why a model answers as it does: Grad-CAM maps for every class, and the feature maps of its
convolution layers, for any network the lab trains (the layers are found, not named).

Importing this module does not import TensorFlow; the functions that take a model do. Every
model is run in inference mode (training=False): augmentation and dropout are off, BatchNorm
uses its moving statistics, so the same image always gets the same map.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
from PIL import Image

from cifar_core.data.labels import INPUT_SHAPE, NUM_CLASSES
from cifar_core.models.keras_private import LayerCall, layer_calls

MAX_FEATURE_CHANNELS = 64  # channels returned per feature map: a grid of 64 tiles is the most worth reading
FEATURE_LAYERS = 4  # convolution layers offered by default: the first ones show edges and colours


@dataclasses.dataclass(frozen=True)
class GradCam:
    """Grad-CAM of one image for every class, from one forward and backward pass."""

    maps: np.ndarray  # (10, H, W) float32 in [0, 1], one per class, at the input's size
    empty: tuple[bool, ...]  # per class: nothing in the feature map raises its score (the map is all 0)
    layer: str  # the feature map explained: the last convolution's output (after its BN/activation)
    cells: tuple[int, int]  # that feature map's height and width: the map's true resolution
    score: str  # "logit" (the pre-softmax score) or "log-probability" where no logit is reachable
    probabilities: np.ndarray  # (10,) the model's answer for the image

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))


# --- which layers ---------------------------------------------------------------------------
# Layers are found through the model's own graph, walked back from its output
# (cifar_core/models/keras_private.py says why `layer.output` will not do).


def _is_conv(layer: Any) -> bool:
    """A convolution: a layer with a 4-D kernel (Conv2D, the whitening layer, separable parts)."""
    kernel = getattr(layer, "kernel", None)
    return kernel is not None and len(getattr(kernel, "shape", ())) == 4


def _chain_end(model: Any, graph: dict[str, LayerCall], conv: str) -> str:
    """The last layer of conv `conv`'s chain: the element-wise layers (BatchNorm, activation) that
    alone take its output, take nothing else, and keep its shape. Pooling, dropout and the next conv end the chain."""
    import keras

    consumers: dict[int, list[str]] = {}
    for other, call in graph.items():
        for tensor in call.inputs:
            consumers.setdefault(id(tensor), []).append(other)
    name = conv
    while len(consumers.get(id(graph[name].output), [])) == 1:  # a branch ends the chain too
        nxt = consumers[id(graph[name].output)][0]
        layer = model.get_layer(nxt)
        if (_is_conv(layer) or isinstance(layer, keras.layers.Dropout) or len(graph[nxt].inputs) != 1
                or tuple(graph[nxt].output.shape) != tuple(graph[name].output.shape)):
            break
        name = nxt
    return name


def conv_layers(model: Any) -> list[str]:
    """Names of the model's convolution layers with 4-D outputs, input to output."""
    graph = layer_calls(model)
    return [layer.name for layer in model.layers
            if _is_conv(layer) and layer.name in graph and len(graph[layer.name].output.shape) == 4]


def feature_layer(model: Any, conv: str) -> str:
    """The layer whose output shows conv layer `conv`'s features: the conv after its BN and activation."""
    graph = layer_calls(model)
    if conv not in graph:
        raise ValueError(f"the model has no layer named {conv!r}")
    return _chain_end(model, graph, conv)


def last_feature_layer(model: Any) -> str:
    """The last convolution's feature map (after its BN and activation, before pooling): Grad-CAM's layer."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolution layer with a 4-D output to explain")
    return feature_layer(model, convs[-1])


# --- Grad-CAM -------------------------------------------------------------------------------


def _score_head(model: Any, graph: dict[str, LayerCall]):
    """(symbolic tensor, function to the 10 scores, kind). The softmax's input when the model ends in
    one (an Activation layer, or a Dense with softmax: its kernel is applied here), else the output
    with a log, so the gradient is of the log-probability."""
    import keras

    last = model.outputs[0]._keras_history.operation
    if getattr(last, "activation", None) is keras.activations.softmax and len(graph[last.name].inputs) == 1:
        if isinstance(last, keras.layers.Activation):
            return graph[last.name].inputs[0], lambda x: x, "logit"
        if isinstance(last, keras.layers.Dense):
            def dense_logits(x):
                z = keras.ops.matmul(x, last.kernel)
                return z + last.bias if last.use_bias else z
            return graph[last.name].inputs[0], dense_logits, "logit"
    return model.outputs[0], lambda p: keras.ops.log(keras.ops.maximum(p, 1e-12)), "log-probability"


def _check_image(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    if x.shape != INPUT_SHAPE:
        raise ValueError(f"image must have shape {INPUT_SHAPE} of raw 0..255 pixels, got {x.shape}")
    return x.astype(np.float32)


def grad_cams(model: Any, image: np.ndarray, layer: Optional[str] = None) -> GradCam:
    """Grad-CAM (Selvaraju et al. 2017) of one image for all ten classes at once.

    Args:
      model: a Keras model from raw pixels (N, 32, 32, 3) to class probabilities.
      image: one (32, 32, 3) image of raw 0..255 pixels.
      layer: the 4-D feature map to explain; None picks the last convolution's (last_feature_layer).
    Returns:
      A GradCam: per class, the ReLU of the feature map's channels weighted by the mean gradient
      of the class score over each channel, bilinearly upsampled to 32x32 and divided by its peak.
    """
    import keras
    import tensorflow as tf

    x = _check_image(image)
    name = layer or last_feature_layer(model)
    graph = layer_calls(model)
    if name not in graph:
        raise ValueError(f"the model has no layer named {name!r}")
    features = graph[name].output
    if len(features.shape) != 4:
        raise ValueError(f"layer {name!r} has output shape {tuple(features.shape)}; Grad-CAM needs (N, H, W, C)")
    head, to_scores, kind = _score_head(model, graph)
    probe = keras.Model(model.inputs[0], [features, head, model.outputs[0]], name="grad_cam_probe")
    # One copy of the image per class: the sum of copy k's score for class k has, on copy k's
    # features, exactly the gradient of class k's score, so one backward pass serves all ten.
    batch = tf.convert_to_tensor(np.repeat(x[None], NUM_CLASSES, axis=0))
    with tf.GradientTape() as tape:
        maps, pre, probs = probe(batch, training=False)
        scores = to_scores(pre)
        own = tf.reduce_sum(tf.linalg.diag_part(tf.cast(scores, tf.float32)))
    grads = tape.gradient(own, maps)
    if grads is None:
        raise ValueError(f"the class scores do not depend on layer {name!r}")
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)  # (10, 1, 1, C)
    cams = tf.nn.relu(tf.reduce_sum(weights * tf.cast(maps, tf.float32), axis=-1)).numpy()  # (10, h, w)
    out = np.stack([normalise(upsample(c, INPUT_SHAPE[:2])) for c in cams])
    return GradCam(maps=out, empty=tuple(bool(m.max() == 0) for m in out), layer=name, score=kind,
                   cells=(int(cams.shape[1]), int(cams.shape[2])),
                   probabilities=np.asarray(probs[0], dtype=np.float32))


def upsample(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized to (height, width) by bilinear interpolation of its cell centres."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float32))
    if h.ndim != 2:
        raise ValueError(f"heat must be 2-D, got shape {h.shape}")
    return np.asarray(Image.fromarray(h, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR),
                      dtype=np.float32)


def normalise(heat: np.ndarray) -> np.ndarray:
    """`heat` clipped at 0 and divided by its peak, so the strongest region is 1; all zeros stays all
    zeros (a class nothing in the image speaks for, or dead ReLUs), never NaN."""
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, None)
    peak = float(h.max()) if h.size else 0.0
    return (h / peak if peak > 0 else np.zeros_like(h)).astype(np.float32)


# --- feature maps ---------------------------------------------------------------------------


def feature_maps(model: Any, image: np.ndarray, conv: Optional[str] = None,
                 max_channels: int = MAX_FEATURE_CHANNELS) -> tuple[str, np.ndarray]:
    """What conv layer `conv` (None: the first) outputs for `image`, after its BN and activation.

    Returns (the layer shown, (channels, H, W) float32 activations); at most `max_channels` channels,
    the most active first (by mean absolute activation), so a grid shows what the image lights up.
    """
    import keras

    x = _check_image(image)
    convs = conv_layers(model)
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolution layer")
    name = feature_layer(model, conv or convs[0])
    probe = keras.Model(model.inputs[0], layer_calls(model)[name].output, name="feature_probe")
    acts = np.asarray(probe(x[None], training=False), dtype=np.float32)[0].transpose(2, 0, 1)
    order = np.argsort(-np.abs(acts).mean(axis=(1, 2)), kind="stable")[:max(1, int(max_channels))]
    return name, acts[order]
