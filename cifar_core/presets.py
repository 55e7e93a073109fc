"""Named training recipes. A preset fills a TrainConfig; every field stays editable and the run
records the preset's name and the full resolved config.

Learning rates are Keras' (mean loss over the batch). airbench states its SGD rate per 1024
examples of a summed loss, divided by 1 + 1/(1 - momentum): 11.5 / 1024 / (1 + 1/0.15) * 1024
= 1.5 for a batch of 1024, i.e. 1.5 * batch / 1024 here.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    title: str  # for the preset control
    description: str  # one line: what it is and what it reaches
    expected: str  # expected training time and accuracy on the lab's 2-core CPU (BENCHMARKS.md)
    values: dict[str, Any]  # TrainConfig fields it sets; the rest keep their defaults


def _airbench(epochs: float, widths: tuple[int, int, int], batch_size: int) -> dict[str, Any]:
    """airbench94's recipe at a given length, width and batch (warm-up over 23% of the steps)."""
    return dict(
        architecture="airbench", widths=widths, activation="relu", whitening=True,
        epochs=int(epochs), batch_size=batch_size,
        optimizer="sgd", momentum=0.85, learning_rate=round(1.5 * batch_size / 1024, 6),
        weight_decay=0.009,  # airbench's 0.0153 per 1024 examples, decoupled, through momentum
        lr_schedule="onecycle", warmup_epochs=round(0.23 * epochs, 3), lr_start_factor=0.2, lr_end_factor=0.07,
        label_smoothing=0.2, augment="flip_translate", translate_pixels=2,
        weight_averaging="lookahead", averaging_decay=0.95, tta="flip_shift", dropout=0.0,
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "assignment", "Assignment",
        "The course assignment as given: conv 32-32/64-64/128-128 + dense head, Adam, batch 64, 25 epochs.",
        "1-2 hours on a 2-core CPU for ~77% (the assignment's script: 76.9% in 1 h 53 min on the JPEG copy)",
        {},
    ),
    Preset(
        "fast", "Fast",
        "airbench-style net at quarter width (16/64/64): whitening, BatchNorm, one-cycle Nesterov SGD, "
        "label smoothing, flip+shift, lookahead, TTA; 4 epochs.",
        "about 5 minutes of training on a 2-core CPU: 79.1% (80.6% with TTA) in 273-285 s, two runs (BENCHMARKS.md section 5)",
        _airbench(4, (16, 64, 64), 512),
    ),
    Preset(
        "best", "Best",
        "The same recipe at half airbench94's width (32/128/128) and 10 epochs: the best accuracy per "
        "CPU-minute this lab's recipes reach here.",
        "about 28 minutes of training on a 2-core CPU: 86.7% in 1,680 s (BENCHMARKS.md section 5)",
        _airbench(10, (32, 128, 128), 512),
    ),
)}
DEFAULT_PRESET = "assignment"


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    """The config of preset `name`, with `overrides` applied (which keep the preset's name)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name].values, "preset": name, **overrides})


def recipe_fields() -> tuple[str, ...]:
    """Fields a preset decides (not data, subsets or seed)."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig)
                 if f.name not in ("data", "train_subset", "test_subset", "seed", "preset", "validation_batch_size"))


def matching_preset(config: TrainConfig) -> str:
    """The preset whose recipe `config` has, else "custom"."""
    for name in PRESETS:
        base = preset_config(name)
        if all(getattr(base, f) == getattr(config, f) for f in recipe_fields()):
            return name
    return "custom"
