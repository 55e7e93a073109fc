"""The learning-rate schedule as a registered Keras object, saved with the optimizer so a resumed
run continues at its step."""
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
        self.warmup_steps = float(warmup_steps)
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        # a variable, read by the compiled step: a time budget's pacer moves the end of the
        # schedule while the run trains (cifar_core/planning/pacing.py)
        self._total = keras.Variable(float(total_steps), dtype="float32", trainable=False, name="schedule_total")

    @property
    def total_steps(self) -> float:
        return float(keras.ops.convert_to_numpy(self._total))

    def set_total_steps(self, steps: float) -> None:
        """End the decay at `steps` instead (the step count the optimizer has reached stays)."""
        self._total.assign(float(steps))

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warm_lr = self.peak * (self.start_factor + (1 - self.start_factor) * step / max(self.warmup_steps, 1e-9))
        span = ops.maximum(ops.cast(self._total, "float32") - self.warmup_steps, 1.0)
        frac = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
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

