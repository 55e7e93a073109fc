"""Fit-level plumbing for the training benchmarks, run inside worker processes: TensorFlow's
thread settings, a per-epoch fit timer, and the what-if patches (bf16, XLA, tf.data autotune)
that a variant applies to cifar_core before it trains. Split from _common.py, which keeps the
evidence header, data, workers, statistics and tables."""
from __future__ import annotations

import os
import time
from typing import Any, Optional

def configure_tensorflow(intra: Optional[int] = None, inter: Optional[int] = None) -> Any:
    """Import TensorFlow in a worker, applying thread settings before its runtime starts."""
    import tensorflow as tf

    if intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra))
    if inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter))
    return tf


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    t = os.times()
    return t.user + t.system


def instrument_fit(timer) -> dict[str, Any]:
    """Wrap keras.Model.fit so every call, the job's in its own thread too, gets `timer` as its
    first callback and records its wall/CPU window in the returned dict ('restore' undoes it).
    Measurement only: the timer has no per-batch hook."""
    import keras

    original = keras.Model.fit
    window: dict[str, Any] = {}

    def timed_fit(model, *args, **kwargs):
        kwargs["callbacks"] = [timer, *(kwargs.get("callbacks") or [])]
        window["t0"], window["cpu0"] = time.perf_counter(), cpu_seconds()
        try:
            return original(model, *args, **kwargs)
        finally:
            window["t1"], window["cpu1"] = time.perf_counter(), cpu_seconds()

    def restore() -> None:
        keras.Model.fit = original

    keras.Model.fit = timed_fit
    window["restore"] = restore
    return window


def patch_build_model(bf16: bool = False, xla: bool = False) -> None:
    """What-ifs inside cifar_core.models.build_model: mixed_bfloat16 and/or jit_compile. Keras
    keeps the dtype policy per thread and the job builds its model in its own thread, so the
    policy is set inside build_model (the job imports it when it starts)."""
    if not (bf16 or xla):
        return
    import keras

    import cifar_core.models as cmodel

    original = cmodel.build_model

    def build_model(*args, **kwargs):
        if bf16:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = original(*args, **kwargs)
        if xla:
            model.jit_compile = True
        return model

    cmodel.build_model = build_model


def patch_tf_dataset_autotune_off() -> None:
    """What-if inside cifar_core.training.make_tf_dataset: the same pipeline with tf.data's
    autotuning (and its background model thread) switched off."""
    import tensorflow as tf

    from cifar_core import training

    original = training.make_tf_dataset

    def make_tf_dataset(*args, **kwargs):
        options = tf.data.Options()
        options.autotune.enabled = False
        return original(*args, **kwargs).with_options(options)

    training.make_tf_dataset = make_tf_dataset


def make_fit_timer():
    """A Keras callback that timestamps epochs and validation, with no per-batch hook (so it
    neither slows the loop nor turns off Keras' asynchronous batch callbacks)."""
    import keras

    class FitTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict[str, Any]] = []
            self._cur: dict[str, Any] = {}
            self.train_end: Optional[float] = None

        def on_epoch_begin(self, epoch, logs=None):
            self._cur = {"epoch": epoch + 1, "begin": time.perf_counter(), "begin_cpu": cpu_seconds()}

        def on_test_begin(self, logs=None):
            if "test_begin" not in self._cur:
                self._cur["test_begin"], self._cur["test_begin_cpu"] = time.perf_counter(), cpu_seconds()

        def on_test_end(self, logs=None):
            self._cur["test_end"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self._cur["end"], self._cur["end_cpu"] = time.perf_counter(), cpu_seconds()
            self._cur["logs"] = {k: float(v) for k, v in (logs or {}).items()}
            self.epochs.append(self._cur)

        def on_train_end(self, logs=None):
            self.train_end = time.perf_counter()
            self.train_end_cpu = cpu_seconds()

        def summary(self, t0: float, num_train: int) -> list[dict[str, Any]]:
            """Per epoch: seconds since t0, train-only and validation seconds, train images/s."""
            rows = []
            for e in self.epochs:
                train_end = e.get("test_begin", e["end"])
                train_s = train_end - e["begin"]
                train_cpu_s = e.get("test_begin_cpu", e.get("end_cpu", e["begin_cpu"])) - e["begin_cpu"]
                rows.append({
                    "epoch": e["epoch"],
                    "begin_s": e["begin"] - t0,
                    "end_s": e["end"] - t0,
                    "train_s": train_s,
                    "val_s": (e["test_end"] - e["test_begin"]) if "test_end" in e else None,
                    "train_images_per_s": num_train / train_s if train_s > 0 else None,
                    # CPU seconds per wall second while training: ~2 on a free 2-core machine;
                    # low values mean waiting (other users, or stalls)
                    "train_cpu_per_wall": train_cpu_s / train_s if train_s > 0 else None,
                    **e.get("logs", {}),
                })
            return rows

    return FitTimer()
