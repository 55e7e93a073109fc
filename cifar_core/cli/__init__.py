"""The headless CLI: `python -m cifar_core train | resume | evaluate | predict | export | runs | lr-find`.

`train` and `resume` make this process the job's own (cifar_core/jobs.run_here), under the machine's
trainer lock, and print its progress; Ctrl-C or SIGTERM saves the run and marks it stopped.

May import: everything above it (it is the top: nothing in cifar_core imports it but `__main__`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence, TextIO

from cifar_core.training import distributed
from cifar_core import export, jobs, runs, training
from cifar_core.config import ARCHITECTURES, PRECISIONS, TTA_LEVELS, TrainConfig
from cifar_core.recipes.presets import DEFAULT_PRESET, PRESETS, preset_config
from cifar_core.data import DataError, describe_source, locate_source
from cifar_core.cli import planning as planning_cli
from cifar_core.cli import report as report_cli
from cifar_core.insight.report import ReportError
from cifar_core.planning.probe import ProbeError
from cifar_core.cli import summary as summary_cli
from cifar_core.cli import sweeps as sweeps_cli
from cifar_core.cli import lr_find as lr_find_cli
from cifar_core.sweeps.storage import SweepError


def _add_config_options(p: argparse.ArgumentParser) -> None:
    """Recipe options default to the chosen preset's values; given ones override them."""
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="; ".join(f"{n}: {pr.description}" for n, pr in PRESETS.items()) + f" (default {DEFAULT_PRESET}; "
                   "with --budget: the Fast recipe)")
    p.add_argument("--epochs", type=int, help="passes over the training set")
    p.add_argument("--batch-size", type=int, help="images per step")
    p.add_argument("--steps-per-epoch", type=int, help="steps per epoch, fewer than a pass (default: a full pass)")
    p.add_argument("--learning-rate", type=float, help="peak learning rate")
    p.add_argument("--dropout", type=float, help="rate of every Dropout layer")
    p.add_argument("--seed", type=int, default=TrainConfig().seed, help="random seed (default %(default)s)")
    p.add_argument("--data", default=None, help="'keras' (download), 'synthetic', or a local path: "
                   "cifar-10-python.tar.gz, cifar-10-batches-py/, or an image folder (default: $CIFAR10_DATA or keras)")
    p.add_argument("--train-subset", type=int, default=None, help="train on this many images only")
    p.add_argument("--test-subset", type=int, default=None, help="validate/evaluate on this many test images only")
    p.add_argument("--architecture", choices=ARCHITECTURES)
    p.add_argument("--widths", type=lambda s: tuple(int(v) for v in s.split(",")), metavar="A,B,C",
                   help="airbench block widths, e.g. 32,128,128")
    p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"))
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--lr-schedule", choices=("constant", "cosine", "onecycle"))
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--augment", choices=("none", "flip", "flip_translate"))
    p.add_argument("--weight-averaging", choices=("none", "ema", "lookahead"))
    p.add_argument("--early-stopping-patience", type=int)
    p.add_argument("--tta", choices=TTA_LEVELS)
    p.add_argument("--precision", choices=PRECISIONS,
                   help="float32, bfloat16 or float16 (Keras mixed precision), or auto: 16-bit where this "
                        "machine's probe measured it worth it")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset's config with every option the user gave applied on top."""
    names = ("epochs", "batch_size", "steps_per_epoch", "learning_rate", "dropout", "seed", "data", "train_subset", "test_subset",
             "architecture", "widths", "optimizer", "weight_decay", "lr_schedule", "warmup_epochs",
             "label_smoothing", "augment", "weight_averaging", "early_stopping_patience", "tta", "precision")
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    preset = args.preset or ("budget" if getattr(args, "budget", None) else DEFAULT_PRESET)
    config = preset_config(preset, **given)
    if "epochs" in given and "warmup_epochs" not in given and config.warmup_epochs:
        # keep the warm-up's share of the schedule when only the length changes
        share = PRESETS[preset].values.get("warmup_epochs", 0) / PRESETS[preset].values.get("epochs", 1)
        config = config.replace(warmup_epochs=round(share * config.epochs, 3))
    return config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cifar_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a preset (default: the assignment's CNN) and save a run")
    _add_config_options(t)
    t.add_argument("--name", default="", help="the run's name (shown beside its id everywhere)")
    t.add_argument("--tag", dest="tags", action="append", default=[], help="a tag for the run; repeat for more")
    planning_cli.add_budget_option(t)
    r = sub.add_parser("resume", help="continue a stopped or interrupted run from its last checkpoint")
    r.add_argument("run_id")
    r.add_argument("--epochs", type=int, default=None, help="new total number of epochs")
    for command in (t, r):
        command.add_argument("--devices", default=None, help=DEVICES_HELP)
        command.add_argument("--wait", action="store_true",
                             help="wait for the machine's trainer when another job, the probe or the learning-rate "
                                  "finder holds it (default: refuse, saying which)")
    e = sub.add_parser("evaluate", help="test loss and accuracy of a run, and its first four test images")
    e.add_argument("run_id", nargs="?", help="default: the newest run with a model")
    e.add_argument("--tta", choices=TTA_LEVELS, default=None,
                   help="also report test-time-augmented accuracy (default: the run's recipe)")
    p = sub.add_parser("predict", help="classify image files with a run's model")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--run", dest="run_id", default=None, help="default: the newest run with a model")
    p.add_argument("--top", type=int, default=3, help="how many classes to show per file")
    x = sub.add_parser("export", help="write a run's model for deployment: .keras, SavedModel or TensorFlow Lite")
    x.add_argument("run_id")
    x.add_argument("--format", dest="fmt", choices=export.FORMATS, default="keras",
                   help="tflite writes float32 and dynamic-range quantised files (default %(default)s)")
    x.add_argument("--out", type=Path, default=None, help="also copy the files into this folder")
    sub.add_parser("runs", help="list runs, newest first")
    planning_cli.add_probe_command(sub)
    report_cli.add_command(sub)
    summary_cli.add_command(sub, _add_config_options)
    sweeps_cli.add_commands(sub, _add_config_options)
    lr_find_cli.add_command(sub, _add_config_options)
    for command in sub.choices.values():
        command.add_argument("--verbose", action="store_true",
                             help="also show TensorFlow's start-up messages (absl, oneDNN, CUDA) on stderr")
    return parser


def _load_tensorflow(args: argparse.Namespace) -> None:
    """Import TensorFlow before a command needs it: quietly unless --verbose."""
    if not args.verbose:
        from cifar_core.quiet import load_tensorflow_quietly

        load_tensorflow_quietly()


DEVICES_HELP = ("where to train: default (TensorFlow's choice: one GPU, else the CPU), gpu (MirroredStrategy over "
                "every visible GPU), gpu:0,1 (those GPUs), cpu, or cpu:N (N logical CPU devices, to try "
                "MirroredStrategy without a GPU). --batch-size is the global batch, split over the devices. With "
                "TF_CONFIG describing a cluster, every worker runs this same command (MultiWorkerMirroredStrategy)")


def _setup_devices(args: argparse.Namespace, out: TextIO) -> distributed.Cluster:
    """This process's strategy, set before TensorFlow initialises its devices; a cluster's
    member says which it is (a multi-worker setup waits for every worker)."""
    in_cluster = distributed.read_tf_config()
    if not in_cluster and args.devices in (None, "default"):
        return distributed.current()  # TF's default strategy: nothing to set up
    if in_cluster:
        workers, task, chief = in_cluster
        role = "the chief: it writes the run folder" if chief else "not the chief: it writes no run folder"
        print(f"TF_CONFIG: {task}, one of {workers} workers ({role}); waiting for every worker to start",
              file=out, flush=True)
    if args.verbose:
        return distributed.setup(args.devices)
    from cifar_core.quiet import stderr_to_buffer

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_to_buffer():  # TensorFlow's start-up lines; our own errors are raised as usual
        return distributed.setup(args.devices)


class _Failure(Exception):
    """An expected error: printed as one line, exit code 1."""


def main(argv: Optional[Sequence[str]] = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"train": _train, "resume": _resume, "evaluate": _evaluate, "predict": _predict,
                "export": _export, "runs": _list, "probe": planning_cli.probe_command,
                "report": report_cli.report_command,
                "summary": lambda a, o: summary_cli.summary_command(a, o, _load_tensorflow, config_from_args),
                "sweep": lambda a, o: sweeps_cli.sweep_command(a, o, config_from_args),
                "queue": lambda a, o: sweeps_cli.queue_command(a, o, config_from_args),
                "lr-find": lambda a, o: lr_find_cli.lr_find_command(a, o, config_from_args)}[args.command](args, out)
    except (_Failure, runs.RunError, DataError, training.JobBusyError, ValueError, ProbeError, SweepError,
            ReportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _train(args: argparse.Namespace, out: TextIO) -> int:
    budget = planning_cli.budget_of(args)  # an unreadable or impossible request: refused before anything
    config = config_from_args(args)
    locate_source(config.data)  # a missing or unrecognised source: refused before TensorFlow or a run folder
    print(f"preset: {config.preset}; data: {describe_source(config.data)}", file=out)
    cluster = _setup_devices(args, out)
    _load_tensorflow(args)
    plan = planning_cli.plan_run(budget, args, config, out) if budget else None
    config = plan.config if plan else config
    cluster.check(config)
    return _follow(lambda: training.new_job(config, name=args.name, tags=args.tags,
                                            plan=plan.to_dict() if plan else None),
                   "training a run (command line)", args, out)


def _resume(args: argparse.Namespace, out: TextIO) -> int:
    cluster = _setup_devices(args, out)
    run = runs.load_run(args.run_id)
    if run.config is not None:  # a batch the devices cannot share is refused before TensorFlow
        cluster.check(run.config if args.epochs is None else run.config.replace(epochs=args.epochs))
    _load_tensorflow(args)
    return _follow(lambda: training.resume_job(args.run_id, epochs=args.epochs),
                   f"resuming run {args.run_id} (command line)", args, out)


def _follow(make, what: str, args: argparse.Namespace, out: TextIO) -> int:
    """Train the job `make` builds in this process, printing its progress from a second thread;
    Ctrl-C or SIGTERM saves and stops it (the run is kept), a second one abandons the save."""
    import threading

    printer = threading.Thread(target=lambda: None)

    def on_start(job: training.TrainingJob) -> None:
        nonlocal printer
        printer = threading.Thread(target=_print_progress, args=(job, out), name="progress", daemon=True)
        printer.start()

    job = jobs.run_here(make, what=what, wait=args.wait, on_start=on_start)
    printer.join()
    return _report(job, out)


def _print_progress(job: training.TrainingJob, out: TextIO) -> None:
    """Print progress until the job ends."""
    chief, task = job.cluster.is_chief, job.cluster.task
    print(f"run {job.run_id}: {job.run_dir}" if chief else f"{task}: training with the chief, which saves the run",
          file=out, flush=True)
    tty = out.isatty()
    last_line, epochs_printed, said_stop = "", job.snapshot().initial_epoch, False
    while True:
        ended = job.wait(0.25)
        snap = job.snapshot()
        if snap.status == "stopping" and not said_stop:
            print("\nstopping: saving what was learned (Ctrl-C again to abandon)", file=out, flush=True)
            said_stop = True
        hist = snap.history
        while epochs_printed < len(hist.get("loss", [])):
            i = epochs_printed
            line = (f"epoch {i + 1}/{snap.epochs}: loss {hist['loss'][i]:.4f} acc {hist['accuracy'][i]:.4f}"
                    + (f" val_loss {hist['val_loss'][i]:.4f} val_acc {hist['val_accuracy'][i]:.4f}"
                       if "val_accuracy" in hist and i < len(hist["val_accuracy"]) else "")
                    + (f" train {hist['train_seconds'][i]:.0f} s" if i < len(hist.get("train_seconds", [])) else "")
                    + (f" ({snap.images_per_second:.0f} img/s)" if snap.images_per_second else ""))
            print(("\r" if tty else "") + line.ljust(len(last_line)), file=out)
            epochs_printed += 1
            last_line = ""
        line = _progress_line(snap)
        if tty:
            print("\r" + line.ljust(len(last_line)), end="", file=out, flush=True)
        elif line != last_line and snap.batch and snap.batch % max(1, snap.batches_per_epoch // 10) == 0:
            print(line, file=out, flush=True)  # a log file gets ~10 lines per epoch, not hundreds
        last_line = line
        if ended:
            break
    if tty:
        print(file=out)


def _report(job: training.TrainingJob, out: TextIO) -> int:
    """The ended job's result, one line (or a failure, raised)."""
    chief, task = job.cluster.is_chief, job.cluster.task
    snap = job.snapshot()
    if snap.status == "failed":
        raise _Failure(f"training failed: {snap.error}" + (f" (history so far kept in {job.run_dir})" if chief else ""))
    if not chief:
        print(f"{snap.status}: {len(snap.history.get('loss', []))} epochs as {task}; the chief saved the run", file=out)
        return 0
    from cifar_core.insight.evaluation import loss_note

    m, note = snap.metrics or {}, loss_note(job.config.label_smoothing)
    print(f"{snap.status}: {len(snap.history.get('loss', []))} epochs in {snap.finished_at - snap.started_at:.0f} s; "
          f"test loss {m.get('test_loss', float('nan')):.4f}{f' ({note})' if note else ''}, test accuracy {m.get('test_accuracy', float('nan')):.2%}"
          + (f", with TTA ({m['tta']}) {m['test_accuracy_tta']:.2%}" if "test_accuracy_tta" in m else "")
          + (f"; training time {snap.history['train_seconds'][-1]:.0f} s" if snap.history.get("train_seconds") else ""),
          file=out)
    print(f"saved run {job.run_id} in {job.run_dir}", file=out)
    return 0


def _progress_line(snap: training.JobSnapshot) -> str:
    if snap.status == "preparing" or not snap.batches_per_epoch:
        return snap.message
    rate = f"{snap.images_per_second:.0f} img/s" if snap.images_per_second else ""
    eta = f"ETA {_duration(snap.eta_seconds)}" if snap.eta_seconds is not None else ""
    loss = f"loss {snap.batch_loss[-1]:.4f} acc {snap.batch_accuracy[-1]:.4f}" if snap.batch_loss else ""
    return f"epoch {snap.epoch}/{snap.epochs} batch {snap.batch}/{snap.batches_per_epoch} {loss} {rate} {eta}".rstrip()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _newest_with_model() -> str:
    for run in runs.list_runs():
        if not run.broken and not run.is_active and run.model_path is not None:
            return run.run_id
    raise _Failure("no run with a saved model yet: train one with `python -m cifar_core train`")


def _evaluate(args: argparse.Namespace, out: TextIO) -> int:
    from cifar_core.insight import evaluation, predict

    run_id = args.run_id or _newest_with_model()
    run = runs.load_run(run_id)
    _load_tensorflow(args)
    if run.broken:
        raise _Failure(f"run {run_id} is broken: {run.broken}")
    model, stamp = runs.load_model_stamped(run_id)
    data = evaluation.run_test_data(run)
    metrics = evaluation.evaluate_model(model, data, run.path, batch_size=run.config.validation_batch_size,
                                        tta=args.tta or run.config.tta, model_stamp=stamp,
                                        label_smoothing=run.config.label_smoothing)
    note = evaluation.loss_note(run.config.label_smoothing)
    print(f"run {run_id}: test loss {metrics['test_loss']:.4f}{f' ({note})' if note else ''}, test accuracy {metrics['test_accuracy']:.2%} "
          f"on {metrics['num_test_images']} images"
          + (f"; with TTA ({metrics['tta']}) {metrics['test_accuracy_tta']:.2%}" if "tta" in metrics else ""),
          file=out)
    print("first four test images:", file=out)
    for item in predict.first_four(model, data):
        mark = "right" if item["correct"] else "WRONG"
        print(f"  #{item['index']}: predicted {item['predicted_name']} ({item['confidence']:.0%}), "
              f"true {item['true_name']}: {mark}", file=out)
    return 0


def _predict(args: argparse.Namespace, out: TextIO) -> int:
    """Every file is read and checked before TensorFlow or a model is loaded: a bad file is
    answered at once, in one line on stderr, and only good files wait for the model."""
    from cifar_core.insight import predict

    run_id = args.run_id or _newest_with_model()
    inputs, failures = [], 0
    for path in args.files:
        try:
            inputs.append((path, predict.prepare_image(_read_upload(path), path.name)[1]))
        except (predict.ImageError, OSError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            failures += 1
    if inputs:
        _load_tensorflow(args)
        model = runs.load_model(run_id)
        for path, x in inputs:
            probs = predict.predict_proba(model, x)[0]
            tops = ", ".join(f"{name} {p:.1%}" for name, p in predict.top_k(probs, args.top))
            warn = " (low confidence: maybe none of the ten classes)" if predict.is_low_confidence(probs) else ""
            print(f"{path}: {tops}{warn}", file=out)
    return 1 if failures else 0


def _export(args: argparse.Namespace, out: TextIO) -> int:
    _load_tensorflow(args)
    result = export.export_run(args.run_id, args.fmt)
    shown = export.copy_export(result, args.out) if args.out else result.paths
    for path, name, size in zip(shown, (p.name for p in result.paths), result.sizes_bytes):
        agreement = result.agreement.get(name)
        print(f"{path}: {size / 2**20:.2f} MB"
              + (f"; top-1 agrees with Keras on {agreement:.1%} of {result.agreement_images} test images"
                 if agreement is not None else ""), file=out)
    print(f"run {result.run_id}: {args.fmt} export "
          + ("reused: the model has not changed since" if result.reused else f"written in {result.seconds:.2f} s")
          + (f"; {result.note}" if result.note else ""), file=out)
    return 0


def _read_upload(path: Path) -> bytes:
    from cifar_core.insight.predict import MAX_UPLOAD_BYTES, ImageError

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read {path.name}: {exc.strerror}") from exc
    if size > MAX_UPLOAD_BYTES:
        raise ImageError(f"{path.name} is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    return path.read_bytes()


def _list(args: argparse.Namespace, out: TextIO) -> int:
    found = runs.list_runs()
    if not found:
        print(f"no runs yet in {runs.runs_dir()}", file=out)
    for run in found:
        acc = f"{run.test_accuracy:.2%}" if run.test_accuracy is not None else "-"
        note = f"  BROKEN: {run.broken}" if run.broken else (f"  error: {run.error}" if run.error else "")
        named = f"  {run.name!r}" if run.name else ""
        tags = f"  [{', '.join(run.tags)}]" if run.tags else ""
        print(f"{run.run_id}  {run.status:<11} epochs {run.epochs_done:>3}  test acc {acc:>7}{named}{tags}{note}",
              file=out)
    return 0
