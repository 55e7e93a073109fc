"""Distributed training through the real job and CLI: our loop against Keras' fit on one device,
MirroredStrategy over two logical CPUs, two workers on 127.0.0.1 with TF_CONFIG, a worker that
dies, and a stop that every worker agrees on."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cifar_core.training import distributed, distributed_loop
from cifar_core import runs
from cifar_core.config import TrainConfig
from job_helpers import resume_job, start_job

ROOT = Path(__file__).resolve().parent.parent
# The assignment network (no BatchNorm: per-replica batch statistics would differ from one device's
# by design) with SGD at a rate where it learns steadily: Adam's normalisation magnifies the last
# bits of near-zero gradients, and at learning_rate 0.03 this tiny set's run is itself unstable
# (validation loss jumps), so the replicas' float-order differences grow to 2% by epoch 2.
TINY = dict(data="synthetic", train_subset=320, test_subset=100, batch_size=32, dropout=0.0,
            optimizer="sgd", learning_rate=0.01, seed=3)


def cli_args(config: dict, epochs: int) -> list[str]:
    return ["--data", config["data"], "--train-subset", str(config["train_subset"]), "--test-subset",
            str(config["test_subset"]), "--batch-size", str(config["batch_size"]), "--dropout", str(config["dropout"]),
            "--optimizer", config["optimizer"], "--learning-rate", str(config["learning_rate"]),
            "--seed", str(config["seed"]), "--epochs", str(epochs)]


def cli(*args, artifacts: Path, timeout: float = 180):
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    env.pop("TF_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "cifar_core", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(tmp_path: Path, artifacts: Path, args: list[str], n: int = 2) -> list[subprocess.Popen]:
    """`python -m cifar_core <args>` once per worker of a TF_CONFIG cluster on 127.0.0.1, all
    sharing one artifacts folder (as on shared storage), each with its own TMPDIR."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    for i in range(n):
        tmp = tmp_path / f"tmp{i}"
        tmp.mkdir()
        tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
        env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic",
               "TF_CONFIG": tf_config, "TMPDIR": str(tmp)}
        procs.append(subprocess.Popen([sys.executable, "-m", "cifar_core", *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 120) -> list[tuple[int, str, str]]:
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, out, err))
    return results


def wait_for(predicate, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def only_run(artifacts: Path) -> Path:
    found = sorted((artifacts / "runs").iterdir())
    assert len(found) == 1, f"expected one run folder, found {[p.name for p in found]}"
    return found[0]


def epochs_done(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "status.json").read_text()).get("epochs_done", 0))
    except (OSError, ValueError):
        return 0


# --- without subprocesses ---------------------------------------------------------------------

def test_tf_config_names_the_chief_and_a_one_task_cluster_is_no_cluster():
    two = {"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 0}}
    assert distributed.read_tf_config({"TF_CONFIG": json.dumps(two)}) == (2, "worker:0", True)
    two["task"]["index"] = 1
    assert distributed.read_tf_config({"TF_CONFIG": json.dumps(two)}) == (2, "worker:1", False)
    with_chief = {"cluster": {"chief": ["h:0"], "worker": ["h:1"]}, "task": {"type": "worker", "index": 0}}
    assert distributed.read_tf_config({"TF_CONFIG": json.dumps(with_chief)}) == (2, "worker:0", False)
    one = {"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 0}}
    assert distributed.read_tf_config({"TF_CONFIG": json.dumps(one)}) is None
    assert distributed.read_tf_config({}) is None
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distributed.read_tf_config({"TF_CONFIG": "{not json"})
    with pytest.raises(ValueError, match="task worker:5"):
        distributed.read_tf_config({"TF_CONFIG": json.dumps({**two, "task": {"type": "worker", "index": 5}})})


def test_devices_are_parsed_or_refused_and_the_batch_must_split_over_the_replicas():
    assert distributed.parse_devices(None) == ("default", None, ())
    assert distributed.parse_devices("cpu:2") == ("cpu", 2, ())
    assert distributed.parse_devices("gpu:0,1") == ("gpu", None, (0, 1))
    for bad in ("tpu", "cpu:0", "cpu:1,2", "gpu:x", "default:1"):
        with pytest.raises(ValueError, match="devices|cpu:N"):
            distributed.parse_devices(bad)
    two = distributed.Cluster("mirrored", ("CPU:0", "CPU:1"))
    with pytest.raises(ValueError, match="batch_size 33 .* 2 replicas"):
        two.check(TrainConfig(batch_size=33))
    record = two.record(TrainConfig(batch_size=64))
    assert (record["global_batch_size"], record["per_replica_batch_size"], record["replicas"]) == (64, 32, 2)
    assert record["learning_rate"] == TrainConfig().learning_rate and "none" in record["learning_rate_scaling"]


def test_no_replica_is_given_a_training_share_too_small_for_batchnorm():
    """A pass's last batch that would leave a replica fewer than MIN_SHARE_IMAGES is not a step of
    our loop (so the live progress counts one step fewer); one device, and fit, train every batch but
    a last one of a single image (make_tf_dataset leaves it out);
    a global batch or training set too small to share at all is refused before a run folder."""
    two = distributed.Cluster("mirrored", ("CPU:0", "CPU:1"))
    assert distributed_loop.MIN_SHARE_IMAGES == 2
    assert [two.batches_per_pass(images, 32) for images in (64, 65, 66, 67, 68)] == [2, 2, 2, 2, 3]
    # one device trains a partial batch too, unless it is a single image (issue 26)
    assert [distributed.LOCAL.batches_per_pass(images, 32) for images in (64, 65, 66)] == [2, 2, 3]
    with pytest.raises(ValueError, match="batch_size 2 leaves each of 2 replicas fewer than 2 .* at least 4"):
        two.check(TrainConfig(batch_size=2))
    with pytest.raises(ValueError, match="train_subset 3 leaves each of 2 replicas"):
        two.check(TrainConfig(batch_size=32, train_subset=3))
    two.check(TrainConfig(batch_size=4, train_subset=65))
    distributed.LOCAL.check(TrainConfig(batch_size=1))
    with pytest.raises(ValueError, match="train_subset 1 is a single partial batch"):
        distributed.LOCAL.check(TrainConfig(batch_size=32, train_subset=1))


@pytest.mark.slow
@pytest.mark.heavy
def test_our_loop_on_one_device_trains_exactly_as_fit_with_the_recipes_callbacks(artifacts, monkeypatch):
    """The loop distributed runs take, run on one device: the same history, checkpoints and
    evaluation as Keras' fit, with the lookahead callback and EMA driven through it. (Early
    stopping is left out: recipe.py's EarlyStopping fails under fit as well in Keras 3.15, which
    cannot tell the direction of val_accuracy without mode="max".)"""
    # 3 steps an epoch: lookahead (every 5 steps) acts once
    config = TrainConfig(epochs=2, **{**TINY, "train_subset": 96, "test_subset": 64}, weight_averaging="lookahead")
    histories = {}
    for loop in ("fit", "custom"):
        monkeypatch.setenv(distributed.LOOP_ENV, loop)
        for cfg in (config, config.replace(weight_averaging="ema")):
            job = start_job(cfg)
            assert job.join(180)
            snap = job.snapshot()
            assert snap.status == "completed", snap.error
            run = runs.load_run(snap.run_id)
            assert run.distribution["loop"] == loop and run.distribution["strategy"] == "default"
            histories[loop, cfg.weight_averaging] = (run.history, run.metrics, runs.load_model(snap.run_id))
    for averaging in ("lookahead", "ema"):
        (fit_h, fit_m, fit_model), (our_h, our_m, our_model) = (histories["fit", averaging], histories["custom", averaging])
        assert set(our_h) == set(fit_h)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert our_h[key] == pytest.approx(fit_h[key], rel=1e-4, abs=1e-6), (averaging, key)
        assert our_m["test_accuracy"] == pytest.approx(fit_m["test_accuracy"])
        for a, b in zip(our_model.get_weights(), fit_model.get_weights()):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_stop_in_our_loop_ends_within_a_batch_and_keeps_a_loadable_run(artifacts, monkeypatch):
    monkeypatch.setenv(distributed.LOOP_ENV, "custom")
    job = start_job(TrainConfig(epochs=5, **{**TINY, "train_subset": 3000, "batch_size": 16}))
    deadline = time.monotonic() + 120
    while job.snapshot().batch < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    at_stop = job.snapshot().batch
    job.stop()
    assert job.join(120)
    snap = job.snapshot()
    assert snap.status == "stopped" and snap.epoch == 1 and snap.batch <= at_stop + 2
    assert runs.load_model(snap.run_id).predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape == (2, 10)


def test_runs_without_a_distribution_record_still_load(artifacts):
    path = runs.create_run(TrainConfig(epochs=1, data="synthetic"))
    assert runs.load_run(path.name).distribution is None and runs.load_run(path.name).broken is None


def test_a_batch_the_two_devices_cannot_share_is_refused_before_a_run_folder(tmp_path):
    artifacts = tmp_path / "artifacts"
    done = cli("train", "--devices", "cpu:2", "--batch-size", "33", "--epochs", "1", artifacts=artifacts)
    assert done.returncode == 1 and "batch_size 33" in done.stderr and "Traceback" not in done.stderr
    assert not (artifacts / "runs").exists() or not any((artifacts / "runs").iterdir())


def test_resume_on_devices_that_cannot_share_the_runs_batch_is_refused_before_anything(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(artifacts))
    path = runs.create_run(TrainConfig(epochs=1, batch_size=33, data="synthetic"))
    runs.update_status(path, status="stopped")
    before = sorted(p.name for p in path.iterdir())
    done = cli("resume", path.name, "--devices", "cpu:2", "--epochs", "2", artifacts=artifacts)
    assert done.returncode == 1 and "batch_size 33" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in path.iterdir()) == before and runs.load_run(path.name).status == "stopped"


# --- MirroredStrategy and multi-worker, in subprocesses -----------------------------------------

@pytest.mark.slow
@pytest.mark.heavy  # two processes' worth of TensorFlow on 2 logical CPUs: CI runs it
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(tmp_path, monkeypatch):
    """2 epochs on 2 logical CPU devices through the CLI's real job, against the same config on one
    device (Keras' fit), each in its own process as a user runs them. Tolerance: 1e-3 relative on
    every epoch's loss, accuracy, val_loss and val_accuracy (measured: loss within 1e-5, val_loss
    within 7e-5; the two replicas' float sums are added in another order)."""
    one, two = tmp_path / "one", tmp_path / "two"
    done = cli("train", "--devices", "cpu:2", *cli_args(TINY, 2), artifacts=two)
    assert done.returncode == 0, done.stderr
    reference = cli("train", *cli_args(TINY, 2), artifacts=one)
    assert reference.returncode == 0, reference.stderr
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(one))
    single = runs.load_run(only_run(one).name)
    assert single.distribution["strategy"] == "default" and single.distribution["loop"] == "fit"
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(two))
    mirrored = runs.load_run(only_run(two).name)
    assert mirrored.status == "completed" and mirrored.broken is None
    assert mirrored.distribution == {**mirrored.distribution, "strategy": "mirrored", "replicas": 2, "workers": 1,
                                     "devices": ["CPU:0", "CPU:1"], "global_batch_size": 32,
                                     "per_replica_batch_size": 16, "loop": "custom"}
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert len(mirrored.history[key]) == 2
        assert mirrored.history[key] == pytest.approx(single.history[key], rel=1e-3), key
    assert mirrored.history["loss"][1] < mirrored.history["loss"][0]  # it learned
    model = runs.load_model(mirrored.run_id)
    assert model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.heavy  # one CLI run on 2 logical CPUs: 18 s on an idle 2-core machine, up to 60 s on a busy one
def test_batchnorm_under_mirrored_strategy_with_a_last_batch_smaller_than_the_replicas(tmp_path, monkeypatch):
    """The BatchNorm network on 2 logical CPUs, 65 training images in batches of 32 (the last
    batch: 1 image, nothing for one replica) and 257 test images (the last validation batch of
    256: 1 image). Before the fix TensorFlow's kernels failed on the empty share and the run
    failed; a share of 1 image trained BatchNorm on a variance of 0. Now the training tail is
    skipped (2 steps an epoch, said so by the progress) and the validation tail padded, weighted 0."""
    artifacts = tmp_path / "artifacts"
    config = {**TINY, "train_subset": 65, "test_subset": 257}
    done = cli("train", "--devices", "cpu:2", "--architecture", "assignment_bn", *cli_args(config, 2),
               artifacts=artifacts)
    assert done.returncode == 0, done.stderr[-3000:]
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(artifacts))
    run_dir = only_run(artifacts)
    live = json.loads((run_dir / "live.json").read_text())  # the progress watchers saw: 2 steps an epoch, both ended
    assert (live["batches_per_epoch"], live["batch"], live["batch_steps"]) == (2, 2, [0.5, 1.0, 1.5, 2.0])
    run = runs.load_run(run_dir.name)
    assert run.status == "completed" and run.distribution["strategy"] == "mirrored"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(run.history[key]) == 2 and np.isfinite(run.history[key]).all(), (key, run.history[key])
    # The padding counted for nothing: the last validation matches the chief's one-device evaluation
    # of the saved model (not exactly: each replica validates with its own BatchNorm moving statistics;
    # measured within 8e-5), where a counted copy of the last image would add ~2.3 / 257 (4e-3).
    assert run.history["val_loss"][-1] == pytest.approx(run.metrics["test_loss"], rel=1e-3)
    model = runs.load_model(run.run_id)
    moving = [w for w in model.weights if "moving_" in w.path]
    assert len(moving) >= 4, [w.path for w in model.weights]
    for w in moving:
        values = np.asarray(w.numpy())
        assert np.isfinite(values).all(), w.path
        if "variance" in w.path:
            assert values.min() > 0, w.path
    assert np.isfinite(model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)).all()


@pytest.mark.slow
@pytest.mark.heavy  # two worker processes, ~18 s
def test_two_workers_train_an_epoch_and_only_the_chief_writes_a_run(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    (rc0, out0, err0), (rc1, out1, err1) = finish(start_workers(tmp_path, artifacts, ["train", *cli_args(TINY, 1)]))
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert "the chief: it writes the run folder" in out0 and "saved run" in out0
    assert "not the chief" in out1 and "completed: 1 epochs as worker:1; the chief saved the run" in out1
    run_dir = only_run(artifacts)  # the worker made none, in the shared artifacts folder or elsewhere
    assert not any((tmp_path / "tmp1").iterdir()), "the worker's scratch folder was not removed"
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(artifacts))
    run = runs.load_run(run_dir.name)
    assert run.status == "completed" and run.broken is None and run.epochs_done == 1
    assert len(run.history["val_loss"]) == 1 and run.metrics["test_accuracy"] is not None
    assert run.distribution == {**run.distribution, "strategy": "multi_worker", "workers": 2, "replicas": 2,
                                "global_batch_size": 32, "per_replica_batch_size": 16, "loop": "custom"}
    model = runs.load_model(run.run_id)
    assert model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.heavy
def test_a_worker_that_dies_fails_the_chief_clearly_and_the_run_resumes_in_one_process(tmp_path, monkeypatch):
    artifacts = tmp_path / "artifacts"
    chief, worker = procs = start_workers(tmp_path, artifacts, ["train", *cli_args({**TINY, "train_subset": 128}, 40)])
    try:
        wait_for(lambda: (artifacts / "runs").is_dir() and any(epochs_done(p) >= 1 for p in (artifacts / "runs").iterdir()),
                 what="the chief's first checkpoint")
        worker.kill()
        killed_at = time.monotonic()
        out, err = chief.communicate(timeout=90)
    finally:
        for p in procs:
            p.kill()
    assert time.monotonic() - killed_at < 60, "the chief took over a minute to notice"
    assert chief.returncode == 1
    assert "training failed: WorkerLost: training stopped because worker:1 of the cluster stopped responding" in err
    assert "Traceback" not in err
    run_dir = only_run(artifacts)
    monkeypatch.setenv("CIFAR_ARTIFACTS_DIR", str(artifacts))
    run = runs.load_run(run_dir.name)
    assert run.status == "failed" and "resume" in run.error
    done = run.epochs_done
    assert done >= 1 and (run_dir / "checkpoint.keras").is_file()
    runs.load_model(run.run_id)  # the last completed epoch's checkpoint loads
    job = resume_job(run.run_id, epochs=done + 1)  # one process, no TF_CONFIG
    assert job.join(180) and job.snapshot().status == "completed", job.snapshot().error
    resumed = runs.load_run(run.run_id)
    assert resumed.epochs_done == done + 1 and resumed.history["loss"][:done] == run.history["loss"][:done]
    assert resumed.distribution["strategy"] == "default"


@pytest.mark.slow
@pytest.mark.heavy
def test_ctrl_c_on_the_chief_stops_every_worker_at_the_same_step(tmp_path):
    artifacts = tmp_path / "artifacts"
    chief, worker = procs = start_workers(tmp_path, artifacts, ["train", *cli_args({**TINY, "train_subset": 128}, 40)])
    try:
        wait_for(lambda: (artifacts / "runs").is_dir() and any(epochs_done(p) >= 1 for p in (artifacts / "runs").iterdir()),
                 what="the chief's first checkpoint")
        chief.send_signal(signal.SIGINT)
        (rc0, out0, err0), (rc1, out1, err1) = finish(procs, timeout=90)
    finally:
        for p in procs:
            p.kill()
    assert rc0 == 0 and rc1 == 0, err0 + err1
    assert "stopped:" in out0 and "stopped:" in out1 and "as worker:1" in out1
    run_dir = only_run(artifacts)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "stopped" and (run_dir / "model.keras").is_file()
