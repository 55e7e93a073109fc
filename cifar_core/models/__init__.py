"""The lab's networks, one module each, and `build_model`: the config's network, compiled with
the config's recipe (optimizer, schedule, loss).

May import: config, files, paths, quiet, trainer_lock, data, recipes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from cifar_core.config import TrainConfig
from cifar_core.models.assignment import ASSIGNMENT_PARAMS

__all__ = ["ASSIGNMENT_PARAMS", "build_model", "build_network"]


def build_network(config: TrainConfig, x_train: Optional[np.ndarray] = None):
    """The uncompiled network of `config.architecture` (x_train sets data-dependent layers)."""
    from cifar_core.models import airbench, assignment, assignment_bn

    if config.architecture == "airbench":
        return airbench.build_network(config, x_train)
    if config.architecture == "assignment_bn":
        return assignment_bn.build_network(config)
    return assignment.build_network(config)


def build_model(config: TrainConfig = TrainConfig(), *, x_train: Optional[np.ndarray] = None,
                steps_per_epoch: Optional[int] = None):
    """The config's network compiled with its recipe. `steps_per_epoch` places the learning-rate
    schedule; without it a schedule assumes 50,000 training images."""
    from cifar_core.recipes import compile_model

    model = build_network(config, x_train)
    compile_model(model, config, steps_per_epoch)
    return model


def register_custom_objects() -> None:
    """Import the modules that register the lab's Keras classes, before loading a saved model."""
    from cifar_core.models import layers
    from cifar_core.recipes import schedules  # noqa: F401  (registration happens on import)
