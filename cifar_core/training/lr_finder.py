"""The learning-rate range test (Smith 2015; fastai's `lr_find`): a short run from a fresh model whose
learning rate grows exponentially step by step, loss against rate, and a suggested rate with its rule.

It trains the config's network with the recipe's optimizer, loss, precision and data, and writes
nothing: no run folder, no checkpoint. It refuses to run beside a training job of this process.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional

import numpy as np

from cifar_core import trainer_lock
from cifar_core.config import TrainConfig
from cifar_core.data import NUM_CLASSES, Dataset, load_training_data, locate_source, resolve_source
from cifar_core.planning.probe import KERAS_POLICIES, resolve_precision

DEFAULT_START_LR = 1e-5
DEFAULT_END_LR = 10.0
DEFAULT_STEPS = 100  # fastai's default number of iterations
DEFAULT_SMOOTHING = 0.9  # EMA weight of the loss (debiased): ~10 steps of memory over a 100-step test
DIVERGE_FACTOR = 4.0  # stop once the smoothed loss exceeds this many times its lowest (fastai's rule)
RULES = {  # name -> the rule, in words; the first is the default
    "minimum": "a tenth of the rate at the lowest smoothed loss (fastai's lr_min)",
    "steepest": "the rate where the smoothed loss fell fastest per decade of rate, before its lowest point "
                "(fastai's lr_steep, which looks at the whole curve)",
}
DEFAULT_RULE = "minimum"


@dataclasses.dataclass(frozen=True)
class LRFinderResult:
    """One range test: the curve, how it ended, and the suggestion with the rule that chose it."""

    learning_rates: list[float]  # the rate of each step taken, growing exponentially
    losses: list[float]  # each step's training loss (the batch's mean, as Keras computes it)
    smoothed: list[float]  # debiased exponential moving average of `losses`
    start_lr: float
    end_lr: float
    num_steps: int  # steps asked for; fewer were taken when the loss diverged
    ended: str  # "completed" (every step) | "diverged" (smoothed loss over DIVERGE_FACTOR x its lowest, or not finite)
    rule: str  # the rule behind `suggestion` (a key of RULES)
    suggestion: Optional[float]  # the suggested learning rate; None when the curve gives none (see `note`)
    minimum_rule_lr: Optional[float]  # what each rule suggests, whichever was chosen
    steepest_rule_lr: Optional[float]
    lowest_loss_lr: Optional[float]  # the rate at the lowest smoothed loss
    note: str  # why there is no suggestion, or a caveat; "" when none
    batch_size: int
    precision: str  # the precision used (`auto` resolved)
    seconds: float  # wall time of the steps, model building excluded

    @property
    def rule_text(self) -> str:
        return RULES[self.rule]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rule_text": self.rule_text}


def exponential_rates(start_lr: float, end_lr: float, num_steps: int) -> np.ndarray:
    """`num_steps` rates from start_lr to end_lr, each a constant factor above the one before."""
    return start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / max(1, num_steps - 1))


def smooth_losses(losses: list[float], weight: float) -> list[float]:
    """Debiased exponential moving average (fastai's smooth loss): value i averages steps 0..i."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = weight * avg + (1 - weight) * loss
        out.append(avg / (1 - weight ** (i + 1)))
    return out


def suggest(learning_rates: list[float], smoothed: list[float]) -> tuple[dict[str, Optional[float]], Optional[float], str]:
    """Each rule's rate for a curve ({rule: rate or None}), the rate at the lowest smoothed loss,
    and a note where a rule finds nothing."""
    lrs, loss = np.asarray(learning_rates, float), np.asarray(smoothed, float)
    finite = np.isfinite(loss)
    if finite.sum() < 3:
        return {r: None for r in RULES}, None, "too few steps to read a curve from"
    lrs, loss = lrs[finite], loss[finite]
    low = int(np.argmin(loss))
    out: dict[str, Optional[float]] = {r: None for r in RULES}
    notes = []
    if lrs[low] / 10 >= lrs[0]:
        out["minimum"] = float(lrs[low] / 10)
    else:
        notes.append("the loss was lowest within the first tenfold of rates: start the range lower")
    if low >= 2:
        slopes = np.gradient(loss[:low + 1], np.log10(lrs[:low + 1]))[:low]  # not the lowest point's own
        steep = int(np.argmin(slopes))
        if slopes[steep] < 0:
            out["steepest"] = float(lrs[steep])
    if out["steepest"] is None:
        notes.append("the loss never fell before its lowest point")
    if low == len(loss) - 1:
        notes.append("the loss was still falling at the end of the range: the range could go higher")
    return out, float(lrs[low]), "; ".join(notes)


def find_learning_rate(config: TrainConfig, *, dataset: Optional[Dataset] = None,
                       start_lr: float = DEFAULT_START_LR, end_lr: float = DEFAULT_END_LR,
                       num_steps: int = DEFAULT_STEPS, smoothing: float = DEFAULT_SMOOTHING,
                       rule: str = DEFAULT_RULE,
                       on_step: Optional[Callable[[int, int, float, float], None]] = None) -> LRFinderResult:
    """Run the range test for `config` and suggest a learning rate.

    Args:
      config: the recipe to test: its network, optimizer (its learning rate and schedule are
        replaced by the growing rate), loss, precision, batch size, seed, data and train_subset.
      dataset: the data to use as is (tests); default: the config's source and subset.
      start_lr, end_lr, num_steps: the rates of the first and the last step, and how many steps.
      smoothing: the weight of the loss's moving average, in [0, 1).
      rule: which rule's rate is `suggestion` (a key of RULES); both are computed.
      on_step: called after each step with (step number from 1, num_steps, rate, loss).

    Returns:
      The curve and the suggestion; nothing is written anywhere.

    Raises:
      JobBusyError: the machine's trainer is held (a job, the probe or another range test, in any
        process): the finder measures nothing beside them.
      DataError: the data source does not exist or holds no CIFAR-10 data.
      ValueError: a range, step count, smoothing or rule out of bounds.
    """
    if not (0 < start_lr < end_lr) or not all(map(math.isfinite, (start_lr, end_lr))):
        raise ValueError(f"the range must grow from a positive start: got {start_lr:g} to {end_lr:g}")
    if not 3 <= num_steps <= 10_000:
        raise ValueError(f"num_steps must be an integer in [3, 10000], got {num_steps!r}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if dataset is None:
        config = config.replace(data=resolve_source(config.data))
        locate_source(config.data)  # a typo or an empty folder: one clear error before TensorFlow
    with trainer_lock.take("the learning-rate finder"):  # JobBusyError when held
        return _range_test(config, dataset, start_lr, end_lr, num_steps, smoothing, rule, on_step)


def _range_test(config: TrainConfig, dataset: Optional[Dataset], start_lr: float, end_lr: float, num_steps: int,
                smoothing: float, rule: str, on_step) -> LRFinderResult:
    import keras

    from cifar_core.models import build_network
    from cifar_core.recipes import compile_model

    data = dataset if dataset is not None else load_training_data(config)
    x, y = data.x_train, data.y_train
    if len(x) == 0:
        raise ValueError("the range test needs training images; the data has none")
    precision, _ = resolve_precision(config.precision, config)
    before = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(KERAS_POLICIES[precision])  # per thread, as the trainer does
    try:
        keras.utils.set_random_seed(config.seed)
        model = build_network(config, x)
        # The recipe as it trains, at a constant rate the loop below moves step by step.
        compile_model(model, config.replace(lr_schedule="constant", warmup_epochs=0.0, learning_rate=min(start_lr, 1.0)))
        rates = exponential_rates(start_lr, end_lr, num_steps)
        lrs, losses, smoothed, ended = [], [], [], "completed"
        batch = min(config.batch_size, len(x))
        rng = np.random.default_rng(config.seed)
        order, at = rng.permutation(len(x)), 0
        started = time.perf_counter()
        for step, lr in enumerate(rates):
            if at + batch > len(x):  # a new pass, reshuffled; batches stay full
                order, at = rng.permutation(len(x)), 0
            take = order[at:at + batch]
            at += batch
            model.optimizer.learning_rate = float(lr)
            loss = float(model.train_on_batch(x[take].astype("float32"), np.eye(NUM_CLASSES, dtype="float32")[y[take]],
                                              return_dict=True)["loss"])
            if not math.isfinite(loss):
                ended = "diverged"
                break
            lrs.append(float(lr))
            losses.append(loss)
            smoothed = smooth_losses(losses, smoothing)
            if on_step is not None:
                on_step(step + 1, num_steps, float(lr), loss)
            if smoothed[-1] > DIVERGE_FACTOR * min(smoothed):
                ended = "diverged"
                break
        seconds = time.perf_counter() - started
    finally:
        keras.mixed_precision.set_dtype_policy(before)
    by_rule, lowest, note = suggest(lrs, smoothed)
    return LRFinderResult(
        learning_rates=lrs, losses=losses, smoothed=smoothed, start_lr=float(start_lr), end_lr=float(end_lr),
        num_steps=num_steps, ended=ended, rule=rule, suggestion=_round(by_rule[rule], lrs),
        minimum_rule_lr=_round(by_rule["minimum"], lrs), steepest_rule_lr=_round(by_rule["steepest"], lrs),
        lowest_loss_lr=lowest, note=note, batch_size=batch, precision=precision, seconds=seconds)


def _round(rate: Optional[float], rates: list[float]) -> Optional[float]:
    """Two significant figures (a rate people type and read, well inside the curve's resolution),
    kept within the rates the test took."""
    return None if rate is None else min(max(float(f"{rate:.2g}"), rates[0]), rates[-1])
