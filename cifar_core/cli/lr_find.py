"""The CLI's range test: `python -m cifar_core lr-find [train options]` prints the loss against the
learning rate in a few lines and a suggested rate with its rule; it writes no run."""
from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Callable, TextIO

from cifar_core.config import TrainConfig
from cifar_core.data import describe_source, locate_source
from cifar_core.files import replace_atomically
from cifar_core.training import lr_finder

SUMMARY_POINTS = 6  # curve points printed, evenly spread over the steps taken


def add_command(sub, add_config_options: Callable[[argparse.ArgumentParser], None]) -> None:
    f = sub.add_parser("lr-find", help="suggest a learning rate: a short run from a fresh model with the rate "
                                       "growing exponentially (the range test); writes no run",
                       description="The training options choose the recipe to test; a budget preset (fast, best) "
                                   "is tested at its preset size, not planned.")
    add_config_options(f)
    f.add_argument("--start-lr", type=float, default=lr_finder.DEFAULT_START_LR,
                   help="the first step's rate (default %(default)g)")
    f.add_argument("--end-lr", type=float, default=lr_finder.DEFAULT_END_LR,
                   help="the last step's rate (default %(default)g)")
    f.add_argument("--steps", type=int, default=lr_finder.DEFAULT_STEPS,
                   help="steps from the first rate to the last; fewer when the loss diverges (default %(default)s)")
    f.add_argument("--rule", choices=tuple(lr_finder.RULES), default=lr_finder.DEFAULT_RULE,
                   help="; ".join(f"{k}: {v}" for k, v in lr_finder.RULES.items()) + " (default %(default)s)")
    f.add_argument("--csv", type=Path, default=None, help="also write the curve (step, rate, loss, smoothed) here")
    f.add_argument("--plot", type=Path, default=None, help="also write the chart here as a standalone HTML file")


def lr_find_command(args: argparse.Namespace, out: TextIO,
                    config_from_args: Callable[[argparse.Namespace], TrainConfig]) -> int:
    config = config_from_args(args)
    locate_source(config.data)  # a missing or unrecognised source: one line, before TensorFlow
    print(f"preset: {config.preset}; data: {describe_source(config.data)}", file=out)
    if not args.verbose:
        from cifar_core.quiet import load_tensorflow_quietly

        load_tensorflow_quietly()
    every = max(1, args.steps // 10)

    def progress(step: int, total: int, lr: float, loss: float) -> None:
        if step % every == 0:
            print(f"  step {step}/{total}: learning rate {lr:.2e}, loss {loss:.4f}", file=out, flush=True)

    print(f"range test: {args.steps} steps of {config.batch_size} images from a fresh {config.architecture} network, "
          f"learning rate {args.start_lr:g} to {args.end_lr:g}, growing exponentially", file=out, flush=True)
    result = lr_finder.find_learning_rate(config, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps,
                                          rule=args.rule, on_step=progress)
    print_result(result, config, out)
    if args.csv:
        replace_atomically(args.csv, lambda tmp: tmp.write_text(curve_csv(result)))
        print(f"curve written to {args.csv}", file=out)
    if args.plot:
        from cifar_core.charts.lr_finder import lr_finder_curve

        fig = lr_finder_curve(result.learning_rates, result.losses, result.smoothed, result.suggestion,
                              result.rule, others=other_rules(result))
        replace_atomically(args.plot, lambda tmp: fig.write_html(tmp, include_plotlyjs=True))
        print(f"chart written to {args.plot}", file=out)
    return 0


def other_rules(result: lr_finder.LRFinderResult) -> list[tuple[str, float]]:
    """The rules not chosen, with their rates, for the chart."""
    rates = {"minimum": result.minimum_rule_lr, "steepest": result.steepest_rule_lr}
    return [(name, rate) for name, rate in rates.items() if name != result.rule and rate is not None]


def print_result(result: lr_finder.LRFinderResult, config: TrainConfig, out: TextIO) -> None:
    n = len(result.learning_rates)
    ended = "every step taken" if result.ended == "completed" else \
        f"stopped early: the loss diverged (over {lr_finder.DIVERGE_FACTOR:g}x its lowest, or not a number)"
    print(f"{n} steps in {result.seconds:.0f} s ({result.precision}); {ended}", file=out)
    if n:
        picks = sorted({round(i * (n - 1) / (SUMMARY_POINTS - 1)) for i in range(SUMMARY_POINTS)})
        print("  " + "   ".join(f"{result.learning_rates[i]:.1e}: {result.smoothed[i]:.3f}" for i in picks)
              + "   (rate: smoothed loss)", file=out)
    if result.lowest_loss_lr is not None:
        print(f"lowest smoothed loss {min(result.smoothed):.4f} at learning rate {result.lowest_loss_lr:.2e}", file=out)
    if result.suggestion is None:
        print(f"no suggestion by the {result.rule} rule: {result.note or 'the curve gives none'}", file=out)
    else:
        print(f"suggested learning rate: {result.suggestion:.2g} (rule {result.rule}: {result.rule_text})", file=out)
        if result.note:
            print(f"note: {result.note}", file=out)
    for name, rate in other_rules(result):
        print(f"the {name} rule gives {rate:.2g}", file=out)
    print(f"the recipe's own learning rate: {config.learning_rate:g}", file=out)


def curve_csv(result: lr_finder.LRFinderResult) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(("step", "learning_rate", "loss", "smoothed_loss"))
    for i, row in enumerate(zip(result.learning_rates, result.losses, result.smoothed), start=1):
        w.writerow((i, *(f"{v:.6g}" for v in row)))
    return buf.getvalue()
