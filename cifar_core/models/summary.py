"""A network drawn as a table: each layer's type, output shape, parameters, forward FLOPs and
receptive field, the totals, and the layers that act only in training."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from cifar_core.models.augment import AUGMENT_PREFIX

# Keras' regularisation layers that act only in training (identity at inference).
TRAINING_ONLY_KINDS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                       "GaussianNoise", "AlphaDropout", "ActivityRegularization")
# Layers that move nothing across the image: a pixel's output depends on that pixel alone.
_SPATIAL_NO_OPS = ("ZeroPadding2D", "Cropping2D")


@dataclasses.dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str  # the layer's class name
    output_shape: tuple  # one image's (the batch axis left out)
    trainable_params: int
    non_trainable_params: int
    flops: int  # forward FLOPs per image, as cifar_core/models/flops.py counts them
    window: str  # the kernel or pool window and its stride ("3x3, stride 1"), a dropout's rate, ...; or ""
    kernel: Optional[tuple[int, int]]  # the window of a convolution, whitening or pooling layer, else None
    # Per axis (height, width), where the output is still an image: the side of the input patch
    # one output position sees, and the input pixels between neighbouring output positions.
    receptive_field: Optional[tuple[int, int]]
    jump: Optional[tuple[int, int]]
    training_only: bool  # augmentation or dropout: active only in training, identity at inference

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params


@dataclasses.dataclass(frozen=True)
class NetworkSummary:
    name: str  # the Keras model's name
    input_shape: tuple  # one image's
    rows: tuple[LayerRow, ...]  # every layer, in the model's order (the input left out)

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable_params for r in self.rows)

    @property
    def non_trainable_params(self) -> int:
        return sum(r.non_trainable_params for r in self.rows)

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.rows)

    @property
    def training_only(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rows if r.training_only)

    def row(self, name: str) -> LayerRow:
        found = [r for r in self.rows if r.name == name]
        if not found:
            raise KeyError(f"no layer {name!r} in {self.name}")
        return found[0]

    def convolutions(self) -> tuple[LayerRow, ...]:
        """The rows that look at a neighbourhood (convolutions, whitening, pooling), in order."""
        return tuple(r for r in self.rows if r.kernel is not None)

    def records(self) -> list[dict[str, Any]]:
        """One dict per layer, for a table: receptive field and jump as one number where the
        network's windows are square (as the lab's are), "HxW" otherwise; None past the image."""
        square = all(v is None or v[0] == v[1] for r in self.rows for v in (r.receptive_field, r.jump))

        def side(v: Optional[tuple[int, int]]):
            return None if v is None else (v[0] if square else f"{v[0]}x{v[1]}")

        return [{"layer": r.name, "type": r.kind, "output shape": " x ".join(str(d) for d in r.output_shape),
                 "window": r.window, "parameters": r.params, "trainable": r.trainable_params,
                 "non-trainable": r.non_trainable_params, "FLOPs": r.flops,
                 "receptive field": side(r.receptive_field), "jump": side(r.jump),
                 "training only": r.training_only} for r in self.rows]

    def totals(self) -> dict[str, int]:
        return {"parameters": self.params, "trainable": self.trainable_params,
                "non-trainable": self.non_trainable_params, "FLOPs": self.flops}


def summarize(model: Any) -> NetworkSummary:
    """The table of a built or loaded Keras model with one image input and one output.

    Shapes come from each layer's call inside the model (cifar_core/models/keras_private.py),
    not `layer.output`, which a loaded model's layers can point elsewhere. The receptive field is
    walked from the input (1 pixel, jump 1) through the graph: a window of k pixels, dilation d
    and stride s gives rf_out = rf_in + (d(k-1)) * jump_in and jump_out = jump_in * s; layers
    that keep the image's size pass it on (the largest of their inputs'); anything else ends it.
    """
    from cifar_core.models.flops import layer_flops
    from cifar_core.models.keras_private import layer_calls

    calls = layer_calls(model)
    made_by = {id(call.output): name for name, call in calls.items()}
    image = model.inputs[0]
    geometry: dict[str, Optional[tuple]] = {}  # layer name -> (rf, jump) of its output, or None
    rows = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        call = calls.get(layer.name)
        if call is None:
            raise ValueError(f"layer {layer.name!r} of {model.name!r} is not on the path from its input to its output")
        shape = tuple(call.output.shape)[1:]
        sources = []
        for tensor in call.inputs:
            producer = made_by.get(id(tensor))
            if producer in geometry:
                sources.append(geometry[producer])
            else:  # the model's input: each pixel sees itself
                sources.append(((1, 1), (1, 1)) if len(tensor.shape) == 4 else None)
        input_shapes = [tuple(t.shape)[1:] for t in call.inputs]
        geometry[layer.name] = _geometry(layer, sources, input_shapes, shape)
        rf, jump = geometry[layer.name] or (None, None)
        window = _window_of(layer)
        rows.append(LayerRow(
            name=layer.name, kind=type(layer).__name__, output_shape=shape,
            trainable_params=_count(layer.trainable_weights), non_trainable_params=_count(layer.non_trainable_weights),
            flops=layer_flops(layer, shape), window=_describe(layer, window, input_shapes),
            kernel=None if window is None else window[0], receptive_field=rf, jump=jump,
            training_only=is_training_only(layer)))
    return NetworkSummary(name=model.name, input_shape=tuple(image.shape)[1:], rows=tuple(rows))


def is_training_only(layer: Any) -> bool:
    """Augmentation (named with AUGMENT_PREFIX) and dropout-like layers: identity at inference."""
    return layer.name.startswith(AUGMENT_PREFIX) or type(layer).__name__ in TRAINING_ONLY_KINDS


def _count(weights) -> int:
    return int(sum(int(np.prod(w.shape)) for w in weights))


def _window_of(layer: Any) -> Optional[tuple[tuple, tuple, tuple]]:
    """(kernel, stride, dilation) per axis of a layer that looks at a 2-D neighbourhood, else None."""
    import keras

    from cifar_core.models.layers import PatchWhitening

    if isinstance(layer, PatchWhitening):  # a fixed 'valid' convolution
        return (layer.patch_size,) * 2, (1, 1), (1, 1)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
        return tuple(layer.kernel_size), tuple(layer.strides), tuple(layer.dilation_rate)
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        return tuple(layer.pool_size), tuple(layer.strides), (1, 1)
    return None


def _geometry(layer: Any, sources: list, input_shapes: list, shape: tuple) -> Optional[tuple]:
    if len(shape) != 3 or not sources or any(s is None for s in sources):
        return None  # past the image (flatten, dense, global pooling), or behind a layer we cannot follow
    window = _window_of(layer)
    if window is not None and len(sources) == 1:
        (rf, jump), (kernel, stride, dilation) = sources[0], window
        return (tuple(r + d * (k - 1) * j for r, k, d, j in zip(rf, kernel, dilation, jump)),
                tuple(j * s for j, s in zip(jump, stride)))
    same_size = all(tuple(s[:2]) == shape[:2] for s in input_shapes)
    if same_size or type(layer).__name__ in _SPATIAL_NO_OPS:
        return (tuple(max(s[0][i] for s in sources) for i in (0, 1)),
                tuple(max(s[1][i] for s in sources) for i in (0, 1)))
    return None  # resizing, upsampling, a transposed convolution...: not followed


def _describe(layer: Any, window: Optional[tuple], input_shapes: list) -> str:
    """What the layer's row says about its window, rate or augmentation."""
    if window is not None:
        kernel, stride, dilation = window
        text = f"{'x'.join(map(str, kernel))}, stride {'x'.join(map(str, sorted(set(stride))))}"
        if any(d != 1 for d in dilation):
            text += f", dilation {'x'.join(map(str, sorted(set(dilation))))}"
        return text
    rate = getattr(layer, "rate", None)
    if rate is not None:
        return f"rate {rate:g}"
    mode = getattr(layer, "mode", None)
    if layer.name.startswith(AUGMENT_PREFIX) and isinstance(mode, str):
        return mode  # RandomFlip's "horizontal"
    factor = getattr(layer, "height_factor", None)
    height = input_shapes[0][0] if input_shapes and input_shapes[0] else None
    if layer.name.startswith(AUGMENT_PREFIX) and factor is not None and height:
        return f"shift up to {float(np.max(np.abs(factor))) * height:g} px"
    return ""


def format_table(summary: NetworkSummary) -> str:
    """The summary as plain text: one line per layer, then the totals (the CLI's output)."""
    head = ("layer", "type", "output", "window", "params", "FLOPs", "RF", "jump", "")
    lines = [head]
    def cell(value) -> str:
        return "" if value is None else str(value)

    for r in summary.records():
        lines.append((r["layer"], r["type"], r["output shape"], r["window"], f"{r['parameters']:,}",
                      f"{r['FLOPs']:,}" if r["FLOPs"] else "", cell(r["receptive field"]), cell(r["jump"]),
                      "training only" if r["training only"] else ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    right = {4, 5, 6, 7}
    text = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
            .rstrip() for line in lines]
    t = summary.totals()
    text.append(f"{summary.name}: {t['parameters']:,} parameters ({t['trainable']:,} trainable, "
                f"{t['non-trainable']:,} non-trainable); {t['FLOPs']:,} FLOPs per image "
                f"({t['FLOPs'] / 1e6:,.1f} M, forward: convolutions and dense layers)")
    if summary.training_only:
        text.append(f"training only (identity at inference): {', '.join(summary.training_only)}")
    return "\n".join(text)
