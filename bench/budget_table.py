"""Accuracy by network width, epochs and precision on the real images: the measurements behind
`cifar_core/planning/table.py` (the planner's accuracy table) and its bf16-vs-float32 A/B.

Each grid point is one ordinary CLI run (`python -m cifar_core train ...`, a fresh process),
one after another; the run's test accuracy (plain and with its TTA) and its training seconds
are read back from its run folder. A point is WIDTHS@EPOCHS@PRECISION, with WIDTHS an airbench
width triple (the Fast recipe at that width, batch 512) or `assignment` (the assignment's recipe).

    python bench/budget_table.py --data /tmp/cifar/cifar10-jpeg \\
        --grid 16,64,64@2@bfloat16 16,64,64@4@bfloat16 32,128,128@8@bfloat16 assignment@5@float32
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_point(text: str) -> dict:
    try:
        widths, epochs, precision = text.split("@")
        return {"widths": widths, "epochs": int(epochs), "precision": precision}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHS@EPOCHS@PRECISION, e.g. 16,64,64@4@bfloat16")


def train_point(point: dict, data: str, seed: int) -> dict:
    if point["widths"] == "assignment":
        options = ["--preset", "assignment"]
    else:
        options = ["--preset", "fast", "--widths", point["widths"]]
    name = f"table {point['widths']} {point['epochs']}ep {point['precision']}"
    command = [sys.executable, "-m", "cifar_core", "train", *options, "--epochs", str(point["epochs"]),
               "--precision", point["precision"], "--data", data, "--seed", str(seed), "--name", name,
               "--tag", "budget-table"]
    start = time.time()
    done = subprocess.run(command, cwd=C.REPO_ROOT, capture_output=True, text=True)
    wall = time.time() - start
    run_id = next((line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("run ")), None)
    row = {**point, "seed": seed, "run_id": run_id, "wall_seconds": round(wall, 1), "exit": done.returncode}
    if done.returncode or run_id is None:
        row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
        return row
    folder = Path(C.os.environ[C.ARTIFACTS_ENV]) / "runs" / run_id
    metrics = json.loads((folder / "metrics.json").read_text())
    history = json.loads((folder / "history.json").read_text())
    status = json.loads((folder / "status.json").read_text())
    row.update(test_accuracy=metrics["test_accuracy"], test_accuracy_tta=metrics.get("test_accuracy_tta"),
               train_seconds=round(history["train_seconds"][-1], 1),
               precision_used=(status.get("precision") or {}).get("used"))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(ap)
    ap.add_argument("--grid", nargs="+", type=parse_point, required=True)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    data = C.resolve_data(args.data, "budget_table", allow_synthetic=True)
    C.use_artifacts_dir(args.artifacts)
    head = C.evidence("accuracy by width, epochs and precision (planning table)", C.describe_data(data, None, None))
    rows = []
    for point in args.grid:
        row = train_point(point, data, args.seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    C.print_table(rows, [("widths", "widths"), ("epochs", "epochs"), ("precision", "precision"),
                         ("train_seconds", "train s"), ("test_accuracy", "test acc"),
                         ("test_accuracy_tta", "TTA acc"), ("wall_seconds", "wall s")], title="grid")
    C.save_results("budget_table", {**head, "rows": rows}, rows, stem=args.out)


if __name__ == "__main__":
    main()
