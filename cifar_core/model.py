"""The assignment's CNN, with the 1/255 rescaling inside so a saved model takes raw uint8 pixels."""
from __future__ import annotations

from .config import TrainConfig
from .data import INPUT_SHAPE, NUM_CLASSES

# Pinned by tests: the assignment's network has exactly this many trainable parameters.
ASSIGNMENT_PARAMS = 2_915_114


def build_model(config: TrainConfig = TrainConfig()):
    """Conv 32-32 / 64-64 / 128-128 (Dropout after the first of each pair, MaxPool after the
    second), Flatten, Dropout, Dense 1024, Dropout, Dense 512, Dropout, Dense 10 softmax;
    compiled with Adam and categorical cross-entropy."""
    import keras
    from keras import layers

    def conv(filters: int) -> layers.Layer:
        return layers.Conv2D(filters, (3, 3), padding="same", activation="relu")

    stack = [keras.Input(shape=INPUT_SHAPE), layers.Rescaling(1.0 / 255)]
    for filters in (32, 64, 128):
        stack += [conv(filters), layers.Dropout(config.dropout), conv(filters), layers.MaxPooling2D((2, 2))]
    stack += [
        layers.Flatten(),
        layers.Dropout(config.dropout),
        layers.Dense(1024, activation="relu"),
        layers.Dropout(config.dropout),
        layers.Dense(512, activation="relu"),
        layers.Dropout(config.dropout),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ]
    model = keras.Sequential(stack, name="cifar10_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
