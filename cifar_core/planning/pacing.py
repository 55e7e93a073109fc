"""Keep a time-budgeted run on time while it trains.

The planner lays a run out from the probe's speed, but a shared machine can sustain less than its
burst: a 15-minute plan on the AMX Xeon ran 22% over, its epochs taking 49-57 s where the probe
and a 5-minute run had 42-44 s. The pacer watches the training seconds the run really spends
(validation excluded, as in `train_seconds`) and, every few steps, works out how many steps still
fit in the budget at the speed of the last minute of training. When that moves the run's end, it
moves the end of the learning-rate schedule (and of lookahead's averaging) with it, so the run
still anneals to its final rate, and it ends training at that step, mid-epoch if need be.

A run never trains past its plan (fit's epochs are fixed when it starts): on a machine faster
than its probe it ends a little early. Both are recorded in plan.json's outcome.
"""
from __future__ import annotations

import time
from typing import Any, Optional, Sequence

CHECK_EVERY = 10  # steps between two looks at the clock
WARM_STEPS = 5  # the first steps of a fit trace the graph: they are not a speed
WINDOW_SECONDS = 60.0  # the speed of the most recent minute of training
MIN_WINDOW_SECONDS = 2.0  # no decision on less than this much measured training
MOVE_AT = 0.005  # re-lay the schedule when the end moves by more than this share of the plan
MAX_MOVES_RECORDED = 40  # the latest moves kept in plan.json; move_count counts them all
clock = time.perf_counter  # seconds; a test may drive the pacer with its own clock


def steps_that_fit(step: int, trained_seconds: float, budget_seconds: float, steps_per_second: float,
                   planned_steps: int) -> int:
    """The step the run should end at: what the remaining budget holds at this speed, never past
    the plan, never before the next step."""
    left = max(0.0, budget_seconds - trained_seconds)
    return int(min(planned_steps, max(step + 1, step + int(left * steps_per_second))))


def make_pacer(budget_seconds: float, planned_steps: int, *, steps_per_epoch: int, initial_epoch: int = 0,
               trained_before: float = 0.0, followers: Sequence[Any] = ()):
    """A Keras callback that keeps the run within `budget_seconds` of training.

    `planned_steps`: the optimizer steps the plan lays out (epochs x steps_per_epoch);
    `trained_before`: training seconds a resumed run already spent; `followers`: other callbacks
    with a `set_total_steps` (lookahead) that must end with the schedule.
    """
    import keras

    from cifar_core.models.keras_private import optimizer_schedule

    class Pacer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.end = int(planned_steps)
            self.step = initial_epoch * steps_per_epoch
            self.closed_seconds = float(trained_before)  # training seconds of the epochs before this one
            self.report: dict[str, Any] = {"budget_seconds": budget_seconds, "planned_steps": int(planned_steps),
                                           "moves": []}
            self._samples: list[tuple[float, int]] = []
            self._epoch_start = 0.0
            self._last_batch = 0.0
            self._fit_steps = 0

        def on_train_begin(self, logs=None):
            schedule = optimizer_schedule(self.model.optimizer)
            self._schedule = schedule
            if schedule is not None:  # a resumed paced run: its checkpoint's schedule ends earlier
                self.end = min(self.end, int(round(schedule.total_steps)))
            self.step = max(self.step, int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_start = self._last_batch = clock()

        def on_train_batch_end(self, batch, logs=None):
            self._last_batch = clock()
            self.step += 1
            self._fit_steps += 1
            if self._fit_steps > WARM_STEPS and self._fit_steps % CHECK_EVERY == 0:
                self._look(self.trained_seconds)
            if self.step >= self.end:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            self.closed_seconds += self._last_batch - self._epoch_start
            self._epoch_start = self._last_batch  # closed: counted once

        def on_train_end(self, logs=None):
            self.report.update(steps=self.step, trained_seconds=round(self.trained_seconds, 1),
                               ended_early=self.step < planned_steps)

        @property
        def trained_seconds(self) -> float:
            return self.closed_seconds + (self._last_batch - self._epoch_start)

        def _look(self, trained: float) -> None:
            self._samples.append((trained, self.step))
            while len(self._samples) > 2 and trained - self._samples[1][0] >= WINDOW_SECONDS:
                self._samples.pop(0)
            t0, s0 = self._samples[0]
            if trained >= budget_seconds:  # spent: whatever the speed, the next step is the last
                end = self.step + 1
            elif trained - t0 < MIN_WINDOW_SECONDS:
                return
            else:
                end = steps_that_fit(self.step, trained, budget_seconds, (self.step - s0) / (trained - t0), planned_steps)
            if abs(end - self.end) > MOVE_AT * planned_steps:
                self.set_end(end, trained)

        def set_end(self, end: int, trained: Optional[float] = None) -> None:
            self.end = int(end)
            for follower in (self._schedule, *followers):
                if follower is not None:
                    follower.set_total_steps(self.end)
            moves = self.report["moves"] + [{"step": self.step, "end": self.end,
                                             "trained_seconds": round(trained or self.trained_seconds, 1)}]
            self.report["moves"] = moves[-MAX_MOVES_RECORDED:]  # the latest: the last one is where it ended
            self.report["move_count"] = self.report.get("move_count", 0) + 1

    return Pacer()
