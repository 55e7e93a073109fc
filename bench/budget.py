"""Time budgets on the real images: for each budget, the lab's plan trained by the CLI
(`python -m cifar_core train --budget B`), then the peer, airbench94 in PyTorch, given the same
training time on the same machine at its own best: its best precision (bfloat16 autocast where the
CPU has bf16 units, `bench/peer_airbench_torch.py --precision auto`) and its best width for the
budget. Prints the plan, the actual training seconds against the budget, and both accuracies
(plain and TTA).

The peer's width is chosen the way ours is: from its own measured speed at each width (10 steps
of random data, in its precision) it gets the epochs the budget buys it (fractional), capped like
ours at twice the longest measured run, and the width whose epochs the accuracy table expects to
do best (the table measured our port of the same network and recipe, at batch 512; the peer keeps
airbench94's batch 1024). `--peer-widths all` instead trains the peer at every width and reports
each (its best is the figure to compare).

The peer runs in a throwaway virtual environment (never the project's requirements):

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch numpy pillow
    python bench/budget.py --data /tmp/cifar/cifar10-jpeg --budgets 2m 5m 15m --peer-python /tmp/peer/bin/python
    python bench/budget.py --data /tmp/cifar/cifar10-jpeg --budgets 2m --peer-python /tmp/peer/bin/python --peer-widths all

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


PEER_WIDTHS = ("16,64,64", "32,128,128", "64,256,256")


def peer_speed(python: str, widths: str, precision: str) -> tuple[float, str]:
    """The peer's images per second at that width (10 steps on random data) and the precision it used."""
    quick = subprocess.run([python, str(PEER), "--data", "unused", "--widths", widths, "--precision", precision,
                            "--throughput-only"], capture_output=True, text=True, check=True)
    said = json.loads(quick.stdout.strip().splitlines()[-1])
    return said["peer_images_per_second"], said["precision"]


def peer_epochs(widths: str, ips: float, budget_seconds: float) -> tuple[float, object]:
    """The epochs the budget buys the peer at that speed, capped as our plans are, and what the
    accuracy table expects of them (None: shorter than any measured run of that width)."""
    from cifar_core.planning import table

    w = tuple(int(v) for v in widths.split(","))
    epochs = budget_seconds * ips / 50_000
    longest = table.max_epochs("airbench", w, 512)
    if longest is not None:
        epochs = min(epochs, longest)
    return round(epochs, 2), table.expected("airbench", w, 512, epochs)


def peer_train(python: str, data: str, widths: str, epochs: float, precision: str) -> dict:
    full = subprocess.run([python, str(PEER), "--data", data, "--widths", widths, "--epochs", str(epochs),
                           "--precision", precision], capture_output=True, text=True, check=True)
    return json.loads(full.stdout.strip().splitlines()[-1])


def peer(python: str, data: str, budget_seconds: float, *, precision: str, every_width: bool) -> dict:
    """The peer at its best for this budget: chosen width (or every width), its precision."""
    speeds = {w: peer_speed(python, w, precision) for w in PEER_WIDTHS}
    options = {w: peer_epochs(w, ips, budget_seconds) for w, (ips, _) in speeds.items()}
    print(json.dumps({"peer_speeds": {w: ips for w, (ips, _) in speeds.items()},
                      "peer_options": {w: [e, None if x is None else round(x.accuracy_tta, 4)]
                                       for w, (e, x) in options.items()}}), flush=True)
    ranked = sorted((w for w in PEER_WIDTHS if options[w][1] is not None),
                    key=lambda w: -options[w][1].accuracy_tta)
    if not ranked:
        raise SystemExit(f"no peer width has a measured accuracy for a {budget_seconds:.0f} s budget")
    tried = []
    for w in (PEER_WIDTHS if every_width else ranked[:1]):
        epochs = options[w][0]
        result = peer_train(python, data, w, epochs, precision)
        tried.append({"widths": w, "epochs": epochs, "images_per_second": speeds[w][0],
                      "precision": result.get("precision", speeds[w][1]), "train_seconds": result["train_seconds"],
                      "test_accuracy": result["test_accuracy"], "test_accuracy_tta": result["test_accuracy_tta"]})
        print(json.dumps({"peer_run": tried[-1]}), flush=True)
    best = max(tried, key=lambda t: t["test_accuracy_tta"])
    return {"peer_widths": best["widths"], "peer_chosen_widths": ranked[0], "peer_precision": best["precision"],
            "peer_epochs": best["epochs"], "peer_images_per_second": best["images_per_second"],
            "peer_train_seconds": best["train_seconds"], "peer_test_accuracy": best["test_accuracy"],
            "peer_test_accuracy_tta": best["test_accuracy_tta"], "peer_runs": tried}


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
            row.update(peer(args.peer_python, data, plan["budget_seconds"], precision=args.peer_precision,
                            every_width=args.peer_widths == "all"))
            print(json.dumps(row), flush=True)
        rows.append(row)
    C.print_table(rows, [("budget", "budget"), ("plan", "plan"), ("epochs", "epochs"),
                         ("predicted_seconds", "predicted s", 0), ("train_seconds", "actual s", 0),
                         ("over_budget", "over budget", 3), ("test_accuracy", "ours"), ("test_accuracy_tta", "ours TTA"),
                         ("peer_widths", "peer widths"), ("peer_precision", "peer precision"),
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
    ap.add_argument("--peer-precision", choices=("auto", "float32", "bfloat16"), default="auto",
                    help="the peer's precision (auto: bfloat16 autocast where the CPU has bf16 units)")
    ap.add_argument("--peer-widths", choices=("chosen", "all"), default="chosen",
                    help="chosen: the width the table expects to do best at the peer's speed; all: every width")
    ap.add_argument("--calibrate", action="store_true", help="measure a real run's speed against the probe's")
    args = ap.parse_args()
    data = C.resolve_data(args.data, "budget", allow_synthetic=False)
    C.use_artifacts_dir(args.artifacts)
    head = C.evidence("time budgets: the lab's plan against airbench94 in PyTorch", C.describe_data(data, None, None))
    rows = calibrate(data) if args.calibrate else budgets(args, data)
    C.save_results("budget", {**head, "rows": rows}, rows, stem=args.out)


if __name__ == "__main__":
    main()
