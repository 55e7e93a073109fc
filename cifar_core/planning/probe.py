"""This machine's training speed for every network a plan can choose, measured in well under a
minute on random data and cached per machine (`artifacts/probe/<machine key>.json`).

Each candidate (network width, batch, precision) is built with the lab's own recipe, warmed up
(the first steps trace the graph) and timed over a few `train_on_batch` steps. A plan turns
these speeds into seconds per epoch with the measured overhead of a real run (`planner`).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cifar_core.runs import store
from cifar_core.config import TrainConfig
from cifar_core import trainer_lock
from cifar_core.paths import artifacts_dir
from cifar_core.planning import machine

# Widths a plan chooses from: airbench94's blocks (64/256/256) at a quarter, half and full width.
AIRBENCH_WIDTHS = {"quarter": (16, 64, 64), "half": (32, 128, 128), "full": (64, 256, 256)}
AIRBENCH_BATCH = 512  # the recipes' batch on a CPU (the accuracy table was measured with it)
ASSIGNMENT_BATCH = 64  # the assignment's own
KERAS_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
AUTO_MIN_SPEEDUP = 1.15  # `auto` takes the 16-bit policy only where it trains at least this much faster
WARM_STEPS = 2  # untimed: graph tracing and oneDNN's kernel choice
MIN_TIMED_SECONDS = 0.6  # each candidate is timed over at least this long ...
MIN_TIMED_STEPS = 2  # ... and this many steps
PROBE_VERSION = 1


class ProbeError(RuntimeError):
    """The probe could not measure this machine (TensorFlow missing, out of memory, ...)."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One network a plan may choose, at one batch size and precision."""

    architecture: str  # airbench | assignment
    widths: tuple[int, int, int]  # airbench's block widths (the assignment's are fixed)
    batch_size: int
    precision: str  # float32 | bfloat16 | float16

    @property
    def label(self) -> str:
        name = next((k for k, v in AIRBENCH_WIDTHS.items() if v == self.widths), "x".join(map(str, self.widths)))
        net = f"airbench {name} width" if self.architecture == "airbench" else "assignment CNN"
        return f"{net}, batch {self.batch_size}, {self.precision}"

    def config(self) -> TrainConfig:
        """The lab's recipe for this candidate (what the probe times and a plan trains)."""
        from cifar_core.recipes.presets import airbench_learning_rate, preset_config

        if self.architecture == "assignment":
            return preset_config("assignment", precision=self.precision)
        return preset_config("fast", widths=self.widths, batch_size=self.batch_size,
                             learning_rate=airbench_learning_rate(self.batch_size), precision=self.precision)


@dataclasses.dataclass(frozen=True)
class Speed:
    candidate: Candidate
    images_per_second: float  # training steps only (forward, backward, update), random data


@dataclasses.dataclass(frozen=True)
class Probe:
    """A machine's measured speeds."""

    machine: dict[str, Any]
    measured_at: float
    seconds: float  # how long the probe took
    speeds: tuple[Speed, ...]

    @property
    def key(self) -> str:
        return machine.key(self.machine)

    def speed(self, candidate: Candidate) -> Optional[float]:
        return next((s.images_per_second for s in self.speeds if s.candidate == candidate), None)

    def speedup(self, architecture: str, widths: tuple[int, int, int], batch_size: int, precision: str) -> Optional[float]:
        """How much faster `precision` trains than float32 for that network (None: not measured)."""
        fast = self.speed(Candidate(architecture, widths, batch_size, precision))
        slow = self.speed(Candidate(architecture, widths, batch_size, "float32"))
        return fast / slow if fast and slow else None

    def to_dict(self) -> dict[str, Any]:
        return {"version": PROBE_VERSION, "machine": self.machine, "measured_at": self.measured_at,
                "seconds": self.seconds,
                "speeds": [{**dataclasses.asdict(s.candidate), "widths": list(s.candidate.widths),
                            "images_per_second": s.images_per_second} for s in self.speeds]}

    @classmethod
    def from_dict(cls, raw: Any) -> "Probe":
        if not isinstance(raw, dict) or raw.get("version") != PROBE_VERSION:
            raise ValueError("not a probe file of this version")
        speeds = tuple(Speed(Candidate(str(s["architecture"]), tuple(int(w) for w in s["widths"]),
                                       int(s["batch_size"]), str(s["precision"])), float(s["images_per_second"]))
                       for s in raw["speeds"])
        return cls(dict(raw["machine"]), float(raw["measured_at"]), float(raw["seconds"]), speeds)


def candidates(described: Optional[dict[str, Any]] = None) -> list[Candidate]:
    """What this machine's probe measures: every airbench width and the assignment's network, in
    float32 and in the 16-bit precision the device has (bfloat16 on a CPU, float16 on a GPU)."""
    described = described or machine.describe()
    half = "float16" if described["device"].startswith("gpu") else "bfloat16"
    out = []
    for precision in ("float32", half):
        out += [Candidate("airbench", w, AIRBENCH_BATCH, precision) for w in AIRBENCH_WIDTHS.values()]
        out.append(Candidate("assignment", TrainConfig().widths, ASSIGNMENT_BATCH, precision))
    return out


def probe_dir() -> Path:
    return artifacts_dir() / "probe"


def probe_path(key: Optional[str] = None) -> Path:
    return probe_dir() / f"{key or machine.key(machine.describe())}.json"


def load_probe(described: Optional[dict[str, Any]] = None) -> Optional[Probe]:
    """This machine's cached probe; None when it was never measured (or the file is unreadable:
    measuring again replaces it)."""
    described = described or machine.describe()
    try:
        probe = Probe.from_dict(store.read_json(probe_path(machine.key(described))))
    except (OSError, ValueError, KeyError, TypeError, store.RunError):
        return None
    return probe if probe.machine == described else None


def time_candidate(candidate: Candidate, *, min_seconds: float = MIN_TIMED_SECONDS) -> float:
    """Images per second of `candidate`'s training steps on random data, in this thread's own
    Keras dtype policy (Keras keeps it per thread: run this in a thread of its own)."""
    import keras

    from cifar_core import models

    keras.mixed_precision.set_dtype_policy(KERAS_POLICIES[candidate.precision])
    rng = np.random.default_rng(0)
    n = candidate.batch_size
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, n)]
    model = models.build_model(candidate.config(), x_train=x, steps_per_epoch=100)
    xf = x.astype("float32")
    for _ in range(WARM_STEPS):
        model.train_on_batch(xf, y)
    steps, start = 0, time.perf_counter()
    while steps < MIN_TIMED_STEPS or time.perf_counter() - start < min_seconds:
        model.train_on_batch(xf, y)
        steps += 1
    return steps * n / (time.perf_counter() - start)


def run_probe(*, on_progress: Optional[Callable[[int, int, str], None]] = None,
              only: Optional[list[Candidate]] = None,
              timer: Callable[[Candidate], float] = time_candidate) -> Probe:
    """Measure this machine and cache the result (replacing an older one).

    Args:
      on_progress: called with (done, total, candidate label) before each candidate.
      only: the candidates to time (default: `candidates()`).
      timer: measures one candidate (tests give a tiny one).
    Raises:
      ProbeError: the measurement failed, or the machine's trainer is held (a job or the finder:
        speeds measured beside them would size every later plan wrong); nothing is cached then.
    """
    try:  # a folder that cannot hold the result is refused before half a minute of measuring
        probe_dir().mkdir(parents=True, exist_ok=True)
        store.write_text(probe_dir() / ".writable", "ok")
        (probe_dir() / ".writable").unlink()
    except OSError as exc:
        raise ProbeError(f"cannot keep a probe in {probe_dir()}: {exc.strerror or exc}") from exc
    try:
        lock = trainer_lock.take("the probe (measuring this machine)")
    except trainer_lock.JobBusyError as exc:
        raise ProbeError(f"not measured: {exc}") from None
    with lock:
        return _measure(on_progress, only, timer)


def _measure(on_progress, only, timer) -> Probe:
    described = machine.describe()
    todo = only if only is not None else candidates(described)
    start, speeds = time.time(), []
    for i, candidate in enumerate(todo):
        if on_progress:  # in the caller's thread (a Streamlit page draws its progress bar here)
            on_progress(i, len(todo), candidate.label)
        speeds.append(Speed(candidate, _in_own_thread(timer, candidate)))
    probe = Probe(described, start, time.time() - start, tuple(speeds))
    try:
        store.write_json(probe_path(probe.key), probe.to_dict())
    except OSError as exc:
        raise ProbeError(f"measured this machine but could not save the result in {probe_dir()}: {exc}") from exc
    return probe


def _in_own_thread(timer: Callable[[Candidate], float], candidate: Candidate) -> float:
    """timer(candidate) in a fresh thread, so the Keras dtype policy it sets stays there."""
    result: dict[str, Any] = {}

    def measure() -> None:
        try:
            result["value"] = float(timer(candidate))
        except BaseException as exc:  # reported to the caller as one line
            result["error"] = exc

    worker = threading.Thread(target=measure, name="cifar-probe", daemon=True)
    worker.start()
    worker.join()
    if "error" in result:
        exc = result["error"]
        raise ProbeError(f"could not measure this machine's training speed ({candidate.label}): "
                         f"{type(exc).__name__}: {exc}") from exc
    return result["value"]


def resolve_precision(precision: str, config: Optional[TrainConfig] = None, probe: Optional[Probe] = None) -> tuple[str, str]:
    """The concrete precision for `precision` ('auto' decided from this machine's probe), and why.

    `auto` is bfloat16 where the probe measured it at least AUTO_MIN_SPEEDUP faster for the
    config's network and the accuracy table found it within the allowed loss; float16 on a GPU
    likewise; otherwise float32.
    """
    if precision != "auto":
        return precision, "chosen"
    from cifar_core.planning.table import half_precision_keeps_accuracy

    probe = probe or load_probe()
    if probe is None:
        return "float32", "auto: this machine was never probed (python -m cifar_core probe), so float32"
    config = config or TrainConfig()
    half = "float16" if probe.machine.get("device", "cpu").startswith("gpu") else "bfloat16"
    widths = config.widths if config.architecture == "airbench" else TrainConfig().widths
    batch = AIRBENCH_BATCH if config.architecture == "airbench" else ASSIGNMENT_BATCH
    speedup = probe.speedup(config.architecture, widths, batch, half)
    if speedup is None:
        speedup = max((s for c in candidates(probe.machine) if c.precision == half
                       and (s := probe.speedup(c.architecture, c.widths, c.batch_size, half))), default=None)
    if speedup is None or speedup < AUTO_MIN_SPEEDUP:
        return "float32", f"auto: {half} measured {speedup or 0:.2f}x float32 here (needs {AUTO_MIN_SPEEDUP}x)"
    if not half_precision_keeps_accuracy(config.architecture):
        return "float32", f"auto: {half} is {speedup:.2f}x faster here but lost accuracy in the measured runs"
    return half, f"auto: {half} trains {speedup:.2f}x faster than float32 here"
