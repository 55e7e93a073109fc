"""Time to accuracy: cifar_core's background job vs the assignment's plain `model.fit`, each
given the same wall-clock budget on the real images, one after the other (fresh process each).

Records test-set accuracy after every epoch against seconds since that side started (model
build included, data loading and TensorFlow import excluded), and the accuracy of the weights
each side holds when the budget runs out. How each side stops:
  ours   a client thread (the dashboard's poller, once a second) calls job.stop() when the
         budget is spent; the job leaves model.fit within one batch, saves the model and
         evaluates it on the test set (cifar_core's own evaluate_model) -> "final at stop".
  plain  a callback sets model.stop_training once the budget is spent: after the current batch
         (Keras then validates the partial epoch on the test set, as fit always does) or at an
         epoch's end (no extra pass) -> "final at stop" is that last validation.
Both finals therefore score, on the same full test set, the weights trained up to the budget;
"finished at" says how long past the budget that evaluation ended.

Full default: 15 min per side on 50k/10k images (over 30 min in all). Smoke test:
  python bench/time_to_accuracy.py --budget-minutes 1 --train-subset 2000 --test-subset 500
"""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SIDES = ("ours", "plain")
SIDE_OPTIONS = ("bf16", "inter", "intra")  # what-ifs, as in train_throughput.py
MAX_EPOCHS = 1000  # the budget, not the epoch count, ends training
POLL_SECONDS = 1.0  # the dashboard's refresh interval
DEFAULT_THRESHOLDS = (0.30, 0.40, 0.50, 0.60, 0.65, 0.70, 0.75)


# --- worker: one side, in a fresh process -------------------------------------------------

def parse_side(text: str) -> tuple[str, dict[str, int]]:
    """'ours' or 'plain', optionally with what-ifs: ours:bf16=1, plain:inter=1."""
    base, *parts = text.split(":")
    if base not in SIDES:
        raise argparse.ArgumentTypeError(f"unknown side {base!r}; choose ours or plain, e.g. ours:bf16=1")
    opts = {}
    for p in parts:
        key, _, value = p.partition("=")
        if key not in SIDE_OPTIONS or not value.isdigit():
            raise argparse.ArgumentTypeError(f"bad option {p!r} in {text!r}; options: {', '.join(SIDE_OPTIONS)}")
        opts[key] = int(value)
    return base, opts


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    side, opts = parse_side(spec["side"])
    C.configure_tensorflow(opts.get("intra"), opts.get("inter"))
    import keras

    import cifar_core.models as cmodel
    from cifar_core import training
    from cifar_core.config import TrainConfig
    from cifar_core.data import NUM_CLASSES

    budget = spec["budget_s"]
    config = TrainConfig(epochs=MAX_EPOCHS, batch_size=spec["batch_size"], seed=spec["seed"], data=spec["data"],
                         train_subset=spec["train_subset"], test_subset=spec["test_subset"])
    data = training.load_training_data(config)
    n_train = len(data.x_train)
    timer = C.make_fit_timer()
    fit_window = C.instrument_fit(timer)  # epoch-level timestamps only
    C.patch_build_model(bf16=bool(opts.get("bf16")))
    keras.utils.set_random_seed(config.seed)
    out: dict[str, Any] = {"side": spec["side"], "num_train": n_train, "num_test": len(data.x_test), "budget_s": budget}
    t0 = time.perf_counter()
    if side == "ours":
        job = training.new_job(config, dataset=data)
        stop_at = None
        trainer = threading.Thread(target=job.run, daemon=True)  # the job process's work, here in a thread
        trainer.start()
        while True:  # the dashboard's client: poll once a second; press Stop when the budget is spent
            snap = job.snapshot()
            if not snap.is_active:
                break
            if stop_at is None and time.perf_counter() - t0 >= budget:
                stop_at = time.perf_counter() - t0
                job.stop()
            time.sleep(POLL_SECONDS)
        job.wait()
        finished = time.perf_counter() - t0
        snap = job.snapshot()
        if snap.status not in ("stopped", "completed"):
            raise RuntimeError(f"ours ended {snap.status}: {snap.error}")
        done = len(snap.history.get("loss", []))
        out.update(stop_requested_s=stop_at, finished_s=finished, epochs_completed=done,
                   images_trained=done * n_train + (snap.batch * config.batch_size if snap.status == "stopped" else 0),
                   final_accuracy=(snap.metrics or {}).get("test_accuracy"), final_how="evaluate_model after job.stop()")
        shutil.rmtree(job.run_dir, ignore_errors=True)
    else:
        steps = -(-n_train // config.batch_size)
        state: dict[str, Any] = {"stop_at": None, "batches": 0, "partial": False}

        class BudgetStop(keras.callbacks.Callback):
            """Stops fit once the budget is spent; async_safe keeps Keras' asynchronous batch
            callbacks on, as in the plain script without callbacks."""

            async_safe = True

            def on_train_batch_end(self, batch, logs=None):
                state["batches"] += 1
                if self._spent():
                    state["partial"] = batch + 1 < steps  # Keras validates this partial epoch
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                if self._spent():
                    self.model.stop_training = True  # at an epoch boundary: no extra validation

            def _spent(self) -> bool:
                if state["stop_at"] is None and time.perf_counter() - t0 >= budget:
                    state["stop_at"] = time.perf_counter() - t0
                    return True
                return False

        model = cmodel.build_model(config)
        x = data.x_train.astype("float32")
        y = keras.utils.to_categorical(data.y_train, NUM_CLASSES)
        xt = data.x_test.astype("float32")
        yt = keras.utils.to_categorical(data.y_test, NUM_CLASSES)
        model.fit(x, y, batch_size=config.batch_size, epochs=MAX_EPOCHS, validation_data=(xt, yt), verbose=0,
                  callbacks=[BudgetStop()])
        finished = time.perf_counter() - t0
        epochs = timer.summary(t0, n_train)
        out.update(stop_requested_s=state["stop_at"], finished_s=finished,
                   epochs_completed=len(epochs) - (1 if state["partial"] else 0),
                   images_trained=min(state["batches"] * config.batch_size, len(epochs) * n_train),
                   final_accuracy=epochs[-1].get("val_accuracy") if epochs else None,
                   final_how="Keras' validation after stop_training" + (" (partial epoch)" if state["partial"] else ""))
    fit_window["restore"]()
    epochs = timer.summary(t0, n_train)
    if side == "plain" and out["epochs_completed"] < len(epochs):
        epochs[-1]["partial"] = True
    out["epochs"] = epochs
    out["peak_rss_mb"] = C.peak_rss_mb()
    return out


# --- parent -------------------------------------------------------------------------------

def time_to(epochs: list[dict[str, Any]], threshold: float) -> Optional[float]:
    for e in epochs:
        if not e.get("partial") and (e.get("val_accuracy") or 0) >= threshold:
            return e["end_s"]
    return None


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--budget-minutes", type=float, default=15.0, help="wall-clock budget per side")
    parser.add_argument("--train-subset", type=int, default=None, help="default: all 50,000")
    parser.add_argument("--test-subset", type=int, default=None, help="default: all 10,000")
    parser.add_argument("--sides", nargs="+", default=["ours", "plain"],
                        help="what to train, in this order (default: ours plain). 'plain ours' swaps the order; "
                             "what-ifs as in train_throughput.py: ours:bf16=1, plain:inter=1 ...")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--thresholds", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS))
    args = parser.parse_args(argv)
    for side in args.sides:
        try:
            parse_side(side)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    if len(set(args.sides)) != len(args.sides):
        parser.error("each side once")
    source = C.resolve_data(args.data, "time_to_accuracy", allow_synthetic=False)
    art = C.use_artifacts_dir(args.artifacts)
    budget_s = args.budget_minutes * 60
    order = args.sides
    head = C.evidence("time_to_accuracy", C.describe_data(source, args.train_subset, args.test_subset), {
        "setup": f"budget {args.budget_minutes:g} min per side, sides in order {' then '.join(order)}, batch "
                 f"{args.batch_size}, seed {args.seed}; artifacts {art}",
    })
    from cifar_core.data import get_dataset

    get_dataset(source)  # decode into the .npy cache outside the budget
    spec = {"data": source, "train_subset": args.train_subset, "test_subset": args.test_subset,
            "batch_size": args.batch_size, "seed": args.seed, "budget_s": budget_s}
    results = {}
    for side in order:
        print(f"training {side} for {args.budget_minutes:g} min ...", flush=True)
        r = C.run_worker(Path(__file__), {**spec, "side": side}, timeout=budget_s * 3 + 900)
        results[side] = r
        for e in r["epochs"]:
            print(f"  {side} epoch {e['epoch']:>3} at {e['end_s']:8.1f} s: val acc {C.fmt(e.get('val_accuracy'), 4)}"
                  f"{' (partial epoch, after stop)' if e.get('partial') else ''}", flush=True)
    print()
    summary = [{
        "side": s, "epochs_completed": r["epochs_completed"],
        "last_epoch_acc": next((e.get("val_accuracy") for e in reversed(r["epochs"]) if not e.get("partial")), None),
        "best_acc": max((e.get("val_accuracy") or 0 for e in r["epochs"] if not e.get("partial")), default=None),
        "final_accuracy": r["final_accuracy"], "stop_requested_s": r["stop_requested_s"],
        "finished_s": r["finished_s"], "images_per_s": r["images_trained"] / (r["stop_requested_s"] or r["finished_s"]),
        "peak_rss_mb": r["peak_rss_mb"], "final_how": r["final_how"],
    } for s, r in results.items()]
    C.print_table(summary, [
        ("side", "side"), ("epochs_completed", "full epochs"), ("last_epoch_acc", "acc last full epoch"),
        ("best_acc", "best epoch acc"), ("final_accuracy", "final acc at stop"), ("stop_requested_s", "stop at s", 1),
        ("finished_s", "finished s", 1), ("images_per_s", "train img/s (avg)", 1), ("peak_rss_mb", "peak RSS MB", 0),
        ("final_how", "final measured by"),
    ], title="Within the budget", digits=4)
    longest = max(len(r["epochs"]) for r in results.values())
    curve = []
    for i in range(longest):
        row: dict[str, Any] = {"epoch": i + 1}
        for s, r in results.items():
            if i < len(r["epochs"]):
                e = r["epochs"][i]
                row[f"{s}_s"], row[f"{s}_acc"] = e["end_s"], e.get("val_accuracy")
                if e.get("partial"):
                    row[f"{s}_acc"] = f"{e.get('val_accuracy'):.4f} (partial)"
        curve.append(row)
    C.print_table(curve, [("epoch", "epoch"), *[(f"{s}_{k}", f"{s} {h}", d) for s in results
                                                 for k, h, d in (("s", "elapsed s", 1), ("acc", "test acc", 4))]],
                  title="Test accuracy after each epoch (elapsed incl. validation)", digits=4)
    thresholds = [{"threshold": f"{t:.0%}", **{s: time_to(r["epochs"], t) for s, r in results.items()}}
                  for t in args.thresholds]
    C.print_table(thresholds, [("threshold", "test acc >="), *[(s, f"{s} s") for s in results]],
                  title="Seconds to first reach an accuracy (end of the epoch that reached it)", digits=1)
    C.save_results("time_to_accuracy", {**head, "args": vars(args), "sides": results, "summary": summary,
                                        "thresholds": thresholds},
                   rows=[{"side": s, **e} for s, r in results.items() for e in r["epochs"]], stem=args.out)


if __name__ == "__main__":
    w = C.worker_args()
    if w:
        C.write_worker_result(w[1], worker(w[0]))
    else:
        main()
