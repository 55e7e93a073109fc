"""Plan a run for a training-time budget: the network, epochs, batch and precision expected to
reach the best test accuracy within that many seconds of training on this machine.

Seconds come from this machine's probe (`probe`), corrected by the measured overhead of a real
run (data pipeline, callbacks, the first epoch's tracing); accuracy from the table of measured
runs (`table`). The schedule is the Fast recipe's one-cycle, laid over exactly the planned
epochs, so a run that keeps to the plan ends with its learning rate annealed.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

from cifar_core.config import TrainConfig
from cifar_core.recipes.presets import PRESETS, WARMUP_SHARE, preset_config, recipe_fields
from cifar_core.planning import table
from cifar_core.planning.probe import Candidate, Probe, resolve_precision

DEFAULT_TRAIN_IMAGES = 50_000
# A real run against the probe's bare steps: the first epoch traces the graph (STARTUP), then it
# trains at EFFICIENCY x the probe's speed (tf.data, the live and lookahead callbacks cost little):
# seconds = STARTUP + images / (probe speed * EFFICIENCY). `python bench/budget.py --calibrate`
# measured 0.997, 0.986 and 1.02 (quarter, half, full width, bfloat16) and 1.4-2.5 s on the AMX
# Xeon (BENCHMARKS.md section 9); 0.98 and 3 s keep a plan on the safe side of its budget.
RUN_EFFICIENCY = 0.98
STARTUP_SECONDS = 3.0
MAX_BUDGET_SECONDS = 7 * 24 * 3600
RUNNERS_UP = 3


class PlanError(ValueError):
    """A budget that cannot be read, or that no network fits."""


def parse_budget(text: Any) -> float:
    """Seconds from '90s', '5m', '1.5h', '1h30m' or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s?)?", raw)
        if not raw or parts is None or not any(parts.groups()):
            raise PlanError(f"cannot read the budget {str(text)!r}: give a time such as 90s, 5m or 1h")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise PlanError(f"the budget must be more than 0 seconds, got {text!r}")
    if seconds > MAX_BUDGET_SECONDS:
        raise PlanError(f"the budget must be at most a week, got {text!r}")
    return seconds


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


@dataclasses.dataclass(frozen=True)
class Option:
    """One candidate network trained for as many steps as fit the budget, in whole epochs of
    `steps_per_epoch` steps (a full pass, or fewer so the last of them ends on time)."""

    candidate: Candidate
    epochs: int
    steps_per_epoch: int
    full_steps: int  # steps of one full pass over the training images
    seconds: float  # predicted training seconds
    expected: Optional[table.Expected]  # None: no measured accuracy for this network
    capped: bool = False  # the budget held more, but the table does not reach further (table.max_epochs)

    @property
    def passes(self) -> float:
        """How many full passes over the training images the run makes."""
        return self.epochs * self.steps_per_epoch / self.full_steps

    @property
    def score(self) -> float:
        return self.expected.accuracy_tta if self.expected else 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.candidate
        out = {"architecture": c.architecture, "widths": list(c.widths), "batch_size": c.batch_size,
               "precision": c.precision, "epochs": self.epochs, "steps_per_epoch": self.steps_per_epoch,
               "passes": round(self.passes, 3), "label": c.label, "predicted_seconds": round(self.seconds, 1),
               "capped": self.capped}
        if self.expected:
            out.update(predicted_accuracy=round(self.expected.accuracy, 4),
                       predicted_accuracy_tta=round(self.expected.accuracy_tta, 4),
                       extrapolated=self.expected.extrapolated)
        return out


@dataclasses.dataclass(frozen=True)
class Plan:
    budget_seconds: float
    chosen: Option
    runners_up: tuple[Option, ...]
    config: TrainConfig  # what the run trains
    probe: Probe
    precision_note: str  # how the precision was decided

    def to_dict(self) -> dict[str, Any]:
        """What a run records in plan.json."""
        return {"budget_seconds": self.budget_seconds, "chosen": self.chosen.to_dict(),
                "accuracy_for": "all 50,000 training images" if self.config.train_subset is None
                else f"all 50,000 training images, not this run's {self.config.train_subset}",
                "runners_up": [o.to_dict() for o in self.runners_up], "precision_note": self.precision_note,
                "machine": self.probe.machine, "probe_measured_at": self.probe.measured_at,
                "table": table.MEASURED_ON, "run_efficiency": RUN_EFFICIENCY, "startup_seconds": STARTUP_SECONDS}


def predicted_seconds(images_per_second: float, epochs: float, num_train: int) -> float:
    return _seconds(images_per_second, epochs * num_train)


def _seconds(images_per_second: float, images: float) -> float:
    """Predicted training seconds of a run that trains on that many images (the one formula)."""
    return STARTUP_SECONDS + images / (images_per_second * RUN_EFFICIENCY)


def fill(budget_seconds: float, images_per_second: float, batch_size: int, num_train: int) -> tuple[int, int, int]:
    """(epochs, steps per epoch, steps of a full pass) that use the budget to within a few steps:
    whole passes where they fit exactly, else the fewest epochs of equal, slightly shorter ones."""
    full = math.ceil(num_train / batch_size)
    total = int((budget_seconds - STARTUP_SECONDS) * images_per_second * RUN_EFFICIENCY // batch_size)
    if total < 1:
        return 0, full, full
    layouts = []  # whole passes only, or one more epoch of equal, shorter ones: the one training longer
    for epochs in {max(1, total // full), math.ceil(total / full)}:
        layouts.append((epochs * min(full, total // epochs), -epochs, min(full, total // epochs)))
    steps_total, minus_epochs, steps = max(layouts)
    return -minus_epochs, steps, full


def _allowed_precisions(probe: Probe, precision: str) -> set[str]:
    if precision != "auto":
        return {precision}
    half = "float16" if probe.machine.get("device", "cpu").startswith("gpu") else "bfloat16"
    chosen, _ = resolve_precision("auto", TrainConfig(architecture="airbench"), probe)
    return {chosen} if chosen == half else {"float32"}


def options(budget_seconds: float, probe: Probe, *, precision: str = "auto",
            widths: Optional[tuple[int, int, int]] = None, num_train: int = DEFAULT_TRAIN_IMAGES,
            accuracy_table: Optional[dict] = None) -> list[Option]:
    """Every probed airbench candidate that fits the budget for at least its shortest measured run,
    at the most epochs that fit, but never past `table.max_epochs` (twice its longest measured run:
    such an option is `capped` and leaves part of the budget unused), best first."""
    found = []
    for speed, shortest, longest in _candidates(probe, precision, widths, accuracy_table):
        c = speed.candidate
        epochs, steps, full = fill(budget_seconds, speed.images_per_second, c.batch_size, num_train)
        passes = epochs * steps / full
        if passes < shortest:
            continue
        capped = passes > longest
        if capped:
            epochs, steps = int(longest), full
            passes = float(epochs)
        seconds = _seconds(speed.images_per_second, epochs * steps * c.batch_size)
        # the table's epochs are passes over all 50,000 training images: on a subset it only ranks the options
        found.append(Option(c, epochs, steps, full, seconds,
                            table.expected(c.architecture, c.widths, c.batch_size, passes, accuracy_table), capped))
    return sorted(found, key=lambda o: (-o.score, o.seconds))


def _candidates(probe: Probe, precision: str, widths: Optional[tuple[int, int, int]],
                accuracy_table: Optional[dict]) -> list[tuple[Any, int, float]]:
    """(probed speed, the fewest and the most epochs a plan may give it) for each network a plan may
    choose: airbench widths with a measured accuracy, in the allowed precision (and width, if fixed)."""
    allowed = _allowed_precisions(probe, precision)
    out = []
    for speed in probe.speeds:
        c = speed.candidate
        if c.architecture != "airbench" or c.precision not in allowed or (widths and c.widths != tuple(widths)):
            continue
        shortest = table.min_epochs(c.architecture, c.widths, c.batch_size, accuracy_table)
        if shortest is None:
            continue
        out.append((speed, shortest, table.max_epochs(c.architecture, c.widths, c.batch_size, accuracy_table)))
    return out


def smallest_budget(probe: Probe, *, precision: str = "auto", widths: Optional[tuple[int, int, int]] = None,
                    num_train: int = DEFAULT_TRAIN_IMAGES, accuracy_table: Optional[dict] = None) -> Optional[float]:
    """The shortest budget any candidate fits (its shortest measured run)."""
    times = [predicted_seconds(s.images_per_second, shortest, num_train)
             for s, shortest, _ in _candidates(probe, precision, widths, accuracy_table)]
    return min(times, default=None)


def longest_budget(probe: Probe, *, precision: str = "auto", widths: Optional[tuple[int, int, int]] = None,
                   num_train: int = DEFAULT_TRAIN_IMAGES, accuracy_table: Optional[dict] = None) -> Optional[float]:
    """The longest training any plan lays out here: a candidate at `table.max_epochs`. A larger
    budget is planned as this much (the rest unused), never extrapolated further."""
    times = [_seconds(s.images_per_second, int(longest) * math.ceil(num_train / s.candidate.batch_size)
                      * s.candidate.batch_size)  # whole steps, as `options` lays them out
             for s, _, longest in _candidates(probe, precision, widths, accuracy_table)]
    return max(times, default=None)


def plan(budget: Any, probe: Probe, *, base: Optional[TrainConfig] = None, precision: str = "auto",
         widths: Optional[tuple[int, int, int]] = None, accuracy_table: Optional[dict] = None) -> Plan:
    """The best run for `budget` (seconds or '5m') on the probed machine.

    Args:
      base: the config whose other fields the run keeps (data, subsets, seed, preset name, recipe
        knobs the plan does not decide); default: the Fast recipe.
      precision, widths: constrain the plan to that precision or network width.
    Raises:
      PlanError: an unreadable budget, or one too small for any candidate (it says the smallest).
    """
    seconds = parse_budget(budget)
    base = base or preset_config("budget")
    num_train = base.train_subset or DEFAULT_TRAIN_IMAGES
    found = options(seconds, probe, precision=precision, widths=widths, num_train=num_train,
                    accuracy_table=accuracy_table)
    if not found:
        least = smallest_budget(probe, precision=precision, widths=widths, num_train=num_train,
                                accuracy_table=accuracy_table)
        if least is None:
            raise PlanError("this machine's probe measured no network that matches the plan's constraints")
        raise PlanError(f"a budget of {format_seconds(seconds)} is too small for any network here: the smallest "
                        f"possible is about {format_seconds(math.ceil(least))} (the shortest measured run of the fastest network)")
    best = found[0]
    others, seen = [], {best.candidate}
    for option in found[1:]:
        if option.candidate not in seen and len(others) < RUNNERS_UP:
            others.append(option)
            seen.add(option.candidate)
    c = best.candidate
    recipe = c.config()
    decided = dict(architecture="airbench", widths=c.widths, batch_size=c.batch_size, precision=c.precision,
                   epochs=best.epochs, steps_per_epoch=None if best.steps_per_epoch == best.full_steps else best.steps_per_epoch,
                   warmup_epochs=round(WARMUP_SHARE * best.epochs, 3), learning_rate=recipe.learning_rate)
    template = {f: getattr(recipe, f) for f in recipe_fields()} if base.architecture != "airbench" else {}
    config = base.replace(**{**template, **decided})
    note = resolve_precision(precision, config, probe)[1] if precision == "auto" else "chosen"
    return Plan(seconds, best, tuple(others), config, probe, note)


def preset_expectation(name: str, probe: Optional[Probe]) -> str:
    """What a preset is expected to take and reach on this machine, from its probe (never another
    machine's numbers); says so when the machine was never probed."""
    preset = PRESETS[name]
    if probe is None:
        return "not measured on this machine yet: measure it (about half a minute) to see the expected time"
    if preset.budget_seconds:
        try:
            p = plan(preset.budget_seconds, probe, base=None)
        except PlanError as exc:
            return str(exc)
        return describe_option(p.chosen)
    config = TrainConfig()
    speed = probe.speed(Candidate("assignment", config.widths, config.batch_size, config.precision))
    if not speed:
        return "the probe did not measure the assignment's network"
    seconds = predicted_seconds(speed, config.epochs, DEFAULT_TRAIN_IMAGES)
    return (f"about {format_seconds(seconds)} of training here ({config.epochs} epochs at {speed:,.0f} img/s "
            f"measured); it reached 79.90% on the official files, 76.9% on the JPEG copy")


def describe_option(option: Option) -> str:
    """'airbench half width, batch 512, bfloat16, 12 epochs: about 4.8 min of training, 88.1% ...'."""
    shorter = "" if option.steps_per_epoch == option.full_steps else \
        f" of {option.steps_per_epoch} steps ({option.passes:.2f} passes over the data)"
    text = f"{option.candidate.label}, {option.epochs} epochs{shorter}: about {format_seconds(option.seconds)} of training"
    if option.expected:
        text += (f", {option.expected.accuracy:.1%} ({option.expected.accuracy_tta:.1%} with TTA) expected"
                 + (" (extrapolated past the measured runs, one doubling at most)" if option.expected.extrapolated else ""))
    if option.capped:
        text += ("; the rest of the budget stays unused: no network has been measured long enough here to plan "
                 "a longer run without extrapolating more than one doubling")
    return text
