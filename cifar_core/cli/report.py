"""`python -m cifar_core report RUN_ID [--out FILE]`: the run's self-contained HTML report."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

from cifar_core.insight.report import REPORT_FILE, write_report


def add_command(sub) -> None:
    p = sub.add_parser("report", help="write a run's report: one HTML file that opens offline")
    p.add_argument("run_id")
    p.add_argument("--out", type=Path, default=None,
                   help=f"the file (or a folder) to write; default {REPORT_FILE} in the run's folder")


def report_command(args: argparse.Namespace, out: TextIO) -> int:
    path = write_report(args.run_id, args.out)
    print(f"report of run {args.run_id}: {path} ({path.stat().st_size / 1024:.0f} KB)", file=out)
    return 0
