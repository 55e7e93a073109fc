"""Deployment exports of a run's model (the .keras file, a TensorFlow SavedModel, TensorFlow Lite
float32 and dynamic-range flatbuffers) in the run's export/ folder, redone when the model changes.

May import: config, files, paths, quiet, trainer_lock, data, recipes, models, runs, insight.
"""
from __future__ import annotations

import dataclasses
import io
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cifar_core import runs
from cifar_core.files import replace_atomically
from cifar_core.data import INPUT_SHAPE, DataError
from cifar_core.runs import RunError, model_stamp, read_json, write_json

FORMATS = ("keras", "savedmodel", "tflite")
EXPORT_DIR = "export"  # inside the run folder
FILES = {"keras": ("model.keras",), "savedmodel": ("saved_model",),
         "tflite": ("model.tflite", "model_dynamic_range.tflite")}
AGREEMENT_IMAGES = 500  # test images on which each TFLite file's top-1 class is compared with Keras'


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What an export wrote, from which model file, and how well TFLite agrees with Keras."""

    run_id: str
    fmt: str
    paths: tuple[Path, ...]  # under the run's export/; the SavedModel is a folder
    sizes_bytes: tuple[int, ...]  # one per path; a folder's is the sum of its files
    seconds: float  # wall time of the export, the agreement check included
    model_stamp: str  # runs.model_stamp of the model file it was made from
    agreement: dict[str, float]  # TFLite file name -> share of test images with Keras' top-1 class
    agreement_images: int = 0
    note: str = ""  # why the agreement was not measured, when it wasn't
    reused: bool = False  # an earlier export of the same model file, returned as it was


def export_run(run_id: str, fmt: str = "keras") -> ExportResult:
    """Export the run's model (final, else last checkpoint) as `fmt` into <run>/export/.

    Each file is written under a temporary name and renamed into place, so a failed export never
    leaves half a file under a final name. An export of the same model file is returned as it is
    (`reused`); one made before the model changed (a resumed run) is redone.

    Raises:
      ValueError: an unknown format. RunError: no such run, a broken run, no model yet, a model
        TensorFlow Lite cannot convert with its builtin ops (the message names the ops), a full disk.
    """
    if (found := current_export(run_id, fmt)) is not None:
        return found
    started = time.perf_counter()
    run = runs.load_run(run_id)
    if run.broken:
        raise RunError(f"run {run_id} is broken: {run.broken}")
    folder = run.path / EXPORT_DIR
    agreement, images, note = {}, 0, ""
    try:
        folder.mkdir(exist_ok=True)
        (folder / f"{fmt}.json").unlink(missing_ok=True)  # from here the files are not that record's
        if fmt == "keras":
            stamp = _copy_model(run, folder / FILES[fmt][0])
        else:
            model, stamp = runs.load_model_stamped(run_id)
            if fmt == "savedmodel":
                replace_atomically(folder / FILES[fmt][0], lambda tmp: write_saved_model(model, tmp))
            else:
                with tempfile.TemporaryDirectory(dir=folder, prefix=".saved_model-for-tflite-") as tmp:
                    write_saved_model(model, Path(tmp) / "saved_model")
                    flats = {name: to_tflite(Path(tmp) / "saved_model", quantise=i == 1)
                             for i, name in enumerate(FILES[fmt])}
                for name, flat in flats.items():
                    replace_atomically(folder / name, lambda tmp, flat=flat: tmp.write_bytes(flat))
                agreement, images, note = _agreement(run, model, flats)
        paths = tuple(folder / name for name in FILES[fmt])
        result = ExportResult(run_id, fmt, paths, tuple(_size(p) for p in paths),
                              round(time.perf_counter() - started, 3), stamp, agreement, images, note)
        write_json(folder / f"{fmt}.json", {
            "model_stamp": stamp, "sizes_bytes": list(result.sizes_bytes), "seconds": result.seconds,
            "agreement": agreement, "agreement_images": images, "note": note, "exported_at": time.time()})
    except OSError as exc:
        raise RunError(f"cannot write the {fmt} export of run {run_id} in {folder}: {exc}") from exc
    return result


def current_export(run_id: str, fmt: str) -> Optional[ExportResult]:
    """The earlier `fmt` export if it was made from the run's current model file, else None.
    Never imports TensorFlow: a page offers existing exports' downloads on every rerun."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run = runs.load_run(run_id)
    folder = run.path / EXPORT_DIR
    paths = tuple(folder / name for name in FILES[fmt])
    try:
        record = read_json(folder / f"{fmt}.json")
        stamp = model_stamp(run.model_path) if run.model_path is not None else None
        if stamp is None or record["model_stamp"] != stamp or not all(p.exists() for p in paths):
            return None
        return ExportResult(run_id, fmt, paths, tuple(int(s) for s in record["sizes_bytes"]),
                            float(record["seconds"]), stamp, dict(record["agreement"]),
                            int(record["agreement_images"]), str(record["note"]), reused=True)
    except (RunError, FileNotFoundError, KeyError, TypeError, ValueError):
        return None  # none yet, stale, or a record from another version: export again


def copy_export(result: ExportResult, out_dir: Path) -> list[Path]:
    """Copy an export's files into `out_dir` as <run id>-<name>, replacing earlier copies."""
    copies = [Path(out_dir) / f"{result.run_id}-{path.name}" for path in result.paths]
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for path, dest in zip(result.paths, copies):
            if path.is_dir():
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(path, dest)
            else:
                shutil.copyfile(path, dest)
    except OSError as exc:
        raise RunError(f"cannot copy the export to {out_dir}: {exc}") from exc
    return copies


def folder_zip(path: Path) -> bytes:
    """A .zip of a folder (the SavedModel) with the folder's name at its root, for a download."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(Path(path).rglob("*")):
            if f.is_file():
                zf.write(f, Path(path.name) / f.relative_to(path))
    return buf.getvalue()


def write_saved_model(model: Any, path: Path) -> None:
    """A SavedModel whose serving signature takes raw pixels (N, 32, 32, 3) float32 as `pixels`.

    Not `model.export()`: that serves `model.__call__` without `training`, and Keras 3.15 then
    runs RandomFlip/RandomTranslation in their training default, so the served model would
    augment every request (and TFLite would need TF Select ops for the random ops)."""
    import keras
    import tensorflow as tf

    def serve(pixels):
        return model(pixels, training=False)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name="pixels")])
    archive.write_out(str(path), verbose=False)


def tflite_proba(flat: bytes, images: np.ndarray) -> np.ndarray:
    """Class probabilities from a TFLite flatbuffer for raw-pixel images, as a deployed app gets them."""
    import tensorflow as tf

    with warnings.catch_warnings():  # its deprecation notice: LiteRT's own package is ai-edge-litert
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=flat)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], [len(images), *INPUT_SHAPE])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.asarray(images, dtype=np.float32))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def to_tflite(saved_model: Path, quantise: bool) -> bytes:
    """A TFLite flatbuffer of builtin ops only (no TF Select runtime to ship); `quantise`: int8
    weights, float activations (dynamic range: needs no representative dataset)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if quantise:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    try:
        return converter.convert()
    except Exception as exc:  # ConverterError, and MLIR's own errors
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("TF Select ops:")), lines[-1] if lines else repr(exc))
        raise RunError(f"TensorFlow Lite cannot convert this model with builtin ops only: {why[:300]}") from exc


def _agreement(run: runs.Run, model: Any, flats: dict[str, bytes]) -> tuple[dict[str, float], int, str]:
    """Share of the run's first AGREEMENT_IMAGES test images where each flatbuffer's top-1 class
    is Keras'; without the test images (a moved data folder) the export stands, unmeasured."""
    from cifar_core.insight.evaluation import run_test_data
    from cifar_core.insight.predict import predict_proba

    try:
        x = run_test_data(run).x_test[:AGREEMENT_IMAGES]
    except DataError as exc:
        return {}, 0, f"agreement not measured: the run's test images cannot be read ({exc})"
    keras_top1 = predict_proba(model, x).argmax(axis=1)
    return ({name: float((tflite_proba(flat, x).argmax(axis=1) == keras_top1).mean()) for name, flat in flats.items()},
            len(x), "")


def _copy_model(run: runs.Run, dest: Path) -> str:
    """Copy the run's model file and return its stamp; refuses a copy the trainer replaced mid-way."""
    src = run.model_path
    if src is None:
        raise RunError(f"run {run.run_id} has no saved model yet")
    try:
        stamp = model_stamp(src)
        replace_atomically(dest, lambda tmp: shutil.copyfile(src, tmp))
        unchanged = model_stamp(src) == stamp
    except FileNotFoundError:
        unchanged = False  # retired by a resume between finding and copying it
    if not unchanged:
        raise RunError(f"the model of run {run.run_id} changed while it was exported; try again")
    return stamp


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
