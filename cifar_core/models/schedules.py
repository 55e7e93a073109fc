"""The learning-rate schedule as a registered Keras object, saved with the optimizer so a resumed
run continues at its step (cifar_core.recipe.learning_rate_at is the same formula in Python)."""
from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cifar_core")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from start_factor * peak, then constant, cosine or a straight line
    (onecycle) down to end_factor * peak at total_steps."""

    def __init__(self, peak: float, kind: str, warmup_steps: float, total_steps: float,
                 start_factor: float = 0.2, end_factor: float = 0.0):
        self.peak, self.kind = float(peak), str(kind)
        self.warmup_steps, self.total_steps = float(warmup_steps), float(total_steps)
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm_lr = self.peak * (self.start_factor + (1 - self.start_factor) * step / max(self.warmup_steps, 1e-9))
        frac = ops.clip((step - self.warmup_steps) / max(1.0, self.total_steps - self.warmup_steps), 0.0, 1.0)
        end = self.end_factor
        if self.kind == "constant":
            after = ops.ones_like(step) * self.peak
        elif self.kind == "cosine":
            after = self.peak * (end + (1 - end) * 0.5 * (1 + ops.cos(math.pi * frac)))
        else:  # onecycle
            after = self.peak * (1 - (1 - end) * frac)
        return ops.where(step < self.warmup_steps, warm_lr, after)

    def get_config(self):
        return {"peak": self.peak, "kind": self.kind, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "start_factor": self.start_factor, "end_factor": self.end_factor}
