"""Time budgets on the real images: for each budget, the lab's plan trained by the CLI
(`python -m cifar_core train --budget B`), then the peer, airbench94 in PyTorch, given the same
training time at the same width on the same machine (its epochs, fractional, are the budget times
its measured throughput at that width). Prints the plan, the actual training seconds against the
budget, and both accuracies (plain and TTA).

The peer runs in a throwaway virtual environment (never the project's requirements):

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch numpy pillow
    python bench/budget.py --data /tmp/cifar/cifar10-jpeg --budgets 2m 5m 15m --peer-python /tmp/peer/bin/python

--calibrate instead measures how much slower a real run trains than the probe's bare steps
(the planner's RUN_EFFICIENCY and STARTUP_SECONDS): a fresh probe, then one short run per width.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PEER = Path(__file__).resolve().parent / "peer_airbench_torch.py"
CALIBRATION_RUNS = (("16,64,64", 3), ("32,128,128", 2), ("64,256,256", 2))


def lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cifar_core", *args], cwd=C.REPO_ROOT, capture_output=True, text=True)


def run_folder(stdout: str) -> Path:
    run_id = next(line.split()[1].rstrip(":") for line in stdout.splitlines() if line.startswith("run "))
    return Path(C.os.environ[C.ARTIFACTS_ENV]) / "runs" / run_id


def peer(python: str, data: str, widths: str, budget_seconds: float) -> dict:
    quick = subprocess.run([python, str(PEER), "--data", data, "--widths", widths, "--throughput-only"],
                           capture_output=True, text=True, check=True)
    ips = json.loads(quick.stdout.strip().splitlines()[-1])["peer_images_per_second"]
    epochs = round(budget_seconds * ips / 50_000, 2)
    full = subprocess.run([python, str(PEER), "--data", data, "--widths", widths, "--epochs", str(epochs)],
                          capture_output=True, text=True, check=True)
    result = json.loads(full.stdout.strip().splitlines()[-1])
    return {"peer_widths": widths, "peer_epochs": epochs, "peer_images_per_second": ips,
            "peer_train_seconds": result["train_seconds"], "peer_test_accuracy": result["test_accuracy"],
            "peer_test_accuracy_tta": result["test_accuracy_tta"]}


def budgets(args, data: str) -> list[dict]:
    rows = []
    for budget in args.budgets:
        done = lab("train", "--budget", budget, "--data", data, "--name", f"budget {budget}", "--tag", "budget-bench")
        if done.returncode:
            print(done.stdout, done.stderr, flush=True)
            raise SystemExit(f"the lab's {budget} run failed")
        plan = json.loads((run_folder(done.stdout) / "plan.json").read_text())
        chosen, outcome = plan["chosen"], plan["outcome"]
        row = {"budget": budget, "budget_seconds": plan["budget_seconds"], "plan": chosen["label"],
               "epochs": chosen["epochs"], "predicted_seconds": chosen["predicted_seconds"],
               "predicted_accuracy_tta": chosen.get("predicted_accuracy_tta"),
               "train_seconds": outcome["train_seconds"], "over_budget": outcome["over_budget"],
               "test_accuracy": outcome.get("test_accuracy"), "test_accuracy_tta": outcome.get("test_accuracy_tta"),
               "runners_up": [o["label"] + f", {o['epochs']} epochs" for o in plan["runners_up"]]}
        print(json.dumps(row), flush=True)
        if args.peer_python:
            row.update(peer(args.peer_python, data, ",".join(map(str, chosen["widths"])), plan["budget_seconds"]))
            print(json.dumps(row), flush=True)
        rows.append(row)
    C.print_table(rows, [("budget", "budget"), ("plan", "plan"), ("epochs", "epochs"),
                         ("predicted_seconds", "predicted s", 0), ("train_seconds", "actual s", 0),
                         ("over_budget", "over budget", 3), ("test_accuracy", "ours"), ("test_accuracy_tta", "ours TTA"),
                         ("peer_epochs", "peer epochs"), ("peer_train_seconds", "peer s", 0),
                         ("peer_test_accuracy", "peer"), ("peer_test_accuracy_tta", "peer TTA")],
                  title="budgets", digits=4)
    return rows


def calibrate(data: str) -> list[dict]:
    probe = lab("probe")
    print(probe.stdout, flush=True)
    from cifar_core.planning.probe import Candidate, load_probe

    measured = load_probe()
    rows = []
    for widths, epochs in CALIBRATION_RUNS:
        done = lab("train", "--preset", "fast", "--widths", widths, "--epochs", str(epochs), "--precision", "auto",
                   "--data", data, "--name", f"calibrate {widths}", "--tag", "budget-bench")
        folder = run_folder(done.stdout)
        config = json.loads((folder / "config.json").read_text())
        precision = json.loads((folder / "status.json").read_text())["precision"]["used"]
        seconds = json.loads((folder / "history.json").read_text())["train_seconds"]
        w = tuple(int(v) for v in widths.split(","))
        ips = measured.speed(Candidate("airbench", w, config["batch_size"], precision))
        per_epoch = [b - a for a, b in zip([0.0] + seconds[:-1], seconds)]
        steady = 50_000 / (per_epoch[-1] if len(per_epoch) > 1 else per_epoch[0])
        rows.append({"widths": widths, "epochs": epochs, "precision": precision, "probe_ips": round(ips),
                     "train_seconds": round(seconds[-1], 1), "epoch_seconds": [round(s, 1) for s in per_epoch],
                     "efficiency_steady": round(steady / ips, 3),
                     "startup_seconds": round(per_epoch[0] - 50_000 / (ips * steady / ips), 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(ap)
    ap.add_argument("--budgets", nargs="+", default=["2m", "5m", "15m"])
    ap.add_argument("--peer-python", help="the Python of a virtual environment with torch (the peer's side)")
    ap.add_argument("--calibrate", action="store_true", help="measure a real run's speed against the probe's")
    args = ap.parse_args()
    data = C.resolve_data(args.data, "budget", allow_synthetic=False)
    C.use_artifacts_dir(args.artifacts)
    head = C.evidence("time budgets: the lab's plan against airbench94 in PyTorch", C.describe_data(data, None, None))
    rows = calibrate(data) if args.calibrate else budgets(args, data)
    C.save_results("budget", {**head, "rows": rows}, rows, stem=args.out)


if __name__ == "__main__":
    main()
