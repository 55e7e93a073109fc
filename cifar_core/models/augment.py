"""Training-only augmentation as Keras layers at the model's input (inactive at inference)."""
from __future__ import annotations

from cifar_core.config import TrainConfig
from cifar_core.data import INPUT_SHAPE

AUGMENT_PREFIX = "augment_"  # the names of these layers, in every network that has them


def augmentation_layers(config: TrainConfig) -> list:
    """Random horizontal flip, then a random shift of up to `translate_pixels` (reflect-padded,
    whole pixels): Keras preprocessing layers, so a saved model needs no custom code."""
    from keras import layers

    out = []
    if config.augment in ("flip", "flip_translate"):
        out.append(layers.RandomFlip("horizontal", seed=config.seed, name=AUGMENT_PREFIX + "flip"))
    if config.augment == "flip_translate":
        factor = config.translate_pixels / INPUT_SHAPE[0]
        out.append(layers.RandomTranslation(factor, factor, fill_mode="reflect", interpolation="nearest",
                                            seed=config.seed + 1, name=AUGMENT_PREFIX + "translate"))
    return out


def model_augmentation(model) -> list:
    """The augmentation layers of a built or loaded model, in the order its input meets them."""
    return [layer for layer in model.layers if layer.name.startswith(AUGMENT_PREFIX)]


def augment_like_training(model, images, seed: int = 0):
    """`images` (N, 32, 32, 3) uint8 as the model's own augmentation layers deliver them to the
    network in training (training=True), as uint8; the images unchanged when it has none."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(seed)
    x = np.asarray(images, np.float32)
    for layer in model_augmentation(model):
        x = np.asarray(layer(x, training=True))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
