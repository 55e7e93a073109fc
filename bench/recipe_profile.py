"""Where a training step of the airbench-style network spends its time on this CPU, layer by layer,
and what the input pipeline costs beside it.

    python bench/recipe_profile.py --widths 32,128,128 --batch-size 512

For each layer of the network (as built by cifar_core.models), times forward + backward of that
layer alone on a tensor of its real input shape (median of --repeats), and prints the share of
the sum, the conv layers' GFLOP/s, then the same for the alternatives we chose between (Keras'
BatchNormalization vs our fused one; GELU vs ReLU). Last, the tf.data pipeline alone (shuffle,
batch, cast; the augmentation is inside the model) vs a whole training step, in images/s.
"""
from __future__ import annotations

import argparse
import statistics
import time

import _common as C


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,128,128")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="results file stem under bench/results/")
    args = ap.parse_args()
    widths = tuple(int(v) for v in args.widths.split(","))
    head = C.evidence("recipe_profile: one training step, layer by layer", "random tensors of each layer's shape",
                      {"widths": widths, "batch": args.batch_size})
    C.configure_tensorflow()
    import keras
    import numpy as np
    import tensorflow as tf

    from cifar_core.models import build_model
    from cifar_core.models.layers import FusedBatchNorm
    from cifar_core.recipes.presets import preset_config
    from cifar_core.training import make_tf_dataset

    bs = args.batch_size
    config = preset_config("best", widths=widths, batch_size=bs, augment="flip_translate")

    def time_layer(layer, shape) -> float:
        x = tf.random.normal((bs, *shape)) * 50 + 100
        variables = layer.trainable_variables

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
            return tape.gradient(loss, [x, *variables])

        step(x)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            [g.numpy() for g in step(x) if g is not None]
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    model = build_model(config, x_train=np.random.randint(0, 255, (512, 32, 32, 3), dtype=np.uint8))
    rows = []
    for layer in model.layers[1:]:
        shape = tuple(layer.input.shape[1:])
        seconds = time_layer(layer, shape)
        flops = 0
        if hasattr(layer, "kernel") and len(layer.kernel.shape) == 4:
            kh, kw, cin, cout = layer.kernel.shape
            flops = 3 * 2 * kh * kw * cin * cout * int(np.prod(layer.output.shape[1:3]))
        rows.append({"layer": layer.name, "kind": type(layer).__name__, "input": "x".join(map(str, shape)),
                     "ms": 1000 * seconds, "gflops": flops * bs / seconds / 1e9 if flops else None})
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = r["ms"] / total
    C.print_table(rows, [("layer", "layer"), ("kind", "kind"), ("input", "input"), ("ms", "ms fwd+bwd", 1),
                         ("share", "share", 3), ("gflops", "conv GFLOP/s", 1)],
                  title=f"One step, layer by layer (batch {bs}; sum {total:.0f} ms = {bs / total * 1000:.0f} img/s)")
    by_kind: dict[str, float] = {}
    for r in rows:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + r["ms"]
    kinds = [{"kind": k, "ms": v, "share": v / total} for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])]
    C.print_table(kinds, [("kind", "kind"), ("ms", "ms", 1), ("share", "share", 3)], title="By kind of layer")

    alternatives = []
    for shape in ((15, 15, widths[0]), (7, 7, widths[1])):
        for name, layer in (("keras BatchNormalization", keras.layers.BatchNormalization(center=True, scale=False)),
                            ("FusedBatchNorm (ours)", FusedBatchNorm(scale=False)),
                            ("GELU", keras.layers.Activation("gelu")), ("ReLU", keras.layers.Activation("relu"))):
            alternatives.append({"op": name, "input": "x".join(map(str, shape)), "ms": 1000 * time_layer(layer, shape)})
    C.print_table(alternatives, [("op", "op"), ("input", "input"), ("ms", "ms fwd+bwd", 1)],
                  title="Alternatives we chose between")

    x = np.random.randint(0, 255, (bs * 20, 32, 32, 3), dtype=np.uint8)
    y = np.random.randint(0, 10, bs * 20)
    ds = make_tf_dataset(x, y, bs, shuffle_seed=0)
    t0 = time.perf_counter()
    for _ in ds:
        pass
    pipeline = len(x) / (time.perf_counter() - t0)
    model.fit(ds.take(2), verbose=0)
    t0 = time.perf_counter()
    model.fit(ds, verbose=0)
    step = len(x) / (time.perf_counter() - t0)
    pipe = [{"part": "tf.data pipeline alone", "images_per_second": pipeline},
            {"part": "whole training step (fit)", "images_per_second": step}]
    C.print_table(pipe, [("part", "part"), ("images_per_second", "img/s", 0)], title="Input pipeline vs step")
    C.save_results("recipe_profile", {**head, "layers": rows, "by_kind": kinds, "alternatives": alternatives,
                                      "pipeline": pipe}, rows, stem=args.out)


if __name__ == "__main__":
    main()
