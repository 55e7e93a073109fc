"""Training-only augmentation as Keras layers at the model's input (inactive at inference)."""
from __future__ import annotations

from cifar_core.config import TrainConfig
from cifar_core.data import INPUT_SHAPE


def augmentation_layers(config: TrainConfig) -> list:
    """Random horizontal flip, then a random shift of up to `translate_pixels` (reflect-padded,
    whole pixels): Keras preprocessing layers, so a saved model needs no custom code."""
    from keras import layers

    out = []
    if config.augment in ("flip", "flip_translate"):
        out.append(layers.RandomFlip("horizontal", seed=config.seed, name="augment_flip"))
    if config.augment == "flip_translate":
        factor = config.translate_pixels / INPUT_SHAPE[0]
        out.append(layers.RandomTranslation(factor, factor, fill_mode="reflect", interpolation="nearest",
                                            seed=config.seed + 1, name="augment_translate"))
    return out
