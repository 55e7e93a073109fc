"""Keras' torch backend against its TensorFlow backend for the airbench networks, on this CPU.

Issue 27 asks whether, on a CPU without bf16 units (the AVX2 EPYC), Keras on PyTorch trains
these networks at least 1.2x as fast as Keras on TensorFlow; if so the probe could pick the
backend per machine (each job is a process of its own). PyTorch never enters the requirements:
the torch side runs from a throwaway virtual environment with the same Keras version.

Each side is a fresh process with `KERAS_BACKEND` set, building the airbench network from plain
Keras layers (Conv2D without bias, MaxPooling2D, BatchNormalization, GELU, as
`cifar_core/models/airbench.py` lays it out; the lab's own fused BatchNorm and whitening layers
call TensorFlow directly, so a backend-neutral copy is timed), compiled with Nesterov SGD and
label smoothing, trained `--steps` steps of random data at batch 512 after 3 warm-up steps.
Rounds alternate the backends; the median of the rounds is reported.

    python -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0 keras==3.15.1 numpy pillow
    python bench/keras_backend.py --torch-python /tmp/peer/bin/python --widths 16,64,64 32,128,128 64,256,256
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

WORKER = "--worker"


def train_steps(widths: tuple[int, int, int], steps: int, batch: int, precision: str) -> dict:
    """One side: images per second of `steps` training steps (this process's backend)."""
    import keras
    import numpy as np
    from keras import layers

    if precision == "bfloat16":
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    pixels = keras.Input(shape=(32, 32, 3))
    x = layers.Conv2D(24, 2, padding="valid")(pixels)
    x = layers.Activation("gelu")(x)
    for width in widths:
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.BatchNormalization(momentum=0.6, scale=False)(x)
        x = layers.Activation("gelu")(x)
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.6, scale=False)(x)
        x = layers.Activation("gelu")(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(10, use_bias=False)(x)
    outputs = layers.Activation("softmax", dtype="float32")(x)
    model = keras.Model(pixels, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.85, nesterov=True),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.2))
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch, 32, 32, 3)).astype("float32")
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    for _ in range(3):  # tracing / compilation
        model.train_on_batch(images, labels)
    began = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    seconds = time.perf_counter() - began
    return {"backend": keras.backend.backend(), "keras": keras.__version__, "widths": list(widths),
            "precision": precision, "images_per_second": round(steps * batch / seconds, 1)}


def side(python: str, backend: str, widths: str, steps: int, batch: int, precision: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([python, __file__, WORKER, backend, widths, str(steps), str(batch), precision],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{backend} side failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        _, _, backend, widths, steps, batch, precision = sys.argv
        print(json.dumps(train_steps(tuple(int(w) for w in widths.split(",")), int(steps), int(batch), precision)))
        return
    import _common as C

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-python", required=True, help="a venv's python with torch and the same keras")
    ap.add_argument("--widths", nargs="+", default=["16,64,64", "32,128,128", "64,256,256"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    head = C.evidence("Keras on torch against Keras on TensorFlow, airbench networks, random data",
                      f"random images, batch {args.batch_size}, {args.steps} steps after 3 warm-up, {args.precision}")
    rows = []
    for widths in args.widths:
        seen: dict[str, list[float]] = {"tensorflow": [], "torch": []}
        for _ in range(args.rounds):
            for backend, python in (("tensorflow", sys.executable), ("torch", args.torch_python)):
                result = side(python, backend, widths, args.steps, args.batch_size, args.precision)
                seen[backend].append(result["images_per_second"])
                print(json.dumps(result), flush=True)
        tf_ips, torch_ips = statistics.median(seen["tensorflow"]), statistics.median(seen["torch"])
        rows.append({"widths": widths, "precision": args.precision, "tensorflow_ips": tf_ips, "torch_ips": torch_ips,
                     "torch_over_tensorflow": round(torch_ips / tf_ips, 2)})
    C.print_table(rows, [("widths", "widths"), ("precision", "precision"), ("tensorflow_ips", "TF img/s", 0),
                         ("torch_ips", "torch img/s", 0), ("torch_over_tensorflow", "torch / TF", 2)],
                  title="Keras backends")
    C.save_results("keras_backend", {**head, "rows": rows}, rows, stem=args.out)


if __name__ == "__main__":
    main()
