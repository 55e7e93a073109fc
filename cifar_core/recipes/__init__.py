"""Recipe parts: learning-rate schedules, optimizers, loss, weight averaging, early stopping and
test-time augmentation. Each is a small function of the TrainConfig; none imports a network.
Beside them: `presets` (the named recipes: Assignment, Fast, Best) and `schedules` (the
learning-rate schedule as a Keras object saved with the optimizer).

May import: config, files, paths, quiet, trainer_lock, data.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifar_core.config import TrainConfig
from cifar_core.files import replace_atomically

DEFAULT_TRAIN_IMAGES = 50_000
LOOKAHEAD_EVERY = 5  # steps between lookahead updates (airbench)
LOOKAHEAD_FILE = "lookahead.npz"  # lookahead's slow weights beside the run's checkpoint


def steps_per_epoch_for(config: TrainConfig, num_train: int) -> int:
    return max(1, math.ceil(num_train / config.batch_size))


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    """A float for a constant rate without warm-up (the assignment's Adam), else a schedule."""
    if config.lr_schedule == "constant" and config.warmup_epochs == 0:
        return config.learning_rate
    from cifar_core.recipes.schedules import WarmupSchedule

    return WarmupSchedule(
        peak=config.learning_rate, kind=config.lr_schedule,
        warmup_steps=config.warmup_epochs * steps_per_epoch, total_steps=config.epochs * steps_per_epoch,
        start_factor=config.lr_start_factor, end_factor=config.lr_end_factor)




def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    """Adam, AdamW or SGD with Nesterov momentum; weight decay is Keras' decoupled kind."""
    import keras

    lr = make_schedule(config, steps_per_epoch)
    ema = dict(use_ema=True, ema_momentum=config.averaging_decay) if config.weight_averaging == "ema" else {}
    decay = config.weight_decay or None
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=config.momentum, nesterov=True,
                                    weight_decay=decay, **ema)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate=lr, weight_decay=decay, **ema)


def compile_model(model: Any, config: TrainConfig, steps_per_epoch: Optional[int] = None) -> None:
    import keras

    steps = steps_per_epoch or steps_per_epoch_for(config, DEFAULT_TRAIN_IMAGES)
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing) \
        if config.label_smoothing else "categorical_crossentropy"
    model.compile(optimizer=make_optimizer(config, steps), loss=loss, metrics=["accuracy"])


# --- callbacks ------------------------------------------------------------------------------

def recipe_callbacks(config: TrainConfig, steps_per_epoch: int, state_dir: Optional[Path] = None) -> list:
    """Keras callbacks the recipe needs besides the lab's live progress. `state_dir`: the run
    folder, where state the checkpoint does not hold (lookahead's slow weights) is kept."""
    import keras

    out = []
    if config.weight_averaging == "lookahead":
        out.append(make_lookahead(config, steps_per_epoch, state_dir))
    if config.early_stopping_patience:
        # mode="max" stated: Keras' "auto" finds the direction in the compiled metrics, which a
        # custom distributed loop (cifar_core/training/distributed_loop.py) does not have
        out.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", restore_best_weights=True,
                                                 patience=config.early_stopping_patience))
    return out


def lookahead_decay(step: int, total_steps: int, final_decay: float) -> float:
    """airbench's lookahead: the averaging grows from none to final_decay**5 per update, cubically."""
    return final_decay ** LOOKAHEAD_EVERY * (min(step, total_steps) / max(1, total_steps)) ** 3


def save_slow_weights(path: Path, slow: list[np.ndarray], step: int) -> None:
    """Lookahead's slow weights after optimizer step `step`, written whole or not at all; numpy
    arrays only, never pickles."""
    replace_atomically(path, lambda tmp: np.savez(tmp, step=np.int64(step),
                                                  **{f"slow_{i}": w for i, w in enumerate(slow)}))


def load_slow_weights(path: Path, step: int, like: list[np.ndarray]) -> Optional[list[np.ndarray]]:
    """The slow weights saved at optimizer step `step` for weights shaped as `like`; None when there
    are none (a run from before they were saved), they are unreadable, or they belong to another
    step (a kill between the checkpoint and this file) or model."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if int(f["step"]) != step or len(f.files) != len(like) + 1:
                return None
            slow = [f[f"slow_{i}"] for i in range(len(like))]
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if any(s.shape != w.shape or s.dtype != w.dtype for s, w in zip(slow, like)):
        return None
    return slow


def make_lookahead(config: TrainConfig, steps_per_epoch: int, state_dir: Optional[Path] = None):
    """The lookahead callback; with `state_dir`, its slow weights are saved there at each epoch's end
    (after the checkpoint) and a resumed fit starts from the ones saved at its checkpoint's step."""
    import keras

    class Lookahead(keras.callbacks.Callback):
        """Every LOOKAHEAD_EVERY steps: slow = lerp(slow, fast, 1 - decay); fast = slow.
        The slow copy starts from the one saved with the checkpoint fit resumes from, else
        from the weights fit starts with (a new run, or one from before slow copies were saved)."""

        total = config.epochs * steps_per_epoch
        restored = False  # whether this fit's slow weights came from the state file

        def set_total_steps(self, steps: float) -> None:
            """Reach the final averaging at `steps` (a time budget's pacer moved the run's end)."""
            self.total = int(steps)

        def _step(self) -> int:
            return int(self.model.optimizer.iterations.numpy())

        def on_train_begin(self, logs=None):
            fast = [np.array(v) for v in self.model.weights]
            saved = load_slow_weights(state_dir / LOOKAHEAD_FILE, self._step(), fast) if state_dir else None
            self.restored = saved is not None
            self.slow = saved if saved is not None else fast

        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if step % LOOKAHEAD_EVERY:
                return
            decay = lookahead_decay(step, self.total, config.averaging_decay)
            for slow, var in zip(self.slow, self.model.weights):
                if not np.issubdtype(slow.dtype, np.floating):
                    continue
                slow += (1.0 - decay) * (np.asarray(var) - slow)
                var.assign(slow)

        def on_epoch_end(self, epoch, logs=None):
            # after the lab's checkpoint (an earlier callback): a resume from it finds this step's copy
            if state_dir is not None:
                save_slow_weights(state_dir / LOOKAHEAD_FILE, self.slow, self._step())

    return Lookahead()


# --- test-time augmentation -------------------------------------------------------------------

def tta_views(images: np.ndarray, level: str) -> list[np.ndarray]:
    """The augmented copies TTA averages over: flip adds the mirror image; flip_shift adds copies
    shifted one pixel up-left and down-right (reflect-padded), and their mirrors."""
    views = [images]
    if level in ("flip", "flip_shift"):
        views.append(images[:, :, ::-1])
    if level == "flip_shift":
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        h, w = images.shape[1:3]
        for shifted in (padded[:, :h, :w], padded[:, 2:h + 2, 2:w + 2]):
            views += [shifted, shifted[:, :, ::-1]]
    return views


def predict_tta(predict, images: np.ndarray, level: str, plain: Optional[np.ndarray] = None) -> np.ndarray:
    """Mean of `predict` (images -> probabilities) over the TTA views of `images`; `plain`, the
    predictions for the unaugmented images when already known, stands in for the first view."""
    views = tta_views(images, level)
    first = plain if plain is not None else predict(images)
    return np.mean([first, *(predict(np.ascontiguousarray(v)) for v in views[1:])], axis=0)
