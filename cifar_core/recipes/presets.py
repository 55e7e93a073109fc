"""Named training recipes. A preset fills a TrainConfig; every field stays editable and the run
records the preset's name and the full resolved config.

Learning rates are Keras' (mean loss over the batch). airbench states its SGD rate per 1024
examples of a summed loss, divided by 1 + 1/(1 - momentum): 11.5 / 1024 / (1 + 1/0.15) * 1024
= 1.5 for a batch of 1024, i.e. 1.5 * batch / 1024 here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from cifar_core.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    title: str  # for the preset control
    description: str  # one line: what it is
    values: dict[str, Any]  # TrainConfig fields it sets; the rest keep their defaults
    # A budget preset is the best plan for this many seconds of training on the machine it runs on
    # (cifar_core.planning): its network, epochs, batch and precision depend on the machine, and its
    # expected time and accuracy come from that machine's probe. None: a fixed recipe.
    budget_seconds: Optional[float] = None


# What a budget's plan decides; the rest of a budget preset's recipe is fixed (or follows from these).
PLANNED_FIELDS = ("architecture", "widths", "batch_size", "precision", "epochs", "steps_per_epoch", "warmup_epochs",
                  "learning_rate")
WARMUP_SHARE = 0.23  # airbench's warm-up: 23% of the steps


def airbench_learning_rate(batch_size: int) -> float:
    return round(1.5 * batch_size / 1024, 6)


def _airbench(epochs: float, widths: tuple[int, int, int], batch_size: int) -> dict[str, Any]:
    """airbench94's recipe at a given length, width and batch (warm-up over 23% of the steps)."""
    return dict(
        architecture="airbench", widths=widths, activation="relu", whitening=True,
        epochs=int(epochs), batch_size=batch_size,
        optimizer="sgd", momentum=0.85, learning_rate=airbench_learning_rate(batch_size),
        weight_decay=0.009,  # airbench's 0.0153 per 1024 examples, decoupled, through momentum
        lr_schedule="onecycle", warmup_epochs=round(WARMUP_SHARE * epochs, 3), lr_start_factor=0.2, lr_end_factor=0.07,
        label_smoothing=0.2, augment="flip_translate", translate_pixels=2,
        weight_averaging="lookahead", averaging_decay=0.95, tta="flip_shift", dropout=0.0,
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "assignment", "Assignment",
        "The course assignment as given: conv 32-32/64-64/128-128 + dense head, Adam, batch 64, 25 epochs, "
        "float32 (it reproduces the seed; bfloat16 is one choice away under Recipe details).",
        {},
    ),
    Preset(
        "fast", "Fast (5 minutes)",
        "The best airbench-style net this machine trains in 5 minutes: whitening, BatchNorm, one-cycle "
        "Nesterov SGD, label smoothing, flip+shift, lookahead, TTA; width, epochs and precision planned "
        "from this machine's measured speed.",
        _airbench(4, (16, 64, 64), 512), budget_seconds=300.0,
    ),
    Preset(
        "best", "Best (30 minutes)",
        "The same recipe planned for 30 minutes of training on this machine.",
        _airbench(10, (32, 128, 128), 512), budget_seconds=1800.0,
    ),
)}
DEFAULT_PRESET = "assignment"


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The config of preset `name`, with `overrides` applied (which keep the preset's name)."""
    if name == "budget":  # a plan for a budget of the user's: the Fast recipe, sized by the planner
        return TrainConfig(**{**PRESETS["fast"].values, "preset": name, **overrides})
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name].values, "preset": name, **overrides})


def recipe_fields() -> tuple[str, ...]:
    """Fields a preset decides (not data, subsets or seed)."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig)
                 if f.name not in ("data", "train_subset", "test_subset", "seed", "preset", "validation_batch_size"))


def matching_preset(config: TrainConfig) -> str:
    """The preset whose recipe `config` has, else "custom" (a budget preset's planned fields may
    be anything its plan chose; a custom budget's plan is the Fast recipe's)."""
    order = sorted(PRESETS, key=lambda n: n != config.preset)  # its own preset first: Fast and Best differ only in plan
    for name in order:
        base = preset_config(name)
        if PRESETS[name].budget_seconds or config.preset == "budget":  # any plan of the recipe
            base = base.replace(widths=config.widths, batch_size=config.batch_size, precision=config.precision,
                                epochs=config.epochs, steps_per_epoch=config.steps_per_epoch, learning_rate=airbench_learning_rate(config.batch_size),
                                warmup_epochs=round(WARMUP_SHARE * config.epochs, 3))
        if all(getattr(base, f) == getattr(config, f) for f in recipe_fields()):
            return "budget" if config.preset == "budget" and PRESETS[name].budget_seconds else name
    return "custom"
