"""The assignment's conv stack with BatchNorm after every convolution (and the same head)."""
from __future__ import annotations

from cifar_core.config import TrainConfig
from cifar_core.data import INPUT_SHAPE, NUM_CLASSES


def build_network(config: TrainConfig):
    """Conv-BN-act 32-32 / 64-64 / 128-128 with Dropout and MaxPool where the assignment has
    them; Flatten, Dropout, Dense 1024, Dropout, Dense 512, Dropout, Dense 10 softmax."""
    import keras
    from keras import layers

    from cifar_core.models.augment import augmentation_layers
    from cifar_core.models.layers import FusedBatchNorm

    stack = [keras.Input(shape=INPUT_SHAPE, name="pixels"), *augmentation_layers(config),
             layers.Rescaling(1.0 / 255, name="rescale")]
    for block, filters in enumerate((32, 64, 128), start=1):
        for i in (1, 2):
            stack += [
                layers.Conv2D(filters, (3, 3), padding="same", use_bias=False, name=f"block{block}_conv{i}"),
                FusedBatchNorm(name=f"block{block}_norm{i}"),
                layers.Activation(config.activation, name=f"block{block}_act{i}"),
            ]
            stack.append(layers.Dropout(config.dropout, name=f"block{block}_dropout") if i == 1
                         else layers.MaxPooling2D((2, 2), name=f"block{block}_pool"))
    stack += [
        layers.Flatten(name="flatten"),
        layers.Dropout(config.dropout, name="flatten_dropout"),
        layers.Dense(1024, activation=config.activation, name="dense1024"),
        layers.Dropout(config.dropout, name="dense1024_dropout"),
        layers.Dense(512, activation=config.activation, name="dense512"),
        layers.Dropout(config.dropout, name="dense512_dropout"),
        layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="classes"),  # float32 under any policy
    ]
    return keras.Sequential(stack, name="cifar10_cnn_bn")
