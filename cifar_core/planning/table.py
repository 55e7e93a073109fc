"""Test accuracy by network width and epochs, measured on the real images: what a plan expects.

Every number below is one run of the lab's Fast recipe (airbench at that width, batch 512,
one-cycle schedule over the given epochs, TTA flip_shift) on the 60,000 real CIFAR-10 images
of `shared/data` (the JPEG copy), seed 7, measured by

    python bench/budget_table.py --data /tmp/cifar/cifar10-jpeg --grid WIDTHS@EPOCHS@PRECISION ...

(BENCHMARKS.md section 9 has the command, machine and every run). Accuracy depends on the
network and its schedule, not on the machine; speed is the probe's business.
Between measured lengths accuracy is interpolated linearly in log2(epochs); past the longest
measured run it is extrapolated at half the last slope for at most one doubling (flagged), and not
at all further: a plan never trains a network for more than twice its longest measured run, nor
for fewer epochs than its shortest (short one-cycle runs fall off steeply).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

MEASURED_ON = ("real JPEG images (shared/data), seed 7, 2026-12-07: a 2-core Intel Xeon with AMX, full width at "
               "16 epochs a 2-core AMD EPYC (Zen 4)")

# (architecture, widths, batch) -> {epochs: (test accuracy, test accuracy with TTA)}, bfloat16 runs:
# python bench/budget_table.py --data /tmp/cifar/cifar10-jpeg --grid 16,64,64@4@bfloat16 ... (BENCHMARKS.md section 9)
ACCURACY: dict[tuple[str, tuple[int, int, int], int], dict[int, tuple[float, float]]] = {
    ("airbench", (16, 64, 64), 512): {2: (0.7313, 0.7448), 4: (0.7900, 0.8040), 8: (0.8157, 0.8342),
                                      16: (0.8326, 0.8532)},
    ("airbench", (32, 128, 128), 512): {4: (0.8317, 0.8462), 8: (0.8537, 0.8679), 16: (0.8733, 0.8894)},
    ("airbench", (64, 256, 256), 512): {4: (0.8664, 0.8737), 8: (0.8897, 0.8970),
                                        16: (0.8954, 0.9079)},  # 16: the Zen 4 EPYC, BENCHMARKS.md section 13
}

# The same runs in float32 and bfloat16: the A/B behind `auto`. airbench: quarter width, 4 epochs, mean
# test accuracy with TTA over seeds 1, 2, 3 and 7 (seed 7: bench/budget_table.py; seeds 1-3: the grid sweep
# `sweep create ab-precision --preset fast --widths 16,64,64 --epochs 4 --space seed=1,2,3
# --space precision=float32,bfloat16 --sampler grid`); assignment: 3 epochs, seed 7, plain test accuracy.
PRECISION_AB: dict[str, dict[str, float]] = {
    "airbench": {"float32": 0.8088, "bfloat16": 0.8084},  # 80.81/81.06/80.08/81.57 vs 80.40/80.96/80.75/81.25
    "assignment": {"float32": 0.6626, "bfloat16": 0.6805},
}
MAX_HALF_PRECISION_LOSS = 0.003  # `auto` uses 16 bits only where they lost at most 0.3 points
MAX_EXTRAPOLATED_DOUBLINGS = 1.0  # past the longest measured run: at most twice its epochs


@dataclasses.dataclass(frozen=True)
class Expected:
    accuracy: float
    accuracy_tta: float
    extrapolated: bool  # past the longest measured run


def half_precision_keeps_accuracy(architecture: str, ab: Optional[dict[str, dict[str, float]]] = None) -> bool:
    """Whether 16-bit training stayed within MAX_HALF_PRECISION_LOSS of float32 for this network."""
    runs = (PRECISION_AB if ab is None else ab).get(architecture)
    if not runs or "float32" not in runs or "bfloat16" not in runs:
        return False  # never measured: not assumed
    return runs["float32"] - runs["bfloat16"] <= MAX_HALF_PRECISION_LOSS


def _at(points: dict[int, float], epochs: float) -> tuple[float, bool]:
    xs = sorted(points)
    logs = [math.log2(x) for x in xs]
    e = math.log2(epochs)
    if len(xs) == 1:
        return points[xs[0]], epochs > xs[0]
    if e <= logs[-1]:
        i = max(1, min(len(xs) - 1, next((k for k, v in enumerate(logs) if v >= e), len(xs) - 1)))
        x0, x1 = logs[i - 1], logs[i]
        y0, y1 = points[xs[i - 1]], points[xs[i]]
        return y0 + (y1 - y0) * (e - x0) / (x1 - x0), False
    slope = (points[xs[-1]] - points[xs[-2]]) / (logs[-1] - logs[-2])
    beyond = min(e - logs[-1], MAX_EXTRAPOLATED_DOUBLINGS)
    return points[xs[-1]] + 0.5 * max(slope, 0.0) * beyond, True


def expected(architecture: str, widths: tuple[int, int, int], batch_size: int, epochs: float,
             table: Optional[dict] = None) -> Optional[Expected]:
    """The accuracy a run of that network and length is expected to reach; None if never measured,
    or shorter than its shortest measured run, or longer than `max_epochs`."""
    points = (ACCURACY if table is None else table).get((architecture, tuple(widths), batch_size))
    if not points or epochs < min(points) or epochs > max_epochs(architecture, widths, batch_size, table) + 1e-9:
        return None
    plain, extrapolated = _at({e: v[0] for e, v in points.items()}, epochs)
    tta, _ = _at({e: v[1] for e, v in points.items()}, epochs)
    return Expected(max(0.1, min(1.0, plain)), max(0.1, min(1.0, tta)), extrapolated)


def max_epochs(architecture: str, widths: tuple[int, int, int], batch_size: int, table: Optional[dict] = None) -> Optional[float]:
    """The longest run of that network a plan may lay out: its longest measured run, one doubling past it
    at most (None: never measured)."""
    points = (ACCURACY if table is None else table).get((architecture, tuple(widths), batch_size))
    return max(points) * 2 ** MAX_EXTRAPOLATED_DOUBLINGS if points else None


def min_epochs(architecture: str, widths: tuple[int, int, int], batch_size: int, table: Optional[dict] = None) -> Optional[int]:
    """The shortest measured run of that network (None: never measured)."""
    points = (ACCURACY if table is None else table).get((architecture, tuple(widths), batch_size))
    return min(points) if points else None
