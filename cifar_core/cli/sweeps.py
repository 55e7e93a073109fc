"""The CLI's sweep and queue commands: `python -m cifar_core sweep create|run|status|stop|list` and
`python -m cifar_core queue add|list|remove|run`."""
from __future__ import annotations

import argparse
import threading
from typing import Callable, TextIO

from cifar_core.sweeps import studies, worker
from cifar_core.sweeps.storage import STORAGE_ENV

STORAGE_HELP = f"an Optuna database URL (postgresql://...) or journal file shared by the workers (default: ${STORAGE_ENV}, " \
               "else artifacts/sweeps/journal.log)"


def add_commands(sub, add_config_options: Callable[[argparse.ArgumentParser], None]) -> None:
    s = sub.add_parser("sweep", help="search recipes with Optuna: create a sweep, run workers, watch, stop")
    ss = s.add_subparsers(dest="sweep_command", required=True)
    c = ss.add_parser("create", help="define a sweep (nothing trains until `sweep run`)")
    c.add_argument("name")
    c.add_argument("--space", action="append", default=[], metavar="FIELD=SPEC",
                   help="a TrainConfig field and its values: LOW..HIGH, LOW..HIGH:log, or A,B,C; repeat per field")
    c.add_argument("--trials", type=int, default=None, help="how many trials in all")
    c.add_argument("--minutes", type=float, default=None, help="start no trial after this many minutes")
    c.add_argument("--sampler", choices=studies.SAMPLERS, default="tpe")
    c.add_argument("--pruner", choices=studies.PRUNERS, default="median",
                   help="stop trials whose validation accuracy lags (median, hyperband) or never (none)")
    c.add_argument("--objective", choices=studies.OBJECTIVES, default="accuracy",
                   help="accuracy: the final test accuracy (with TTA when the recipe has it); accuracy-and-time: "
                        "also fewer training seconds (a Pareto front)")
    add_config_options(c)
    for name, text in (("run", "be a worker: train the sweep's trials until it is done"),
                       ("status", "the sweep's trials and its best"), ("stop", "start no new trial of the sweep")):
        p = ss.add_parser(name, help=text)
        p.add_argument("name")
    ss.add_parser("list", help="every sweep in the storage")
    q = sub.add_parser("queue", help="a queue of configured runs, trained one after another")
    qs = q.add_subparsers(dest="queue_command", required=True)
    a = qs.add_parser("add", help="add a run to the queue (the dashboard, or `queue run`, trains it)")
    add_config_options(a)
    a.add_argument("--name", default="", help="the run's name")
    a.add_argument("--tag", dest="tags", action="append", default=[], help="a tag for the run; repeat for more")
    qs.add_parser("list", help="waiting, running and finished queued runs")
    r = qs.add_parser("remove", help="take a run off the queue (a running one is stopped by its worker)")
    r.add_argument("number", type=int, help="its number in `queue list`")
    qs.add_parser("run", help="train the queued runs here until the queue is empty")
    for parser in (c, a, r, *(ss.choices[n] for n in ("run", "status", "stop", "list")),
                   *(qs.choices[n] for n in ("list", "run"))):
        parser.add_argument("--storage", default=None, help=STORAGE_HELP)


def _print_rows(rows: list[dict], out: TextIO) -> None:
    for r in rows:
        shown = {k: v for k, v in r.items() if v is not None and k not in ("trial", "finished")}
        print(f"  #{r['trial']}: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                for k, v in shown.items()), file=out)


def _follow_worker(name: str, storage: str, out: TextIO, until_empty: bool = True) -> int:
    """Be a worker until the sweep (or queue) is done. Ctrl-C or SIGTERM: the running trial's job
    saves and stops, the trial returns to the study to be retried, and no new one starts; a second
    signal abandons the wait."""
    import signal

    stop, abort = threading.Event(), threading.Event()

    def interrupted(signum, frame) -> None:
        if abort.is_set():
            raise KeyboardInterrupt
        print("\nstopping: the running trial saves and returns to the study (again to abandon)", file=out, flush=True)
        stop.set()
        abort.set()

    before = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        done = worker.run_worker(name, storage, stop=stop, abort=abort, until_empty=until_empty,
                                 log=lambda line: print(line, file=out, flush=True))
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    if abort.is_set():
        print(f"stopped: {done} trial(s) started here; an interrupted one is enqueued again", file=out)
        return 130
    print(f"worker done: {done} trial(s) trained here", file=out)
    return 0


def _config(args: argparse.Namespace, config_from_args):
    """The options' config with its data source resolved and checked now, not when a trial starts."""
    from cifar_core.data import locate_source, resolve_source

    config = config_from_args(args)
    config = config.replace(data=resolve_source(config.data))
    locate_source(config.data)
    return config


def sweep_command(args: argparse.Namespace, out: TextIO, config_from_args) -> int:
    cmd = args.sweep_command
    if cmd == "create":
        sweep = studies.create(studies.define(
            args.name, args.space, _config(args, config_from_args), trials=args.trials, minutes=args.minutes,
            sampler=args.sampler, pruner=args.pruner, objective=args.objective), args.storage)
        print(f"sweep {sweep.name}: {', '.join(d.spec for d in sweep.space)}; objective {sweep.objective} "
              f"({sweep.metric}); start workers with `python -m cifar_core sweep run {sweep.name}`", file=out)
        return 0
    if cmd == "list":  # a sweep this version cannot read is one line, and the list goes on
        for listed in studies.load_all(args.storage):
            if isinstance(listed, studies.Broken):
                print(listed.reason, file=out)
                continue
            sweep, study = studies.load(listed.name, args.storage)
            print(studies.summary(sweep, studies.trial_rows(sweep, study)), file=out)
        return 0
    if cmd == "stop":
        studies.stop(args.name, args.storage)
        print(f"sweep {args.name}: stopped; running trials finish, no new one starts", file=out)
        return 0
    if cmd == "status":
        sweep, study = studies.load(args.name, args.storage)
        rows = studies.trial_rows(sweep, study)
        print(studies.summary(sweep, rows), file=out)
        _print_rows(rows, out)
        return 0
    studies.load(args.name, args.storage)  # an unknown sweep or storage: one line, before TensorFlow
    return _follow_worker(args.name, args.storage, out)


def queue_command(args: argparse.Namespace, out: TextIO, config_from_args) -> int:
    cmd = args.queue_command
    if cmd == "add":
        number = studies.enqueue(_config(args, config_from_args), name=args.name, tags=tuple(args.tags),
                                 storage_url=args.storage)
        print(f"queued as #{number}; a dashboard trains it when its trainer is free, or run "
              f"`python -m cifar_core queue run`", file=out)
        return 0
    if cmd == "remove":
        was = studies.remove(args.number, args.storage)
        print(f"removed #{args.number} from the queue" + ("; its worker stops the run" if was == "running" else ""),
              file=out)
        return 0
    if cmd == "list":
        sweep, study = studies.load(studies.QUEUE, args.storage)
        rows = [r for r in studies.trial_rows(sweep, study) if r["state"] != "removed"]
        if not rows:
            print("the queue is empty", file=out)
        _print_rows(rows, out)
        return 0
    return _follow_worker(studies.QUEUE, args.storage, out)
