"""The evolving evaluation's cost: seconds per epoch the evolution callback spends (predicting its
fixed stratified sample of the test split and writing evolution.json) and its share of the epoch's
wall time, inside a real training job (cifar_core.training.new_job(...).run(), the assignment network).

    python bench/evolution_cost.py --data /tmp/cifar/cifar10-jpeg        # 5,000 train images, 2 epochs, ~3-5 min

Every epoch but the last predicts the sample ("sample"); the last one takes its rows from the
validation pass the live callback already made over the whole test split ("validation": no second
pass). Epoch 1's call also traces the model's predict function once. After the job, the same
process repeats the callback's work with the trained model, warm, `--repeats` times (steady state).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: train through the trainer, read the callback's own timings, then time its work warm."""
    C.configure_tensorflow()
    import numpy as np

    from cifar_core.insight import evaluation, evolution
    from cifar_core import runs, training
    from cifar_core.config import TrainConfig

    config = TrainConfig(epochs=spec["epochs"], train_subset=spec["train_subset"], test_subset=spec["test_subset"],
                         data=spec["data"], seed=spec["seed"])
    t = time.perf_counter()
    job = training.new_job(config).run()
    job_s = time.perf_counter() - t
    snap = job.snapshot()
    if snap.status != "completed":
        raise RuntimeError(f"the job ended {snap.status}: {snap.error}")
    run = runs.load_run(job.run_id)
    raw = runs.read_json(run.path / evolution.EVOLUTION_FILE)
    train_s = run.history.get("train_seconds", [])
    rows = []
    for i, e in enumerate(raw["epochs"]):
        trained = train_s[i] - (train_s[i - 1] if i else 0.0) if i < len(train_s) else None
        rows.append({"epoch": e["epoch"], "source": e["source"], "callback_s": e["seconds"],
                     "epoch_s": e["epoch_seconds"], "share": e["seconds"] / e["epoch_seconds"],
                     "train_s": trained})
    model = runs.load_model(job.run_id)
    data = evaluation.run_test_data(run)
    indices = np.array(raw["indices"])
    x, y = np.ascontiguousarray(data.x_test[indices]), data.y_test[indices]
    warm = []
    for _ in range(spec["repeats"] + 1):  # the first call traces predict in this fresh model: not counted
        t = time.perf_counter()
        cm = evaluation.confusion_matrix(y, evaluation.predict_test_set(model, x, config.validation_batch_size).argmax(1))
        runs.write_json(run.path / "bench-evolution.json", {"confusion": cm.tolist()})
        warm.append(time.perf_counter() - t)
    return {"run_id": job.run_id, "job_s": job_s, "rows": rows, "warm_s": warm[1:], "sample_size": len(indices),
            "test_images": raw["test_images"], "test_accuracy": run.test_accuracy}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--test-subset", type=int, default=None, help="default: the whole test split (10,000)")
    parser.add_argument("--repeats", type=int, default=5, help="warm repeats of the callback's work after the job")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-run", action="store_true", help="leave the run folder behind")
    args = parser.parse_args(argv)
    source = C.resolve_data(args.data, "evolution_cost", allow_synthetic=False)
    art = C.use_artifacts_dir(args.artifacts)
    head = C.evidence("evolution_cost", C.describe_data(source, args.train_subset, args.test_subset), {
        "setup": f"assignment network, batch 64, {args.epochs} epoch(s), one job in a fresh process; "
                 f"then {args.repeats} warm repeats of the callback's work; artifacts {art}",
    })
    from cifar_core.data import get_dataset

    get_dataset(source)  # the .npy cache outside every measurement
    spec = {"data": source, "epochs": args.epochs, "train_subset": args.train_subset,
            "test_subset": args.test_subset, "seed": args.seed, "repeats": args.repeats}
    result = C.run_worker(Path(__file__), spec)
    try:
        rows = result["rows"]
        C.print_table(rows, [("epoch", "epoch"), ("source", "confusion from"), ("callback_s", "callback s", 3),
                             ("epoch_s", "epoch wall s", 1), ("share", "share of epoch", 4), ("train_s", "training s", 1)],
                      title=f"Evolution callback per epoch ({result['sample_size']:,} of "
                            f"{result['test_images']:,} test images)")
        warm = result["warm_s"]
        sampled = [r["epoch_s"] for r in rows if r["source"] == "sample"]
        summary = [{"what": "warm: predict the sample + confusion + write (median of "
                            f"{len(warm)})", "seconds": C.median(warm),
                    "share": C.median(warm) / C.median(sampled) if sampled and warm else None}]
        C.print_table(summary, [("what", "steady state"), ("seconds", "s", 3),
                                ("share", "share of a sampled epoch's wall time", 4)])
        print(f"job wall {result['job_s']:.1f} s, test accuracy {result['test_accuracy']:.4f}")
        C.save_results("evolution_cost", {**head, "args": vars(args), **result}, rows=rows, stem=args.out)
    finally:
        if not args.keep_run:
            shutil.rmtree(Path(art) / "runs" / result["run_id"], ignore_errors=True)


if __name__ == "__main__":
    w = C.worker_args()
    if w:
        C.write_worker_result(w[1], measure(w[0]))
    else:
        main()
