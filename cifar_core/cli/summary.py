"""`python -m cifar_core summary [RUN_ID | --preset NAME ...]`: a network as a table of layers
(output shape, parameters, FLOPs, receptive field, training-only layers) and its totals."""
from __future__ import annotations

import argparse
from typing import Callable, TextIO

from cifar_core import runs
from cifar_core.models.summary import format_table, summarize


def add_command(sub, add_config_options: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("summary", help="a run's model or a recipe's network, layer by layer: shapes, parameters, "
                                       "FLOPs, receptive fields, training-only layers")
    p.add_argument("run_id", nargs="?", default=None,
                   help="the run whose saved model to read; without it, the network the recipe options build")
    add_config_options(p)


def summary_command(args: argparse.Namespace, out: TextIO, load_tensorflow: Callable[[argparse.Namespace], None],
                    config_from_args: Callable[[argparse.Namespace], object]) -> int:
    if args.run_id is not None:
        run = runs.load_run(args.run_id)  # an unknown or unsafe id: RunError before TensorFlow
        if run.broken:
            raise runs.RunError(f"run {args.run_id} is broken: {run.broken}")
        load_tensorflow(args)
        model, title = runs.load_model(args.run_id), f"run {args.run_id} (its saved model)"
    else:
        from cifar_core.models import build_network

        config = config_from_args(args)  # a bad option: ValueError before TensorFlow
        load_tensorflow(args)
        model, title = build_network(config), f"recipe {config.preset} ({config.architecture}, uncompiled)"
    print(title, file=out)
    print(format_table(summarize(model)), file=out)
    return 0
