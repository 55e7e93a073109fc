"""The end of a training job: how long from the last epoch's end to "completed", with the
final evaluation reusing the last epoch's validation pass (this checkout) vs predicting the
test split again (an older checkout given by --before), alternating, each job in a fresh process.

    python bench/final_evaluation.py --before /tmp/before --rounds 2 --data /tmp/cifar/cifar10-jpeg

Both sides train the assignment's network on --train-subset images for --epochs epochs and
validate on the whole test split (10,000 real images); "tail s" is the job's wall time minus its
recorded training seconds: validation, checkpoints, the final save and evaluation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

JOB = """
import json, os, sys, time
from cifar_core import training, runs
from cifar_core.config import TrainConfig
config = TrainConfig(epochs={epochs}, train_subset={train_subset}, data={data!r}, batch_size=64)
t = time.perf_counter()
job = training.new_job(config).run()
wall = time.perf_counter() - t
snap = job.snapshot()
assert snap.status == "completed", snap.error
run = runs.load_run(job.run_id)
print(json.dumps(dict(wall_s=wall, train_s=run.history.get("train_seconds", [None])[-1],
                      evaluate_s=(run.metrics or {{}}).get("evaluate_seconds"),
                      reused=(run.metrics or {{}}).get("validation_reused"),
                      test_accuracy=run.test_accuracy, val_accuracy=run.history["val_accuracy"][-1],
                      num_test=(run.metrics or {{}}).get("num_test_images"))))
"""


def one_job(root: Path, args: argparse.Namespace, artifacts: Path) -> dict:
    code = JOB.format(epochs=args.epochs, train_subset=args.train_subset, data=args.data)
    env = dict(os.environ, CIFAR_ARTIFACTS_DIR=str(artifacts), PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=3600)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["tail_s"] = row["wall_s"] - (row["train_s"] or 0.0)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a checkout of the code to compare against")
    parser.add_argument("--data", default=os.environ.get(C.DATA_ENV, "synthetic"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    info = C.evidence("final_evaluation", C.describe_data(args.data, args.train_subset, None))
    artifacts = Path(tempfile.gettempdir()) / "final-eval-bench"  # its cache/ keeps the decoded images
    sides = {"reuse (this checkout)": C.REPO_ROOT, "predict again (--before)": Path(args.before).resolve()}
    rows = []
    for r in range(args.rounds):
        for name, root in sides.items():
            row = {"side": name, "round": r + 1, **one_job(root, args, artifacts)}
            rows.append(row)
            print(f"{name} round {r + 1}: wall {row['wall_s']:.1f} s, training {row['train_s']:.1f} s, "
                  f"tail {row['tail_s']:.1f} s, evaluate {C.fmt(row['evaluate_s'])} s, reused {row['reused']}",
                  flush=True)
    summary = [{"side": name, "tail_s": C.median(r["tail_s"] for r in rows if r["side"] == name),
                "wall_s": C.median(r["wall_s"] for r in rows if r["side"] == name),
                "test_accuracy": C.median(r["test_accuracy"] for r in rows if r["side"] == name)}
               for name in sides]
    C.print_table(summary, [("side", "side"), ("tail_s", "tail s (median)"), ("wall_s", "job wall s (median)"),
                            ("test_accuracy", "test accuracy")], title="Job tail: last epoch's end to completed")
    C.save_results("final_evaluation", {**info, "rows": rows, "summary": summary}, rows)


if __name__ == "__main__":
    main()
