"""The assignment's CNN, with the 1/255 rescaling inside so a saved model takes raw uint8 pixels."""
from __future__ import annotations

from cifar_core.config import TrainConfig
from cifar_core.data import INPUT_SHAPE, NUM_CLASSES

# Pinned by tests: the assignment's network has exactly this many trainable parameters.
ASSIGNMENT_PARAMS = 2_915_114


def build_network(config: TrainConfig = TrainConfig()):
    """Conv 32-32 / 64-64 / 128-128 (Dropout after the first of each pair, MaxPool after the
    second), Flatten, Dropout, Dense 1024, Dropout, Dense 512, Dropout, Dense 10 softmax."""
    import keras
    from keras import layers

    from cifar_core.models.augment import augmentation_layers

    # Every layer is named here: Keras' automatic names come from process-wide counters, which
    # another thread's keras.backend.clear_session() (Streamlit calls it after each rerun) can
    # reset while the training thread builds the model, giving "unique names" errors.
    def conv(filters: int, name: str) -> layers.Layer:
        return layers.Conv2D(filters, (3, 3), padding="same", activation="relu", name=name)

    stack = [keras.Input(shape=INPUT_SHAPE, name="pixels"), *augmentation_layers(config),
             layers.Rescaling(1.0 / 255, name="rescale")]
    for block, filters in enumerate((32, 64, 128), start=1):
        stack += [
            conv(filters, f"block{block}_conv1"),
            layers.Dropout(config.dropout, name=f"block{block}_dropout"),
            conv(filters, f"block{block}_conv2"),
            layers.MaxPooling2D((2, 2), name=f"block{block}_pool"),
        ]
    stack += [
        layers.Flatten(name="flatten"),
        layers.Dropout(config.dropout, name="flatten_dropout"),
        layers.Dense(1024, activation="relu", name="dense1024"),
        layers.Dropout(config.dropout, name="dense1024_dropout"),
        layers.Dense(512, activation="relu", name="dense512"),
        layers.Dropout(config.dropout, name="dense512_dropout"),
        layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="classes"),  # float32 under any policy
    ]
    return keras.Sequential(stack, name="cifar10_cnn")
