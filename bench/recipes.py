"""Time to accuracy of the lab's presets beside the peer (airbench94 in PyTorch), one full run each.

    python bench/recipes.py --sides ours:fast peer:16,64,64:4 ours:best peer:32,128,128:10 \
        --peer-python /tmp/peer/bin/python --data /tmp/cifar/cifar10-jpeg

Sides run one after another in fresh processes (never two at once: the 2 cores are the budget):
  ours:PRESET[:EPOCHS]     `python -m cifar_core train --preset PRESET` (its history's train_seconds)
  peer:WIDTHS:EPOCHS       bench/peer_airbench_torch.py in the throwaway venv of --peer-python
Prints per-epoch test accuracy against cumulative training seconds, the final table (accuracy,
TTA accuracy, training seconds, images/s, FLOPs per training image) and writes JSON, CSV and an
SVG chart of accuracy against training minutes to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

TRAIN_IMAGES = 50_000
CHART_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


def flops_per_training_image(spec: str) -> float:
    """Forward multiply-adds x 2 x 3 (forward + two backward products) of the preset's network,
    counted from its layers in a child process (the parent never imports TensorFlow)."""
    code = (
        "import json,sys; from cifar_core.recipes.presets import preset_config; from cifar_core.models import build_network;"
        "from cifar_core.models.flops import forward_flops;"
        f"print(json.dumps(forward_flops(build_network(preset_config({spec!r})))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=C.REPO_ROOT, capture_output=True, text=True, check=True)
    return 3 * json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(preset: str, epochs: str | None, data: str, artifacts: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "cifar_core", "train", "--preset", preset, "--data", data]
    if epochs:
        cmd += ["--epochs", epochs]
    print("$ " + " ".join(cmd), flush=True)
    before = set((artifacts / "runs").glob("*")) if (artifacts / "runs").exists() else set()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=C.REPO_ROOT, env={**os.environ, C.ARTIFACTS_ENV: str(artifacts)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    new = sorted(set((artifacts / "runs").glob("*")) - before)
    if proc.returncode != 0 or len(new) != 1:
        raise RuntimeError(f"ours:{preset} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    run_dir = new[0]
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "side": f"ours:{preset}", "epochs": len(history["loss"]), "batch_size": config["batch_size"],
        "widths": config["widths"] if config["architecture"] == "airbench" else config["architecture"],
        "train_seconds": history["train_seconds"][-1], "test_accuracy": metrics["test_accuracy"],
        "test_accuracy_tta": metrics.get("test_accuracy_tta"), "process_wall_s": wall,
        "curve": list(zip(history["train_seconds"], history["val_accuracy"])), "run_dir": str(run_dir),
        "flops_per_image": flops_per_training_image(preset),
    }


def run_peer(python: str, widths: str, epochs: str, data: str, batch_size: int) -> dict[str, Any]:
    cmd = [python, str(C.BENCH_DIR / "peer_airbench_torch.py"), "--data", data, "--widths", widths,
           "--epochs", epochs, "--batch-size", str(batch_size)]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=C.REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"peer failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "side": f"peer:{widths}:{epochs}", "epochs": result["epochs"], "batch_size": result["batch_size"],
        "widths": result["widths"], "train_seconds": result["train_seconds"],
        "test_accuracy": result["test_accuracy"], "test_accuracy_tta": result["test_accuracy_tta"],
        "process_wall_s": wall, "curve": [(h["train_seconds"], h["val_accuracy"]) for h in result["history"]],
        "peer_header": proc.stdout.splitlines()[0],
    }


def svg_chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Test accuracy after each epoch against training minutes, one polyline per side."""
    w, h, m = 640, 360, 50
    max_min = max(s for r in rows for s, _ in r["curve"]) / 60
    lo = min(0.3, min(a for r in rows for _, a in r["curve"]))
    x = lambda minutes: m + (w - 2 * m) * minutes / max_min  # noqa: E731
    y = lambda acc: h - m - (h - 2 * m) * (acc - lo) / (1 - lo)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{w / 2}" y="18" text-anchor="middle" font-size="13">Test accuracy vs training minutes</text>']
    for acc in [a / 10 for a in range(math.ceil(lo * 10), 11)]:
        parts.append(f'<line x1="{m}" x2="{w - m}" y1="{y(acc):.1f}" y2="{y(acc):.1f}" stroke="#ddd"/>'
                     f'<text x="{m - 5}" y="{y(acc) + 4:.1f}" text-anchor="end">{acc:.0%}</text>')
    step = max(1, round(max_min / 8))
    for minute in range(0, int(max_min) + 1, step):
        parts.append(f'<text x="{x(minute):.1f}" y="{h - m + 15}" text-anchor="middle">{minute}</text>')
    parts.append(f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">training minutes</text>')
    for i, r in enumerate(rows):
        color = CHART_COLORS[i % len(CHART_COLORS)]
        pts = " ".join(f"{x(s / 60):.1f},{y(a):.1f}" for s, a in r["curve"])
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{w - m - 150}" y="{m + 14 * i}" fill="{color}">{r["side"]}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_args(ap)
    ap.add_argument("--sides", nargs="+", default=["ours:fast", "peer:16,64,64:4"])
    ap.add_argument("--peer-python", default="/tmp/peer/bin/python",
                    help="python of a throwaway venv with torch (never the project's)")
    ap.add_argument("--peer-batch-size", type=int, default=512)
    args = ap.parse_args()
    data = C.resolve_data(args.data, "recipes", allow_synthetic=False)
    artifacts = C.use_artifacts_dir(args.artifacts)
    head = C.evidence("recipes: time to accuracy, ours vs peer", C.describe_data(data, None, None),
                      {"sides": " ".join(args.sides)})
    rows = []
    for side in args.sides:
        kind, _, rest = side.partition(":")
        if kind == "ours":
            preset, _, epochs = rest.partition(":")
            row = run_ours(preset, epochs or None, data, artifacts)
            shutil.rmtree(row.pop("run_dir"), ignore_errors=True)
        elif kind == "peer":
            if not Path(args.peer_python).exists():
                print(f"SKIP {side}: no peer python at {args.peer_python} (see bench/peer_airbench_torch.py)")
                continue
            widths, _, epochs = rest.partition(":")
            row = run_peer(args.peer_python, widths, epochs or "4", data, args.peer_batch_size)
        else:
            raise SystemExit(f"unknown side {side!r}: use ours:PRESET[:EPOCHS] or peer:WIDTHS:EPOCHS")
        row["images_per_second"] = row["epochs"] * TRAIN_IMAGES / row["train_seconds"]
        for s, a in row["curve"]:
            print(f"  {row['side']}: {s:7.1f} s  {a:.2%}", flush=True)
        rows.append(row)
    C.print_table(rows, [("side", "side"), ("widths", "widths"), ("epochs", "epochs", 0),
                         ("train_seconds", "train s", 0), ("test_accuracy", "test acc", 4),
                         ("test_accuracy_tta", "TTA acc", 4), ("images_per_second", "img/s", 0),
                         ("flops_per_image", "FLOPs/img (train)")], title="Recipes")
    path = C.save_results("recipes", {**head, "rows": rows}, rows, stem=args.out)
    svg_chart(rows, path.with_suffix(".svg"))
    print(f"chart   : {path.with_suffix('.svg')}")


if __name__ == "__main__":
    main()
