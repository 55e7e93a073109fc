"""The CLI's planning parts: `python -m cifar_core probe`, and `train --budget` (or a budget
preset) turned into a plan before anything is created."""
from __future__ import annotations

import argparse
from typing import Optional, TextIO

from cifar_core.config import TrainConfig
from cifar_core.recipes.presets import PRESETS
from cifar_core.planning import machine, planner
from cifar_core.planning.probe import Probe, ProbeError, load_probe, run_probe

BUDGET_HELP = ("train for this much training time, e.g. 90s, 5m, 1h: the network width, epochs, batch and "
               "precision expected to reach the best accuracy on this machine are planned from its probe")


def add_budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", default=None, help=BUDGET_HELP)


def add_probe_command(sub) -> None:
    p = sub.add_parser("probe", help="measure this machine's training speed for every network a plan can choose")
    p.add_argument("--show", action="store_true", help="print the cached measurement without measuring again")


def print_probe(probe: Probe, out: TextIO) -> None:
    print(f"machine: {machine.summary(probe.machine)}; TensorFlow {probe.machine['tensorflow']}, "
          f"Keras {probe.machine['keras']} (measured in {probe.seconds:.0f} s)", file=out)
    for speed in probe.speeds:
        c = speed.candidate
        ratio = probe.speedup(c.architecture, c.widths, c.batch_size, c.precision) if c.precision != "float32" else None
        print(f"  {c.label:<48} {speed.images_per_second:>8,.0f} img/s"
              + (f"  ({ratio:.2f}x float32)" if ratio else ""), file=out)


def probe_command(args: argparse.Namespace, out: TextIO) -> int:
    probe = load_probe() if args.show else None
    if args.show and probe is None:
        raise ProbeError("this machine has not been probed yet: run `python -m cifar_core probe`")
    if probe is None:
        probe = measure(out)
    print_probe(probe, out)
    return 0


def measure(out: TextIO) -> Probe:
    def progress(done: int, total: int, label: str) -> None:
        print(f"probing {done + 1}/{total}: {label}", file=out, flush=True)

    return run_probe(on_progress=progress)


def budget_of(args: argparse.Namespace) -> Optional[str]:
    """The budget the command asks for: --budget, or a budget preset's unless --epochs or
    --widths fix the recipe by hand. Refuses --budget with --epochs or the Assignment preset."""
    if args.budget is not None:
        if args.epochs is not None:
            raise planner.PlanError("--budget plans the number of epochs: leave out --epochs")
        if args.preset == "assignment":
            raise planner.PlanError("the Assignment preset is the seed's fixed recipe; --budget plans the Fast "
                                    "recipe (leave out --preset, or use --preset fast or best)")
        planner.parse_budget(args.budget)
        return args.budget
    preset = PRESETS.get(args.preset or "")
    if preset and preset.budget_seconds and args.epochs is None and args.widths is None:
        return f"{preset.budget_seconds}s"
    return None


def plan_run(budget: str, args: argparse.Namespace, config: TrainConfig, out: TextIO) -> planner.Plan:
    """This machine's plan for `budget` (probing it first if it never was), printed."""
    seconds = planner.parse_budget(budget)  # an unreadable budget is refused before any probing
    probe = load_probe()
    if probe is None:
        print("this machine was never probed: measuring its training speed first (once)", file=out, flush=True)
        probe = measure(out)
    plan = planner.plan(seconds, probe, base=config, precision=args.precision or "auto", widths=args.widths)
    print(f"budget {planner.format_seconds(seconds)} of training on {machine.summary(probe.machine)}", file=out)
    print(f"plan: {planner.describe_option(plan.chosen)}; precision: {plan.precision_note}", file=out)
    for option in plan.runners_up:
        print(f"  runner-up: {planner.describe_option(option)}", file=out)
    return plan
