"""Training throughput: cifar_core's background job (as the dashboard runs it) vs the
assignment's plain `model.fit` script, plus variants that might make ours faster.

Each measured run is a fresh child process (so peak RSS is its own); the parent alternates
variants round by round (A B A B ...) and reports medians and paired ratios.

Variants are `base[:option=value...]`:
  ours      cifar_core.training.new_job(config, dataset=...).run(), as a job process trains, with the
            LiveProgress callback, per-epoch checkpoint, final save + test-set evaluation, and a
            client thread polling job.snapshot() once a second (the dashboard's way)
  plain     the assignment script: build_model, x.astype('float32'), to_categorical,
            model.fit(x, y, batch_size, validation_data=(x_test, y_test_onehot), verbose=0)
  ds        model.fit on cifar_core.training.make_tf_dataset (uint8 -> float32 per batch,
            prefetch), no callbacks: ours without the job machinery
  ds-live   ds plus ours' LiveProgress callback (per-batch state, per-epoch checkpoint)
options:
  val=N     validation batch size (ours/ds default 256 = TrainConfig; plain default = batch size)
  intra=N, inter=N   tf.config.threading intra/inter-op thread pools
  onednn=0  TF_ENABLE_ONEDNN_OPTS=0 (oneDNN off)
  bf16=1    keras mixed_bfloat16 policy (changes numerics; for ours set inside build_model, which
            runs in the job's thread, since Keras keeps the policy per thread)
  xla=1     jit_compile=True on the built model
  nan=1     ds with keras.callbacks.TerminateOnNaN only (a per-batch hook, nothing else)
  poll=0    ours / ds-live without the once-a-second snapshot poller
  autotune=0  ours/ds: make_tf_dataset's pipeline with tf.data autotuning off (no model thread)

Example: python bench/train_throughput.py --variants ours plain ours:val=64 plain:val=256 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BASES = ("ours", "plain", "ds", "ds-live")
OPTIONS = {"val": int, "intra": int, "inter": int, "onednn": int, "bf16": int, "xla": int, "nan": int, "poll": int,
           "autotune": int}
POLL_SECONDS = 1.0  # the dashboard's refresh interval


def parse_variant(text: str) -> tuple[str, dict[str, int]]:
    base, *parts = text.split(":")
    if base not in BASES:
        raise argparse.ArgumentTypeError(f"unknown variant base {base!r}; choose from {', '.join(BASES)}")
    opts: dict[str, int] = {}
    for p in parts:
        key, _, value = p.partition("=")
        if key not in OPTIONS or not value:
            raise argparse.ArgumentTypeError(f"bad option {p!r} in {text!r}; options: {', '.join(OPTIONS)}")
        opts[key] = OPTIONS[key](value)
    if opts.get("nan") and base != "ds":
        raise argparse.ArgumentTypeError("nan=1 applies to ds only")
    return base, opts


# --- worker: one measured run in a fresh process ------------------------------------------

def _poller(job, stats: dict[str, Any]) -> None:
    """The dashboard's client: copy the job's state once a second until it ends."""
    while True:
        t = time.perf_counter()
        snap = job.snapshot()
        stats["polls"] += 1
        stats["poll_s"] += time.perf_counter() - t
        if not snap.is_active:
            return
        time.sleep(POLL_SECONDS)


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    base, opts = parse_variant(spec["variant"])
    tf = C.configure_tensorflow(opts.get("intra"), opts.get("inter"))
    import keras

    from cifar_core.training import progress
    from cifar_core import runs, training
    from cifar_core.config import TrainConfig
    from cifar_core.data import NUM_CLASSES

    val_batch = opts.get("val")
    config = TrainConfig(epochs=spec["epochs"], batch_size=spec["batch_size"], seed=spec["seed"], data=spec["data"],
                         train_subset=spec["train_subset"], test_subset=spec["test_subset"],
                         **({"validation_batch_size": val_batch} if val_batch else {}))
    t = time.perf_counter()
    data = training.load_training_data(config)
    load_s = time.perf_counter() - t
    n_train, n_test = len(data.x_train), len(data.x_test)
    keras.utils.set_random_seed(config.seed)
    timer = C.make_fit_timer()
    rss_before = C.rss_mb()
    fit_window = C.instrument_fit(timer)
    C.patch_build_model(bf16=bool(opts.get("bf16")), xla=bool(opts.get("xla")))
    if opts.get("autotune") == 0:
        if base == "plain":
            raise ValueError("autotune=0 applies to ours/ds (plain's pipeline is built inside Keras)")
        C.patch_tf_dataset_autotune_off()
    poll = {"polls": 0, "poll_s": 0.0}
    run_dirs: list[Path] = []
    t_start = time.perf_counter()
    effective_val = val_batch
    if base == "ours":
        job = training.new_job(config, dataset=data)
        run_dirs.append(job.run_dir)
        poller = threading.Thread(target=_poller, args=(job, poll), daemon=True)
        if opts.get("poll", 1):
            poller.start()
        job.run()  # in this thread, as a job process's main thread trains
        if poller.is_alive():
            poller.join()
        snap = job.snapshot()
        if snap.status != "completed":
            raise RuntimeError(f"ours ended {snap.status}: {snap.error}")
        effective_val = config.validation_batch_size
    else:
        import cifar_core.models as cmodel

        model = cmodel.build_model(config)
        if base == "plain":
            x = data.x_train.astype("float32")
            y = keras.utils.to_categorical(data.y_train, NUM_CLASSES)
            xt = data.x_test.astype("float32")
            yt = keras.utils.to_categorical(data.y_test, NUM_CLASSES)
            effective_val = val_batch or config.batch_size  # Keras' default: the training batch size
            model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, validation_data=(xt, yt),
                      validation_batch_size=val_batch, verbose=0)
        else:
            train_ds = training.make_tf_dataset(data.x_train, data.y_train, config.batch_size, shuffle_seed=config.seed)
            val_ds = training.make_tf_dataset(data.x_test, data.y_test, config.validation_batch_size)
            effective_val = config.validation_batch_size
            callbacks: list[Any] = []
            if opts.get("nan"):
                callbacks.append(keras.callbacks.TerminateOnNaN())
            if base == "ds-live":
                run_dir = runs.create_run(config)
                run_dirs.append(run_dir)
                job = training.TrainingJob(config, run_dir, dataset=data)  # not started: owns the state
                batches = int(tf.data.experimental.cardinality(train_ds))
                callbacks.append(progress.make_live_callback(job.state, job, run_dir, batches, config.batch_size))
                if opts.get("poll", 1):
                    job.state.update(status="running")
                    threading.Thread(target=_poller_until, args=(job, poll, fit_window), daemon=True).start()
            model.fit(train_ds, epochs=config.epochs, validation_data=val_ds, callbacks=callbacks, verbose=0,
                      shuffle=False)  # as the job calls it: tf.data shuffles
    t_end = time.perf_counter()
    fit_window["restore"]()
    for d in run_dirs:
        shutil.rmtree(d, ignore_errors=True)  # ~35 MB of .keras files per run
    fit_s = fit_window["t1"] - fit_window["t0"]
    epochs = timer.summary(fit_window["t0"], n_train)
    return {
        "variant": spec["variant"], "base": base, "options": opts, "val_batch": effective_val,
        "num_train": n_train, "num_test": n_test, "epochs": config.epochs, "batch_size": config.batch_size,
        "load_s": load_s, "fit_s": fit_s, "fit_cpu_s": fit_window["cpu1"] - fit_window["cpu0"],
        "total_s": t_end - t_start, "after_fit_s": t_end - fit_window["t1"], "before_fit_s": fit_window["t0"] - t_start,
        # fit setup: model.fit start -> first epoch (data adapter, tracing); fit tail: last epoch's
        # end -> fit returns (ours: the per-epoch checkpoint save of the last epoch)
        "fit_setup_s": epochs[0]["begin_s"] if epochs else None,
        "fit_tail_s": fit_s - epochs[-1]["end_s"] if epochs else None,
        "train_end_to_return_s": fit_window["t1"] - timer.train_end if timer.train_end else None,
        "train_end_to_return_cpu_s": fit_window["cpu1"] - timer.train_end_cpu if timer.train_end else None,
        "images_per_s": n_train * config.epochs / fit_s,
        "train_images_per_s": C.median(e["train_images_per_s"] for e in epochs),
        "val_s": C.median(e["val_s"] for e in epochs),
        "val_accuracy": epochs[-1].get("val_accuracy") if epochs else None,
        "epoch_detail": epochs, "polls": poll["polls"], "poll_s": poll["poll_s"],
        "rss_before_mb": rss_before, "peak_rss_mb": C.peak_rss_mb(),
        "intra_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def callback_micro(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-call cost of ours' LiveProgress.on_train_batch_end and of job.snapshot(), with the
    state as full as it gets in a 25-epoch run (2000 batch points, 25 epochs of history)."""
    C.configure_tensorflow()
    from cifar_core.training import progress
    from cifar_core import runs, training
    from cifar_core.config import TrainConfig

    config = TrainConfig(epochs=25)
    batches = -(-50_000 // config.batch_size)
    run_dir = runs.create_run(config)
    try:
        job = training.TrainingJob(config, run_dir)
        for i in range(training.MAX_BATCH_POINTS):
            job.state.add_batch(i / batches, 1.0, 0.5)
        job.state.add_epoch({k: 0.5 for k in runs.HISTORY_KEYS})
        for _ in range(24):
            job.state.add_epoch({k: 0.5 for k in runs.HISTORY_KEYS})
        job.state.update(status="running", epoch=25)
        cb = progress.make_live_callback(job.state, job, run_dir, batches, config.batch_size)
        cb.on_epoch_begin(24)
        logs = {"loss": 1.0, "accuracy": 0.5}
        n = spec.get("calls", 2000)
        t = time.perf_counter()
        for i in range(n):
            cb.on_train_batch_end(i % batches, logs)
        batch_end_us = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        for _ in range(n):
            job.snapshot()
        snapshot_us = (time.perf_counter() - t) / n * 1e6
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"batch_end_us": batch_end_us, "snapshot_us": snapshot_us, "calls": n}


def validation_micro(spec: dict[str, Any]) -> dict[str, Any]:
    """Validation alone: model.evaluate on the test subset at each batch size, alternating call by
    call, through ours' tf.data pipeline and through plain float32 arrays."""
    C.configure_tensorflow()
    import keras

    from cifar_core import training
    from cifar_core.config import TrainConfig
    from cifar_core.data import NUM_CLASSES
    from cifar_core.models import build_model

    config = TrainConfig(data=spec["data"], train_subset=spec["train_subset"], test_subset=spec["test_subset"],
                         seed=spec["seed"])
    data = training.load_training_data(config)
    model = build_model(config)
    xt = data.x_test.astype("float32")
    yt = keras.utils.to_categorical(data.y_test, NUM_CLASSES)
    calls = {}
    for size in spec["sizes"]:
        ds = training.make_tf_dataset(data.x_test, data.y_test, size)
        calls[f"ours tf.data, batch {size}"] = (lambda ds=ds: model.evaluate(ds, verbose=0))
        calls[f"plain arrays, batch {size}"] = (lambda size=size: model.evaluate(xt, yt, batch_size=size, verbose=0))
    for fn in calls.values():
        fn()  # traces each shape once
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(spec["calls"]):
        for name, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    n = len(data.x_test)
    return {"num_test": n, "rows": [{"what": k, "seconds": C.median(v), "images_per_s": n / C.median(v)}
                                    for k, v in times.items()]}


def _poller_until(job, stats, fit_window) -> None:
    while "t1" not in fit_window:
        t = time.perf_counter()
        job.snapshot()
        stats["polls"] += 1
        stats["poll_s"] += time.perf_counter() - t
        time.sleep(POLL_SECONDS)


# --- parent: alternate variants, summarise ------------------------------------------------

SUMMARY_COLUMNS = [
    ("variant", "variant"), ("runs", "runs"), ("val_batch", "val batch"),
    ("images_per_s", "img/s fit (incl. val)", 1), ("epoch_images_per_s", "img/s epoch (train+val)", 1),
    ("train_images_per_s", "img/s train only", 1), ("val_images_per_s", "val img/s", 0),
    ("fit_tail_s", "fit tail s"), ("after_fit_s", "after fit s"), ("cpu_ms_per_image", "CPU ms/img"),
    ("ratio", "ratio fit"), ("ratio_epoch", "ratio epoch"), ("ratio_train", "ratio train"), ("ratio_cpu", "ratio CPU"),
    ("peak_rss_mb", "peak RSS MB", 0), ("delta_rss_mb", "peak-start MB", 0), ("val_accuracy", "val acc", 3),
]
RUN_COLUMNS = [
    ("round", "round"), ("variant", "variant"), ("images_per_s", "img/s fit", 1),
    ("epoch_images_per_s", "img/s epoch", 1), ("train_images_per_s", "img/s train", 1), ("fit_s", "fit s"),
    ("val_s", "val s"), ("fit_tail_s", "fit tail s"), ("total_s", "total s"), ("after_fit_s", "after fit s"),
    ("cpu_ms_per_image", "CPU ms/img"), ("peak_rss_mb", "peak RSS MB", 0), ("val_accuracy", "val acc", 3),
]


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Rates computed from a run's raw timings (also for result files written by older versions)."""
    epochs = r["epoch_detail"]
    steady = epochs[1:] or epochs  # epoch 1 also traces the graphs; from 2 epochs on, leave it out
    r["train_images_per_s"] = C.median(e["train_images_per_s"] for e in steady)
    r["cpu_ms_per_image"] = 1000 * r["fit_cpu_s"] / (r["num_train"] * r["epochs"])
    r["epoch_images_per_s"] = C.median(r["num_train"] / (e["train_s"] + (e["val_s"] or 0)) for e in steady)
    r["val_images_per_s"] = C.median(r["num_test"] / e["val_s"] for e in steady if e["val_s"])
    return r


def summarise(results: list[dict[str, Any]], variants: list[str], baseline: str) -> list[dict[str, Any]]:
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in results:
        derive(r)
        by_round.setdefault(r["round"], {})[r["variant"]] = r
    rows = []
    for v in variants:
        mine = [r for r in results if r["variant"] == v]
        paired_runs = [(rd[v], rd[baseline]) for rd in by_round.values() if v in rd and baseline in rd]

        def paired(key: str, invert: bool = False) -> Optional[float]:
            ratios = [(b[key] / a[key] if invert else a[key] / b[key]) for a, b in paired_runs if a[key] and b[key]]
            return C.median(ratios)

        rows.append({
            "variant": v, "runs": len(mine), "val_batch": mine[0]["val_batch"] if mine else None,
            **{k: C.median(r.get(k) for r in mine) for k in
               ("images_per_s", "epoch_images_per_s", "train_images_per_s", "val_images_per_s", "fit_s",
                "fit_setup_s", "val_s", "fit_tail_s", "after_fit_s", "train_end_to_return_s", "cpu_ms_per_image",
                "peak_rss_mb", "val_accuracy")},
            "delta_rss_mb": C.median(r["peak_rss_mb"] - r["rss_before_mb"] for r in mine),
            "ratio": paired("images_per_s"), "ratio_epoch": paired("epoch_images_per_s"),
            "ratio_train": paired("train_images_per_s"), "ratio_cpu": paired("cpu_ms_per_image", invert=True),
        })
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--variants", nargs="+", default=["ours", "plain"], help="see above (default: ours plain)")
    parser.add_argument("--baseline", default="plain", help="variant the ratios divide by (default plain, "
                                                            "else the first variant)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; each round runs every variant once")
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--test-subset", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--callback-micro", action="store_true",
                        help="also time LiveProgress.on_train_batch_end and job.snapshot() per call (a few seconds)")
    parser.add_argument("--val-micro", type=int, nargs="*", metavar="BATCH",
                        help="also time validation alone (model.evaluate on the test subset) at these batch sizes "
                             "(default 64 256), alternating; ~1 min")
    parser.add_argument("--summarize", metavar="JSON", help="print the tables of an earlier results file; run nothing")
    args = parser.parse_args(argv)
    if args.summarize:
        return report(json.loads(Path(args.summarize).read_text()))
    for v in args.variants:
        try:
            parse_variant(v)
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    baseline = args.baseline if args.baseline in args.variants else args.variants[0]
    source = C.resolve_data(args.data, "train_throughput")
    art = C.use_artifacts_dir(args.artifacts)
    head = C.evidence("train_throughput", C.describe_data(source, args.train_subset, args.test_subset), {
        "setup": f"{args.epochs} epoch(s), batch {args.batch_size}, seed {args.seed}, {args.repeats} round(s) "
                 f"alternating {' '.join(args.variants)}; ratios vs {baseline}; artifacts {art}",
    })
    _warm_cache(source)
    spec = {"data": source, "train_subset": args.train_subset, "test_subset": args.test_subset,
            "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    results = []
    for rnd in range(1, args.repeats + 1):
        for v in args.variants:
            _, opts = parse_variant(v)
            env = {"TF_ENABLE_ONEDNN_OPTS": "0"} if opts.get("onednn") == 0 else {}
            r = C.run_worker(Path(__file__), {**spec, "variant": v}, env=env)
            r["round"] = rnd
            results.append(r)
            print(f"round {rnd} {v:<24} {r['images_per_s']:7.1f} img/s incl. val, "
                  f"{C.fmt(r['train_images_per_s'], 1):>7} train-only, fit {r['fit_s']:.1f} s, "
                  f"total {r['total_s']:.1f} s, peak {r['peak_rss_mb']:.0f} MB, val acc {C.fmt(r['val_accuracy'], 3)}",
                  flush=True)
    print()
    payload = {**head, "args": vars(args), "baseline": baseline, "runs": results}
    payload["summary"] = report(payload) if results else []
    if args.callback_micro:
        micro = C.run_worker(Path(__file__), {"stage": "micro"})
        rates = [r["train_images_per_s"] for r in payload["summary"] if r["train_images_per_s"]]
        step_ms = 1000 * args.batch_size / max(rates) if rates else None
        micro["step_ms"] = step_ms
        C.print_table([
            {"what": "LiveProgress.on_train_batch_end (state full)", "us": micro["batch_end_us"],
             "share": micro["batch_end_us"] / 1000 / step_ms if step_ms else None},
            {"what": "job.snapshot() (state full; the dashboard polls it once a second: share of 1 s)",
             "us": micro["snapshot_us"], "share": micro["snapshot_us"] / 1e6},
            *([{"what": f"one training step of {args.batch_size} images (fastest variant above)",
                "us": step_ms * 1000, "share": 1.0}] if step_ms else []),
        ], [("what", "per call"), ("us", "microseconds", 0), ("share", "share of a training step", 4)],
            title="Callback cost, timed call by call")
        payload["callback_micro"] = micro
    if args.val_micro is not None:
        sizes = args.val_micro or [64, 256]
        vm = C.run_worker(Path(__file__), {**spec, "stage": "valmicro", "sizes": sizes, "calls": 3})
        C.print_table(vm["rows"], [("what", f"validation of {vm['num_test']:,} images"), ("seconds", "median s", 3),
                                   ("images_per_s", "img/s", 0)], title="Validation alone (3 alternating calls each)")
        payload["validation_micro"] = vm
    C.save_results("train_throughput", payload, rows=results, stem=args.out)


def report(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Print the runs and summary tables of a results payload; returns the summary rows."""
    results, variants = payload["runs"], payload["args"]["variants"]
    baseline = payload.get("baseline") or (payload["args"]["baseline"] if payload["args"]["baseline"] in variants
                                           else variants[0])
    rows = summarise(results, variants, baseline)
    C.print_table(results, RUN_COLUMNS, title="Runs (each a fresh process)")
    C.print_table(rows, SUMMARY_COLUMNS, title=f"Summary (medians; ratios vs {baseline})")
    print("img/s fit = training images x epochs / model.fit wall time (validation included; for ours also the "
          "per-epoch checkpoint). img/s epoch = training images / (epoch begin -> validation end), median over "
          "epochs (over epochs 2.. when there are 2 or more, since epoch 1 also traces); train only = up to "
          "validation begin. fit tail = last epoch end -> fit "
          "return (ours: last checkpoint save; any teardown stall of fit shows here). after fit = ours: final save + "
          "test-set evaluation. CPU ms/img = process CPU seconds in the fit window per training image (less "
          "sensitive to other users of the machine than wall time, blind to parallelism). Ratios: median of "
          "same-round ratios variant/baseline, >1 = variant faster (CPU: baseline CPU/variant CPU).")
    return rows


def _warm_cache(source: str) -> None:
    """Decode the image folder into the .npy cache once, outside every measured run."""
    if source in ("synthetic", "keras"):
        return
    t = time.perf_counter()
    from cifar_core.data import get_dataset

    get_dataset(source)
    took = time.perf_counter() - t
    if took > 5:
        print(f"(decoded {source} into the .npy cache in {took:.0f} s; later runs read the cache)\n", flush=True)


if __name__ == "__main__":
    w = C.worker_args()
    if w:
        stage = {"micro": callback_micro, "valmicro": validation_micro}.get(w[0].get("stage"), worker)
        C.write_worker_result(w[1], stage(w[0]))
    else:
        main()
