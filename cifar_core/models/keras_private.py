"""The one place that reads Keras internals. Keras 3 has no public API for either of these; each
has a test in tests/test_private_apis.py that fails loudly when a Keras upgrade moves it.

- `optimizer_schedule`: the learning-rate schedule object an optimizer was built with (the public
  `optimizer.learning_rate` evaluates it instead). The budget's pacer moves the schedule's end.
- `layer_calls`: each layer's call inside a functional model (its input and output tensors), found
  by walking back from the model's output through `_keras_history` and `_inbound_nodes`. Grad-CAM
  and feature maps need the tensors a layer really takes *inside* the model: layers keep stale
  extra call nodes (Keras calls them while rebuilding), so `layer.output` can name a tensor that
  is not part of the model at all.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional


def optimizer_schedule(optimizer: Any) -> Optional[Any]:
    """The `LearningRateSchedule` driving `optimizer`, or None for a constant rate."""
    import keras

    schedule = getattr(optimizer, "_learning_rate", None)
    return schedule if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) else None


@dataclasses.dataclass(frozen=True)
class LayerCall:
    inputs: tuple  # the symbolic tensors the layer takes inside the model
    output: Any  # the one it gives


def layer_calls(model: Any) -> dict[str, LayerCall]:
    """Layer name -> its call inside the model (the first met, walking back from the output);
    layers with several outputs are left out."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} must have one image input and one output")
    calls: dict[str, LayerCall] = {}
    stack, seen = [model.outputs[0]], set()
    while stack:
        tensor = stack.pop()
        history = getattr(tensor, "_keras_history", None)
        if id(tensor) in seen or history is None:
            continue
        seen.add(id(tensor))
        node = history.operation._inbound_nodes[history.node_index]
        if len(node.output_tensors) == 1:
            calls.setdefault(history.operation.name, LayerCall(tuple(node.input_tensors), node.output_tensors[0]))
        stack.extend(node.input_tensors)
    return calls
