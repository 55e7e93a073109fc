"""Deployment exports of real (tiny) runs: each format's files load and answer like Keras, stale
exports are redone, the CLI and the Runs page build them."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from cifar_core.insight import evaluation
from cifar_core import export, runs
from cifar_core.config import ARCHITECTURES, TrainConfig
from cifar_core.data import make_synthetic
from cifar_core.models import build_model
from cifar_core.insight.predict import predict_proba
from cifar_core.recipes.presets import preset_config
from job_helpers import start_job

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(epochs=1, data="synthetic", train_subset=300, test_subset=100, batch_size=32)


def train_tiny(root: Path, config: TrainConfig) -> Path:
    """One real run of `config` on synthetic data, stored under `root`; returns its folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CIFAR_ARTIFACTS_DIR", str(root))
        job = start_job(config, dataset=make_synthetic(600, 200, seed=1))
        assert job.join(180), "training the tiny run took over 180 s"
    assert job.snapshot().status == "completed", job.snapshot().error
    return root / "runs" / job.run_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The assignment CNN with augmentation and dropout in the model, which exports must not apply."""
    return train_tiny(tmp_path_factory.mktemp("export"), TrainConfig(augment="flip_translate", dropout=0.3, **TINY))


@pytest.fixture
def run_id(artifacts, trained):
    """The trained run copied (times kept) into this test's own artifacts folder."""
    shutil.copytree(trained, artifacts / "runs" / trained.name)
    return trained.name


def keras_proba(run_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The run's test images and Keras' probabilities for them."""
    x = evaluation.run_test_data(runs.load_run(run_id)).x_test
    return x, predict_proba(runs.load_model(run_id), x)


def no_temporary_files(folder: Path) -> bool:
    return not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_keras_export_is_the_model_file_and_is_redone_when_the_model_changes(run_id):
    result = export.export_run(run_id, "keras")
    run = runs.load_run(run_id)
    assert result.paths == (run.path / "export" / "model.keras",) and not result.reused
    assert result.paths[0].read_bytes() == run.model_path.read_bytes()
    assert result.sizes_bytes == (run.model_path.stat().st_size,)
    assert export.export_run(run_id, "keras").reused  # same model file: nothing rewritten

    os.utime(run.model_path, ns=(1, 1))  # a resumed run writes a new model file: a new stamp
    assert export.current_export(run_id, "keras") is None  # the old export is never served
    again = export.export_run(run_id, "keras")
    assert not again.reused and again.model_stamp == runs.model_stamp(run.model_path)
    assert no_temporary_files(run.path / "export")


def test_savedmodel_serving_signature_gives_keras_probabilities(run_id):
    import tensorflow as tf

    result = export.export_run(run_id, "savedmodel")
    (folder,) = result.paths
    assert folder.name == "saved_model" and result.sizes_bytes[0] > 0
    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    x, expected = keras_proba(run_id)
    for _ in range(2):  # the same answer twice: flip and shift are not applied at inference
        got = serve(pixels=tf.constant(x, tf.float32))["output_0"].numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert no_temporary_files(folder.parent)


def test_tflite_float_agrees_with_keras_and_the_quantised_copy_is_smaller(run_id):
    result = export.export_run(run_id, "tflite")
    float_file, quantised_file = result.paths
    assert (float_file.name, quantised_file.name) == ("model.tflite", "model_dynamic_range.tflite")
    assert result.sizes_bytes[1] < result.sizes_bytes[0] / 2  # int8 weights instead of float32
    x, expected = keras_proba(run_id)
    assert result.agreement_images == len(x) == 100
    top1 = export.tflite_proba(float_file.read_bytes(), x).argmax(axis=1)
    assert (top1 == expected.argmax(axis=1)).mean() >= 0.99
    assert result.agreement["model.tflite"] >= 0.99
    quantised = (export.tflite_proba(quantised_file.read_bytes(), x).argmax(axis=1) == expected.argmax(axis=1)).mean()
    assert result.agreement["model_dynamic_range.tflite"] == pytest.approx(quantised)
    print(f"dynamic-range agreement {quantised:.1%}, sizes {result.sizes_bytes}")


@pytest.mark.slow
def test_the_fast_airbench_preset_exports_to_tflite(artifacts):
    folder = train_tiny(artifacts, preset_config("fast", **TINY))
    result = export.export_run(folder.name, "tflite")
    assert result.agreement["model.tflite"] >= 0.99
    assert set(result.agreement) == {"model.tflite", "model_dynamic_range.tflite"}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_architecture_converts_with_builtin_ops_and_inert_augmentation(architecture, tmp_path, tiny_data):
    config = TrainConfig(architecture=architecture, augment="flip_translate")
    model = build_model(config, x_train=tiny_data.x_train, steps_per_epoch=10)
    export.write_saved_model(model, tmp_path / "saved_model")
    x = tiny_data.x_test[:64]
    flat = export.to_tflite(tmp_path / "saved_model", quantise=False)  # raises if an op needs TF Select
    np.testing.assert_allclose(export.tflite_proba(flat, x), predict_proba(model, x), atol=1e-4)
    quantised = export.to_tflite(tmp_path / "saved_model", quantise=True)
    assert len(quantised) < len(flat) / 2 and export.tflite_proba(quantised, x).shape == (64, 10)


def test_a_run_without_a_model_or_a_bad_format_is_refused_clearly(artifacts):
    path = runs.create_run(TrainConfig(**TINY))
    with pytest.raises(runs.RunError, match="no saved model yet"):
        export.export_run(path.name, "keras")
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export.export_run(path.name, "onnx")


def run_cli(*args, artifacts, timeout=240):
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    return subprocess.run([sys.executable, "-m", "cifar_core", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # three fresh interpreters import TensorFlow: ~13-22 s
@pytest.mark.heavy
def test_cli_export_prints_each_file_with_its_size_and_the_tflite_agreement(run_id, artifacts, tmp_path):
    done = run_cli("export", run_id, "--format", "tflite", "--out", str(tmp_path / "out"), artifacts=artifacts)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name in ("model.tflite", "model_dynamic_range.tflite"):
        copy = tmp_path / "out" / f"{run_id}-{name}"
        assert copy.is_file()
        (line,) = [ln for ln in lines if ln.startswith(f"{copy}: ")]
        assert " MB; top-1 agrees with Keras on " in line and "of 100 test images" in line
    assert f"run {run_id}: tflite export written in" in lines[-1]

    again = run_cli("export", run_id, artifacts=artifacts)
    assert again.returncode == 0 and "model.keras: " in again.stdout
    bad = run_cli("export", "no-such-run", artifacts=artifacts)
    assert bad.returncode == 1 and "no run 'no-such-run'" in bad.stderr and "Traceback" not in bad.stderr


def open_runs_page() -> AppTest:
    """The real entry, then the Runs page, as a browser gets there."""
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120).run()
    return at.switch_page("pages/runs.py").run()


def build_export(at: AppTest, fmt: str) -> AppTest:
    at.segmented_control(key="runs_export_format").set_value(fmt).run()
    return [b for b in at.button if b.label == "Build export"][0].click().run()


def test_runs_page_builds_an_export_and_offers_its_download(run_id):
    at = open_runs_page()
    assert not at.exception
    assert not [b for b in at.download_button if b.label.startswith("saved_model")]
    build_export(at, "savedmodel")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len([b for b in at.download_button if b.label.startswith("saved_model.zip (")]) == 1
    assert "from the run's current model" in "\n".join(c.value for c in at.caption)

    folder = runs.load_run(run_id).path / "export" / "saved_model"
    names = zipfile.ZipFile(io.BytesIO(export.folder_zip(folder))).namelist()
    assert "saved_model/saved_model.pb" in names


def test_runs_page_shows_a_failed_export_as_an_error_and_offers_no_file(run_id):
    runs.load_run(run_id).model_path.write_bytes(b"not a zip: a damaged model file")
    at = open_runs_page()
    build_export(at, "tflite")
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "cannot load model.keras" in errors[0], errors
    assert not [b for b in at.download_button if b.label.startswith("model.tflite")]
