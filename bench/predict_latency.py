"""Prediction latency: one uploaded image end to end (bytes -> cifar_core.insight.predict.prepare_image
-> predict_proba) against the raw Keras call styles, and the 10,000-image test-set predictions
(first computation vs loading the cache). Targets: one image p50 <= 20 ms; cached test-set
predictions load <= 1 s.

The run is made through cifar_core (1 epoch on 500 real images, no test subset, so its test
set is the full 10k); latency does not depend on the weights. Each stage runs in a fresh process.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SINGLE_TARGET_MS = 20.0
CACHED_TARGET_S = 1.0
# Uploads: a CIFAR-sized PNG, a typical web picture, and a 12-megapixel phone photo.
UPLOADS = (("png-32x32", "PNG", (32, 32)), ("jpeg-1024x768", "JPEG", (1024, 768)),
           ("jpeg-4032x3024", "JPEG", (4032, 3024)))


# --- workers ------------------------------------------------------------------------------

def make_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train 1 epoch on 500 images through the trainer; the job caches the full test set's predictions."""
    C.configure_tensorflow()
    from cifar_core import training
    from cifar_core.config import TrainConfig

    config = TrainConfig(epochs=1, train_subset=500, test_subset=None, data=spec["data"], seed=spec["seed"])
    t = time.perf_counter()
    job = training.new_job(config).run()
    snap = job.snapshot()
    if snap.status != "completed":
        raise RuntimeError(f"making the run failed: {snap.status} {snap.error}")
    return {"run_id": job.run_id, "job_s": time.perf_counter() - t, "num_test": (snap.metrics or {}).get("num_test_images")}


def test_set(spec: dict[str, Any]) -> dict[str, Any]:
    """Cold computation of the test-set predictions (cache deleted) in a fresh process, then the cache."""
    t = time.perf_counter()
    C.configure_tensorflow()
    import keras  # noqa: F401 - imported here so its cost is reported apart

    import_s = time.perf_counter() - t
    from cifar_core import data as cdata
    from cifar_core.insight import evaluation
    from cifar_core import runs

    run_id = spec["run_id"]
    cache = runs.run_path(run_id) / evaluation.PREDICTIONS_FILE
    cache.unlink(missing_ok=True)
    t = time.perf_counter()
    preds = evaluation.test_predictions(run_id)
    first_s = time.perf_counter() - t
    # The same steps one by one (data now in memory: so also timed from the .npy cache).
    cdata._get_dataset.cache_clear()
    t = time.perf_counter()
    model = runs.load_model(run_id)
    load_model_s = time.perf_counter() - t
    t = time.perf_counter()
    test_data = evaluation.run_test_data(runs.load_run(run_id))
    load_data_s = time.perf_counter() - t
    predict_s = _best_of(lambda: evaluation.predict_test_set(model, test_data.x_test), 2)
    x = test_data.x_test

    def chunked():  # what-if: the compiled per-batch function instead of model.predict's tf.data loop
        return [model.predict_on_batch(x[i:i + 256].astype("float32")) for i in range(0, len(x), 256)]

    chunked_s = _best_of(chunked, 2)
    load_cached = [_time(lambda: evaluation.load_cached_predictions(run_id)) for _ in range(spec["cached_repeats"])]
    via_entry = [_time(lambda: evaluation.test_predictions(run_id)) for _ in range(spec["cached_repeats"])]
    return {
        "num_images": len(preds.labels), "import_tf_s": import_s, "first_s": first_s,
        "load_model_s": load_model_s, "load_test_data_npy_s": load_data_s, "predict_10k_s": predict_s,
        "predict_on_batch_10k_s": chunked_s,
        "cached_load_first_s": load_cached[0], "cached_load_median_s": C.median(load_cached),
        "cached_load_p95_s": C.percentile(load_cached, 95),
        "cached_entry_median_s": C.median(via_entry), "cache_file_mb": cache.stat().st_size / 2**20,
    }


def single_image(spec: dict[str, Any]) -> dict[str, Any]:
    """One image, every call style, interleaved call by call so machine noise hits all alike."""
    tf = C.configure_tensorflow()
    import numpy as np
    from PIL import Image

    from cifar_core.insight import predict
    from cifar_core import runs
    from cifar_core.data import get_dataset

    t = time.perf_counter()
    model = runs.load_model(spec["run_id"])
    load_model_s = time.perf_counter() - t
    small = np.asarray(get_dataset(spec["data"]).x_test[0])
    uploads = {}
    for name, fmt, size in UPLOADS:
        buf = io.BytesIO()
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        uploads[name] = buf.getvalue()
    x_uint8 = predict.prepare_image(uploads["png-32x32"])[1]
    x1 = x_uint8[None].astype(np.float32)
    compiled = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                           input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.float32)])
    methods: dict[str, Callable[[], Any]] = {}
    for name, raw in uploads.items():
        methods[f"end to end, {name} (prepare_image + predict_proba)"] = \
            (lambda raw=raw: predict.predict_proba(model, predict.prepare_image(raw)[1]))
    for name, raw in uploads.items():
        methods[f"prepare_image only, {name}"] = (lambda raw=raw: predict.prepare_image(raw))
    methods[f"prepare_image with JPEG draft (what-if), jpeg-4032x3024"] = \
        (lambda raw=uploads["jpeg-4032x3024"]: _prepare_with_draft(raw, predict))
    methods.update({
        "predict_proba(model, x) (model.predict inside)": lambda: predict.predict_proba(model, x_uint8),
        "model.predict(x1, verbose=0)": lambda: model.predict(x1, verbose=0),
        "model.predict_on_batch(x1)": lambda: model.predict_on_batch(x1),
        "model(x1, training=False)": lambda: model(x1, training=False).numpy(),
        "tf.function(model(x, training=False))": lambda: compiled(x1).numpy(),
    })
    # The wrappers must agree before their speed matters.
    ref = predict.predict_proba(model, x_uint8)
    for name in ("model(x1, training=False)", "tf.function(model(x, training=False))", "model.predict_on_batch(x1)"):
        np.testing.assert_allclose(np.asarray(methods[name]()), ref, rtol=1e-4, atol=1e-6)
    for _ in range(spec["warmup"]):
        for fn in methods.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(spec["calls"]):
        for name, fn in methods.items():
            times[name].append(_time(fn) * 1000)
    rows = [{"method": name, "calls": len(ms), "p50_ms": C.percentile(ms, 50), "p95_ms": C.percentile(ms, 95),
             "min_ms": min(ms)} for name, ms in times.items()]
    return {"rows": rows, "load_model_s": load_model_s,
            "upload_bytes": {k: len(v) for k, v in uploads.items()}}


def _prepare_with_draft(raw: bytes, predict) -> Any:
    """prepare_image's result, but letting libjpeg decode at 1/2..1/8 scale first (Image.draft)."""
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        im.draft("RGB", (64, 64))  # keeps at least 64x64: still >= 2x the model's 32x32
        im.load()
        img = im.convert("RGB")
    return img, predict.to_model_input(img)


def _time(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _best_of(fn: Callable[[], Any], n: int) -> float:
    return min(_time(fn) for _ in range(n))


WORKERS = {"make_run": make_run, "test_set": test_set, "single_image": single_image}


# --- parent -------------------------------------------------------------------------------

def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_common_args(parser)
    parser.add_argument("--calls", type=int, default=100, help="timed calls per method after warm-up")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per method first")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes for the cold test-set timing")
    parser.add_argument("--cached-repeats", type=int, default=10)
    parser.add_argument("--run-id", help="reuse an existing run under --artifacts instead of training one")
    parser.add_argument("--keep-run", action="store_true", help="leave the run folder behind")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    source = C.resolve_data(args.data, "predict_latency")
    art = C.use_artifacts_dir(args.artifacts)
    head = C.evidence("predict_latency", C.describe_data(source, 500, None), {
        "setup": f"{args.warmup} warm-up + {args.calls} timed calls per method, interleaved; cold test-set "
                 f"predictions in {args.repeats} fresh process(es); artifacts {art}",
    })
    from cifar_core.data import get_dataset

    get_dataset(source)  # .npy cache outside every measurement
    spec = {"data": source, "seed": args.seed, "calls": args.calls, "warmup": args.warmup,
            "cached_repeats": args.cached_repeats}
    made = None
    if args.run_id:
        spec["run_id"] = args.run_id
    else:
        made = C.run_worker(Path(__file__), {**spec, "stage": "make_run"})
        spec["run_id"] = made["run_id"]
        print(f"run {made['run_id']}: 1 epoch on 500 images + evaluation of {made['num_test']} test images "
              f"in {made['job_s']:.1f} s\n", flush=True)
    try:
        single = C.run_worker(Path(__file__), {**spec, "stage": "single_image"})
        rows = single["rows"]
        for r in rows:
            r["meets_20ms"] = r["p50_ms"] <= SINGLE_TARGET_MS if r["method"].startswith("end to end") else None
        C.print_table(rows, [("method", "one image"), ("calls", "calls"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
                             ("min_ms", "min ms"), ("meets_20ms", f"p50 <= {SINGLE_TARGET_MS:g} ms")],
                      title="One image (after warm-up)")
        print(f"upload sizes: {single['upload_bytes']} bytes; loading the model took {single['load_model_s']:.2f} s\n")
        cold = [C.run_worker(Path(__file__), {**spec, "stage": "test_set"}) for _ in range(args.repeats)]
        trow = [{"step": label, **{f"run{i + 1}": c[key] for i, c in enumerate(cold)},
                 "median": C.median(c[key] for c in cold)} for key, label in (
            ("first_s", "test_predictions(run_id), no cache (fresh process, TF imported)"),
            ("load_model_s", "  of which: runs.load_model"),
            ("load_test_data_npy_s", "  of which: test data from the .npy cache"),
            ("predict_10k_s", "  of which: model.predict on 10k (best of 2)"),
            ("predict_on_batch_10k_s", "  what-if: predict_on_batch in chunks of 256 (best of 2)"),
            ("cached_load_first_s", "load_cached_predictions, first call"),
            ("cached_load_median_s", "load_cached_predictions, median"),
            ("cached_entry_median_s", "test_predictions(run_id) with cache, median"),
            ("import_tf_s", "(import tensorflow + keras, not included above)"))]
        C.print_table(trow, [("step", f"{cold[0]['num_images']:,} test images"),
                             *[(f"run{i + 1}", f"process {i + 1} s") for i in range(len(cold))], ("median", "median s")],
                      title="Test-set predictions", digits=3)
        cached = C.median(c["cached_load_median_s"] for c in cold)
        print(f"cached load {cached * 1000:.1f} ms vs target {CACHED_TARGET_S:g} s: "
              f"{'met' if cached <= CACHED_TARGET_S else 'MISSED'}; cache file {cold[0]['cache_file_mb']:.2f} MB")
        C.save_results("predict_latency", {**head, "args": vars(args), "made_run": made, "single": single,
                                           "test_set": cold}, rows=rows, stem=args.out)
    finally:
        if made and not args.keep_run:
            shutil.rmtree(Path(art) / "runs" / made["run_id"], ignore_errors=True)


if __name__ == "__main__":
    w = C.worker_args()
    if w:
        C.write_worker_result(w[1], WORKERS[w[0]["stage"]](w[0]))
    else:
        main()
