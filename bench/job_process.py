"""A job as a process of its own against the trainer thread inside the server, side by side in one
run: how long a Train page rerun takes while a job trains, how long a Start takes to return and
to reach the first batch, and the job's training speed meanwhile.

"old" is a git revision from before the job processes (default 57fc063: the trainer thread in the
process that asked); "new" is the working tree. Each side runs in a fresh interpreter from its own
tree (a `git worktree` of the old revision), rounds alternating old/new:

1. Streamlit's AppTest opens the real dashboard and switches to the Train page (the server's work);
2. a job starts as that side's Train page starts it (old: `training.start_job` in this process;
   new: `jobs.start`, a job process) on the same data and recipe;
3. once the first batch is reported (live.json), the page is rerun N times, each timed;
4. the job is stopped through its run folder and the side waits for its end.

    python bench/job_process.py --data synthetic --train-subset 5000 --reruns 15 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OLD_REVISION = "57fc063"  # the last revision with the trainer thread in the server


def _live(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "live.json").read_text())
    except (OSError, ValueError):
        return {}


def side_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One side, in this fresh interpreter, importing the lab from spec["tree"]."""
    tree = Path(spec["tree"])
    os.chdir(tree)
    sys.path.insert(0, str(tree))
    from streamlit.testing.v1 import AppTest

    from cifar_core import runs, training
    from cifar_core.config import TrainConfig

    at = AppTest.from_file(str(tree / "dashboard.py"), default_timeout=120).run()
    at.switch_page("pages/train.py").run()
    idle = []
    for _ in range(3):
        t = time.perf_counter()
        at.run()
        idle.append(time.perf_counter() - t)
    tf_warm = "tensorflow" in sys.modules
    config = TrainConfig(epochs=200, data=spec["data"], train_subset=spec["train_subset"], test_subset=1000,
                         batch_size=64)
    t0 = time.perf_counter()
    if spec["side"] == "old":
        job = training.start_job(config)
        run_dir = job.run_dir
    else:
        from cifar_core import jobs

        job = jobs.start(config)
        run_dir = job.run_dir
    call_s = time.perf_counter() - t0
    while not _live(run_dir).get("batch"):
        if time.perf_counter() - t0 > 600:
            raise RuntimeError("no first batch within 600 s")
        time.sleep(0.05)
    first_batch_s = time.perf_counter() - t0
    reruns, rates, problems = [], [], []
    for _ in range(spec["reruns"]):
        t = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - t)
        problems += [e.proto.message for e in at.exception]
        rate = _live(run_dir).get("images_per_second")
        if rate:
            rates.append(rate)
    # the speed of the job itself over the window: images trained per wall second
    before = _live(run_dir)
    time.sleep(spec.get("speed_window", 20))
    after = _live(run_dir)
    steps = lambda r: (r.get("epoch", 1) - 1) * (r.get("batches_per_epoch") or 0) + (r.get("batch") or 0)  # noqa: E731
    speed = (steps(after) - steps(before)) * config.batch_size / max(1e-9, after.get("updated_at", 0) - before.get("updated_at", 1))
    from cifar_core.training import publisher

    publisher.request_stop(run_dir)
    t = time.perf_counter()
    while runs.load_run(run_dir.name).is_active or (spec["side"] == "old" and job.is_alive):
        if time.perf_counter() - t > 300:
            raise RuntimeError("the job did not stop within 300 s")
        time.sleep(0.1)
    return {"side": spec["side"], "tf_imported_before_start": tf_warm, "idle_rerun_s": statistics.median(idle),
            "start_call_s": call_s, "first_batch_s": first_batch_s,
            "rerun_median_s": statistics.median(reruns), "rerun_p90_s": sorted(reruns)[int(0.9 * (len(reruns) - 1))],
            "reruns": reruns, "images_per_second_reported": statistics.median(rates) if rates else None,
            "images_per_second_window": speed, "stop_s": time.perf_counter() - t, "problems": problems}


def _old_tree(revision: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"cifar-lab-{revision}"
    if not (path / "dashboard.py").is_file():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), revision], cwd=C.REPO_ROOT,
                       check=True, capture_output=True)
    return path


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic", help="a CIFAR-10 source (default: the synthetic set)")
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--reruns", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old", default=OLD_REVISION, help="the revision with the trainer thread in the server")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(side_worker(json.loads(args.worker))))
        return
    head = C.evidence("job_process", f"{args.data}, {args.train_subset:,} training images, assignment network, "
                                     f"batch 64; {args.reruns} Train-page reruns per side while its job trains; "
                                     f"{args.rounds} round(s) alternating old ({args.old}) / new (working tree)")
    trees = {"old": _old_tree(args.old), "new": C.REPO_ROOT}
    rows = []
    for r in range(args.rounds):
        for side in ("old", "new"):
            with tempfile.TemporaryDirectory(prefix=f"jobbench-{side}-") as art:
                row = C.run_worker(Path(__file__), {"side": side, "tree": str(trees[side]), "data": args.data,
                                                    "train_subset": args.train_subset, "reruns": args.reruns},
                                   env={"CIFAR_ARTIFACTS_DIR": art, "PYTHONPATH": str(trees[side])}, timeout=1800)
            row["round"] = r + 1
            rows.append(row)
            print(f"round {r + 1} {side}: rerun median {row['rerun_median_s']:.3f} s (p90 {row['rerun_p90_s']:.3f}, "
                  f"idle {row['idle_rerun_s']:.3f}); Start returned in {row['start_call_s']:.2f} s, first batch "
                  f"{row['first_batch_s']:.1f} s (TensorFlow already imported: {row['tf_imported_before_start']}); "
                  f"{row['images_per_second_window']:.0f} img/s over the window; stop {row['stop_s']:.1f} s"
                  + (f"; page errors: {row['problems'][:2]}" if row["problems"] else ""), flush=True)
    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["side"] == side)

    print("\nmedians over rounds (new / old):")
    for key in ("rerun_median_s", "rerun_p90_s", "start_call_s", "first_batch_s", "images_per_second_window"):
        old, new = med("old", key), med("new", key)
        print(f"  {key:26s} old {old:9.3f}  new {new:9.3f}  ratio {new / old if old else float('nan'):.2f}")
    if args.out:
        args.out.write_text(json.dumps({**head, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
