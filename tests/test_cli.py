"""The headless CLI through its real entry points, including a trainer killed mid-run."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from cifar_core import cli, runs

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--data", "synthetic", "--train-subset", "600", "--test-subset", "200", "--batch-size", "32"]


def run_cli(*args, artifacts, timeout=240):
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    return subprocess.run([sys.executable, "-m", "cifar_core", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One CLI-trained run, shared by the read-only tests below."""
    artifacts = tmp_path_factory.mktemp("cli") / "artifacts"
    done = run_cli("train", "--epochs", "2", *SMALL, "--name", "cli run", "--tag", "smoke", "--tag", "cli",
                   artifacts=artifacts)
    assert done.returncode == 0, done.stderr
    return artifacts, done


def test_train_prints_progress_and_writes_a_run(trained):
    artifacts, done = trained
    assert "epoch 1/2" in done.stdout and "epoch 2/2: loss" in done.stdout
    assert "img/s" in done.stdout
    assert "completed: 2 epochs" in done.stdout and "test accuracy" in done.stdout
    (run_dir,) = (artifacts / "runs").iterdir()
    assert {"config.json", "history.json", "history.csv", "status.json", "metrics.json", "model.keras"} <= {
        p.name for p in run_dir.iterdir()}


def test_runs_and_evaluate_show_the_first_four(trained):
    artifacts, _ = trained
    listed = run_cli("runs", artifacts=artifacts)
    assert listed.returncode == 0 and "completed" in listed.stdout and "test acc" in listed.stdout
    ev = run_cli("evaluate", artifacts=artifacts)
    assert ev.returncode == 0, ev.stderr
    assert "test accuracy" in ev.stdout
    firsts = [line for line in ev.stdout.splitlines() if line.strip().startswith("#")]
    assert len(firsts) == 4 and all("predicted" in f and "true" in f for f in firsts)


def test_predict_good_and_bad_files_one_line_errors_no_traceback(trained, tmp_path):
    artifacts, _ = trained
    good = tmp_path / "red.png"
    Image.new("RGB", (64, 48), (220, 40, 40)).save(good)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    out = run_cli("predict", str(good), str(text), str(empty), str(tmp_path / "missing.png"), artifacts=artifacts)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stdout.count("red.png:") == 1 and "%" in out.stdout
    # TensorFlow 2.21 logs a few start-up lines to stderr that no environment variable silences.
    errors = [line for line in out.stderr.splitlines() if ": error: " in line]
    assert [e.split(":")[0] for e in errors] == [str(text), str(empty), str(tmp_path / "missing.png")]


def test_bad_arguments_exit_nonzero_with_the_field_named(tmp_path):
    buf = io.StringIO()
    assert cli.main(["train", "--epochs", "0"], out=buf) == 1
    out = run_cli("evaluate", "../../etc", artifacts=tmp_path)
    assert out.returncode == 1 and "invalid run id" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("evaluate", artifacts=tmp_path)
    assert out.returncode == 1 and "no run with a saved model" in out.stderr


@pytest.mark.slow
@pytest.mark.heavy
def test_killed_trainer_leaves_an_interrupted_run_that_resumes_with_its_curves(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    proc = subprocess.Popen([sys.executable, "-m", "cifar_core", "train", "--epochs", "40", *SMALL],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            found = list((artifacts / "runs").glob("*/checkpoint.keras"))
            if found and runs_epochs(found[0].parent) >= 1:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 180 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(artifacts))
    (run,) = runs.list_runs()
    assert run.broken is None and run.status == "interrupted"
    assert run.model_path.name == "checkpoint.keras"
    done = run.epochs_done
    assert done >= 1 and run.history["val_accuracy"]
    runs.load_model(run.run_id)  # the last completed epoch's checkpoint is whole

    resumed = run_cli("resume", run.run_id, "--epochs", str(done + 1), artifacts=artifacts)
    assert resumed.returncode == 0, resumed.stderr
    after = runs.load_run(run.run_id)
    assert after.status == "completed" and after.epochs_done == done + 1
    assert after.history["loss"][:done] == pytest.approx(run.history["loss"])


def runs_epochs(run_dir):
    """Epochs the trainer has checkpointed so far, read as a user would: from status.json."""
    try:
        return json.loads((run_dir / "status.json").read_text()).get("epochs_done", 0)
    except (OSError, ValueError):
        return 0  # not written yet, or caught mid-rename


SAVE_LOOP = """
import sys
from pathlib import Path
from cifar_core.config import TrainConfig
from cifar_core.models import build_model
from cifar_core.runs import save_model
model = build_model(TrainConfig())
target = Path(sys.argv[1])
print("ready", flush=True)
while True:
    save_model(model, target)
    print("saved", flush=True)
"""


@pytest.mark.slow
@pytest.mark.heavy
def test_a_kill_during_the_model_save_never_leaves_a_half_written_model(tmp_path):
    import keras

    target = tmp_path / "model.keras"
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(target)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "ready"
        # A whole model is on disk: the kill now lands inside a later save that replaces it (not
        # before the first save, where "nothing there" would pass however saves are written).
        assert proc.stdout.readline().strip() == "saved"
        time.sleep(0.37 * attempt)  # at different points of a save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        keras.saving.load_model(target, safe_mode=True, compile=False)  # the old model or the new, whole


TF_STARTUP = ("absl::InitializeLog", "cudart_stub", "cpu_feature_guard", "cuInit", "oneDNN")


def test_a_cli_user_sees_no_tensorflow_start_up_lines_and_the_runs_name_and_tags(trained):
    artifacts, done = trained
    assert not [m for m in TF_STARTUP if m in done.stderr], done.stderr
    listed = run_cli("runs", artifacts=artifacts)
    assert "'cli run'" in listed.stdout and "[smoke, cli]" in listed.stdout
    (run_dir,) = (artifacts / "runs").iterdir()
    assert json.loads((run_dir / runs.META_FILE).read_text()) == {"name": "cli run", "tags": ["smoke", "cli"]}


def test_predict_answers_a_bad_file_in_one_line_without_loading_tensorflow(trained, tmp_path):
    artifacts, _ = trained
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"not a picture at all")
    out = run_cli("predict", str(bad), artifacts=artifacts)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"{bad}: error:"), out.stderr
    code = f"import sys; from cifar_core import cli; rc = cli.main(['predict', {str(bad)!r}]); " \
           f"print(rc, 'tensorflow' in sys.modules)"
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts)}
    in_process = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120)
    assert in_process.stdout.strip() == "1 False"  # answered without importing TensorFlow


def test_train_refuses_a_missing_data_source_before_a_run_folder_exists(tmp_path):
    artifacts = tmp_path / "artifacts"
    out = run_cli("train", "--epochs", "1", "--data", str(tmp_path / "typo"), artifacts=artifacts)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "does not exist" in out.stderr, out.stderr
    assert not (artifacts / "runs").exists()

