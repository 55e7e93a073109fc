"""Training configuration: one frozen dataclass, validated at construction, saved with every run."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Optional

ARCHITECTURES = ("assignment", "assignment_bn", "airbench")
TTA_LEVELS = ("none", "flip", "flip_shift")
PRECISIONS = ("float32", "bfloat16", "float16", "auto")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; the assignment's values are the defaults."""

    epochs: int = 25  # full passes over the training set
    batch_size: int = 64  # images per gradient step
    learning_rate: float = 0.001  # peak step size (Adam's default 0.001; schedules scale it)
    dropout: float = 0.2  # drop rate of every Dropout layer
    seed: int = 7  # seeds Python, NumPy and TensorFlow, and the subset choice
    data: Optional[str] = None  # 'keras', 'synthetic' or a path; None: $CIFAR10_DATA, else 'keras'
    train_subset: Optional[int] = None  # use only this many training images (None: all)
    test_subset: Optional[int] = None  # validate and evaluate on this many test images (None: all)
    validation_batch_size: int = 256  # images per step when validating; does not change results
    # optimizer steps per epoch, at most one pass over the training images (None: one full pass); a
    # time budget's plan sets it so that its epochs fill the budget (the data streams on across epochs)
    steps_per_epoch: Optional[int] = None
    # --- the recipe (cifar_core/recipes/presets.py fills these; each knob also works on its own) ---
    preset: str = "assignment"  # the preset this config started from ("custom" once edited by hand)
    architecture: str = "assignment"  # assignment | assignment_bn | airbench (cifar_core/models/)
    widths: tuple[int, int, int] = (64, 256, 256)  # airbench: channels of its three conv blocks
    activation: str = "relu"  # relu | gelu (assignment_bn and airbench; the assignment is relu)
    whitening: bool = True  # airbench: first layer whitens 2x2 patches, set from training images
    optimizer: str = "adam"  # adam | adamw | sgd (Nesterov momentum)
    momentum: float = 0.9  # sgd: momentum
    weight_decay: float = 0.0  # decoupled: weights shrink by lr * weight_decay per step
    lr_schedule: str = "constant"  # constant | cosine | onecycle (triangular), after warm-up
    warmup_epochs: float = 0.0  # epochs from lr_start_factor * lr up to lr (onecycle: to the peak)
    lr_start_factor: float = 0.2  # warm-up starts at this fraction of learning_rate
    lr_end_factor: float = 0.0  # cosine / onecycle end at this fraction of learning_rate
    label_smoothing: float = 0.0  # share of the target spread over all classes
    augment: str = "none"  # none | flip | flip_translate (layers in the model, training only)
    translate_pixels: int = 2  # flip_translate: largest shift, reflect-padded
    weight_averaging: str = "none"  # none | ema (of weights, used at the end) | lookahead
    averaging_decay: float = 0.95  # ema: per step; lookahead: per step at the end (ramped up)
    early_stopping_patience: int = 0  # stop after this many epochs without a better val_accuracy (0: off)
    tta: str = "none"  # none | flip | flip_shift: test-time augmentation reported beside the plain accuracy
    # float32 | bfloat16 | float16 (Keras mixed policies: float32 weights, 16-bit arithmetic) | auto:
    # bfloat16 where this machine's probe measured it worth it, float16 on a GPU, else float32
    precision: str = "float32"

    def __post_init__(self) -> None:
        def need_int(name: str, low: int, high: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")

        need_int("epochs", 1, 1000)
        need_int("batch_size", 1, 8192)
        need_int("seed", 0, 2**31 - 1)
        need_int("validation_batch_size", 1, 8192)
        for name in ("train_subset", "test_subset", "steps_per_epoch"):
            if getattr(self, name) is not None:
                need_int(name, 1, 10_000_000)
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 1:
            raise ValueError(f"learning_rate must be a number in (0, 1], got {lr!r}")
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 <= d < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {d!r}")
        def need_choice(name: str, choices: tuple[str, ...]) -> None:
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")

        def need_number(name: str, low: float, high: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r}")

        need_choice("architecture", ARCHITECTURES)
        need_choice("activation", ("relu", "gelu"))
        need_choice("optimizer", ("adam", "adamw", "sgd"))
        need_choice("lr_schedule", ("constant", "cosine", "onecycle"))
        need_choice("augment", ("none", "flip", "flip_translate"))
        need_choice("weight_averaging", ("none", "ema", "lookahead"))
        need_choice("tta", TTA_LEVELS)
        need_choice("precision", PRECISIONS)
        need_number("momentum", 0.0, 0.999)
        need_number("weight_decay", 0.0, 1.0)
        need_number("warmup_epochs", 0.0, float(self.epochs))
        need_number("lr_start_factor", 0.0, 1.0)
        need_number("lr_end_factor", 0.0, 1.0)
        need_number("label_smoothing", 0.0, 0.5)
        need_number("averaging_decay", 0.0, 0.9999)
        need_int("translate_pixels", 1, 8)
        need_int("early_stopping_patience", 0, 1000)
        if not isinstance(self.whitening, bool):
            raise ValueError(f"whitening must be true or false, got {self.whitening!r}")
        if not isinstance(self.preset, str) or not self.preset.strip():
            raise ValueError(f"preset must be a name, got {self.preset!r}")
        widths = self.widths
        if isinstance(widths, list):  # from JSON
            widths = tuple(widths)
            object.__setattr__(self, "widths", widths)
        if not (isinstance(widths, tuple) and len(widths) == 3
                and all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 2048 for w in widths)):
            raise ValueError(f"widths must be three channel counts between 1 and 2048, got {widths!r}")
        if self.data is not None and (not isinstance(self.data, str) or not self.data.strip()):
            raise ValueError(f"data must be 'keras', 'synthetic' or a path, got {self.data!r}")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["widths"] = list(self.widths)
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, refusing unknown keys so a typo never passes silently."""
        if not isinstance(values, dict):
            raise ValueError(f"a config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
