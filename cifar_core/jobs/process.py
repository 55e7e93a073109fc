"""A job process: `python -m cifar_core.jobs.process new RUN_DIR | resume RUN_ID [--epochs N] |
tta RUN_ID --level L`, started by `cifar_core.jobs` with the machine's trainer lock and (to train)
the run's claim as inherited descriptors. It trains in its main thread; SIGINT or SIGTERM (or a stop request in the run folder)
make it save and end as stopped. With `--parent PID` it does the same when that process dies (a
sweep worker's trial must not train on without the worker that reports it): watched by polling
the parent's pid, not with PR_SET_PDEATHSIG, whose signal comes when the parent's *thread* ends
and may come again from a reaper that adopted the job (a second signal would abandon the save).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cifar_core.jobs.process")
    parser.add_argument("kind", choices=("new", "resume", "tta"))
    parser.add_argument("target", help="the new run's folder, or the id of the run to resume or evaluate")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--level", default=None, help="tta: the views (flip, flip_shift)")
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("--claim-fd", type=int, default=None)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--stops-since", type=float, default=None, help="a resume: stop requests from this time on count")
    args = parser.parse_args(argv)

    from cifar_core import jobs, runs, trainer_lock

    lock = trainer_lock.adopt(args.lock_fd)
    if args.kind == "tta":
        return _evaluate_tta(lock, args.target, args.level)
    claim = runs.adopt_claim(args.claim_fd)
    asked = threading.Event()  # a stop may come before the job exists
    holder: dict = {}

    def stop() -> None:
        asked.set()
        job = holder.get("job")
        if job is not None:
            job.stop()

    with jobs.stop_on_signals(stop, watch_parent=args.parent):
        run_dir = Path(args.target) if args.kind == "new" else runs.run_path(args.target)
        if args.kind == "new":
            runs.update_status(run_dir, **runs.process_identity())  # this process is the run's trainer
        lock.describe(f"training run {run_dir.name}" if args.kind == "new" else f"resuming run {run_dir.name}",
                      run_id=run_dir.name)
        print("ready", flush=True)  # the launcher returns now; what follows goes to job.log
        os.dup2(2, 1)

        from cifar_core import training
        from cifar_core.quiet import load_tensorflow_quietly

        try:
            load_tensorflow_quietly()
            if args.kind == "new":
                run = runs.load_run(run_dir.name, holding_claim=True)
                if run.config is None:
                    raise runs.RunError(f"run {run.run_id} is broken ({run.broken})")
                job = training.new_job(run.config, run_dir=run_dir, claim=claim)
            else:
                job = training.resume_job(args.target, epochs=args.epochs, claim=claim, stops_since=args.stops_since)
        except Exception as exc:  # a new run's folder says why it never trained; a resume's is as it was
            if args.kind == "new":
                runs.update_status(run_dir, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        holder["job"] = job
        if asked.is_set():  # set before the job existed (stop() read no job): the job stops now
            job.stop()
        job.run()
    lock.release()
    status = job.snapshot().status
    return 0 if status == "completed" else 3 if status == "stopped" else 1


def _evaluate_tta(lock, run_id: str, level: str) -> int:
    """A TTA evaluation: the result, or why there is none, recorded in the run folder."""
    from cifar_core import runs
    from cifar_core.insight import evaluation
    from cifar_core.quiet import load_tensorflow_quietly

    lock.describe(f"TTA evaluation of run {run_id} ({level})", run_id=run_id, tta=level)  # this process holds it
    print("ready", flush=True)
    os.dup2(2, 1)
    run = runs.load_run(run_id)
    try:
        load_tensorflow_quietly()
        evaluation.evaluate_tta(run, level)
    except Exception as exc:  # the page shows this line instead of waiting for ever
        evaluation.record_tta(run.path, level, {"error": f"{type(exc).__name__}: {exc}",
                                                "model_stamp": runs.current_model_stamp(run.path)})
        raise
    finally:
        lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
