"""A run's live state in its folder (live.json), stop requests through the folder, and the
dashboard watching a run that another process trains (issue 10's "watch any run")."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cifar_core.runs import heartbeat
from cifar_core.training import publisher as live
from cifar_core import jobs, runs, training
from cifar_core.config import TrainConfig
from cifar_core.training.state import LIVE_POINTS, JobState, thin_indices
from job_helpers import start_job
from live_helpers import live_panel_data, read_feed

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboard.py"
QUICK = dict(data="synthetic", train_subset=600, test_subset=200, batch_size=32)


def test_thinning_keeps_the_ends_and_the_bound():
    assert thin_indices(5, 10) == [0, 1, 2, 3, 4]
    kept = thin_indices(2001, LIVE_POINTS)
    assert len(kept) <= LIVE_POINTS and kept[0] == 0 and kept[-1] == 2000 and kept == sorted(set(kept))


def test_watchers_share_the_published_curves_and_see_an_end_at_once():
    state = JobState("r", TrainConfig(epochs=3), {}, 0)
    state.start_running(batches_per_epoch=1000)
    for i in range(1500):
        state.add_batch(i / 1000, 2.0 - i / 1000, i / 1500)
    assert state.view().batch_steps == []  # nothing published yet: the curves are what was published
    published = state.publish()
    assert published.version == 1 and len(published.batch_steps) == LIVE_POINTS
    assert published.batch_steps[-1] == pytest.approx(1.499)
    state.update(batch=7)
    view = state.view()
    assert view.batch == 7 and view.version == 1 and view.batch_loss is published.batch_loss  # not copied
    state.add_epoch({"loss": 1.0, "accuracy": 0.5})
    state.update(status="completed")
    final = state.view()  # an ended job is published on the spot: its last epoch is there
    assert final.version == 2 and final.history["loss"] == [1.0]


def test_a_job_publishes_live_json_and_leaves_its_final_state(artifacts):
    job = start_job(TrainConfig(epochs=2, **QUICK))
    assert job.join(180)
    run = runs.load_run(job.run_id)
    record = json.loads((run.path / heartbeat.LIVE_FILE).read_text())
    assert record["status"] == "completed" and record["pid"] == os.getpid()
    snap = live.read(run)
    assert snap.status == "completed" and snap.history["loss"] == pytest.approx(run.history["loss"])
    assert len(snap.batch_steps) == 2 * snap.batches_per_epoch  # every batch of a short run, unthinned
    assert snap.metrics["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    assert not (run.path / live.STOP_FILE).exists()


def test_a_stop_request_in_the_folder_stops_the_job_and_it_saves(artifacts):
    job = jobs.start(TrainConfig(epochs=200, **QUICK))  # the product's job: a process of its own
    deadline = time.monotonic() + 120
    while (snap := live.read(runs.load_run(job.run_id))).status != "running" or snap.batch < 2:
        assert time.monotonic() < deadline and job.alive, "the job did not start training"
        time.sleep(0.1)
    live.request_stop(job.run_dir)
    assert job.wait(60), "the stop request was not honoured"
    assert job.returncode == 3  # the job process says it ended stopped
    run = runs.load_run(job.run_id)
    assert run.status == "stopped" and run.model_path is not None
    assert not (run.path / live.STOP_FILE).exists()  # a later resume is not stopped by it


def test_a_trainer_on_another_host_is_alive_while_it_publishes(with_run, artifacts):
    path = artifacts / "runs" / with_run
    status = json.loads((path / "status.json").read_text())
    status.update(status="running", host=f"not-{socket.gethostname()}", pid=1)
    (path / "status.json").write_text(json.dumps(status))
    (path / heartbeat.LIVE_FILE).write_text(json.dumps({"status": "running", "epoch": 1, "host": "elsewhere"}))
    assert runs.load_run(with_run).status == "running"
    assert [r.run_id for r in live.active_runs()] == [with_run]
    old = time.time() - heartbeat.STALE_SECONDS - 5
    os.utime(path / heartbeat.LIVE_FILE, (old, old))
    run = runs.load_run(with_run)
    assert run.status == "interrupted" and live.read(run).status == "interrupted"
    assert live.active_runs() == []


def progress_line(at: AppTest) -> str:
    """The run's status line: the live panel's (an active run) or the page's (an ended one)."""
    panel = live_panel_data(at)
    if panel is not None:
        return f"Run `{panel['progress']['run_id']}` {panel['progress']['status']} {panel['progress'].get('text', '')}"
    return " ".join(m.value for m in at.markdown if "Run `" in m.value)


def batches_done(text: str) -> int:
    """"Epoch E/N · batch B/P · ..." as batches done in all; -1 before the first."""
    parts = text.split(" · ")
    if len(parts) < 2 or not parts[1].startswith("batch "):
        return -1
    epoch = int(parts[0].split()[1].split("/")[0])
    batch, per = (int(v) for v in parts[1].split()[1].split("/"))
    return (epoch - 1) * per + batch


def batches_seen(at: AppTest) -> int:
    panel = live_panel_data(at)
    return batches_done(panel["progress"].get("text", "")) if panel else -1


@pytest.mark.slow
@pytest.mark.heavy  # a CLI trainer in a second process: CI runs it
def test_the_dashboard_watches_a_cli_run_live_and_stops_it(artifacts):
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    proc = subprocess.Popen([sys.executable, "-m", "cifar_core", "train", "--epochs", "200", "--data", "synthetic",
                             "--train-subset", "600", "--test-subset", "200", "--batch-size", "32"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((artifacts / "runs").glob(f"*/{heartbeat.LIVE_FILE}")):
            assert time.monotonic() < deadline and proc.poll() is None, "the CLI run never published"
            time.sleep(0.2)
        at = AppTest.from_file(str(DASHBOARD), default_timeout=60).run()
        at.switch_page("pages/train.py").run()
        deadline = time.monotonic() + 90
        while batches_seen(at) <= 0:
            assert time.monotonic() < deadline, f"no progress shown: {progress_line(at)!r}"
            time.sleep(1)
            at.run()
        first = batches_seen(at)
        assert f"Trained by {socket.gethostname()}, pid {proc.pid};" in " ".join(c.value for c in at.caption)
        # The browser's panel polls the feed the server keeps fresh from the CLI's run folder:
        # it moves on with no script run.
        url = live_panel_data(at)["progress_url"]
        deadline = time.monotonic() + 60
        while batches_done(read_feed(url).get("text", "")) <= first:
            assert time.monotonic() < deadline, "the watched progress did not advance"
            time.sleep(0.5)
        at.run()
        at.button(key=[b.key for b in at.button if b.key and b.key.startswith("cifar_stop_")][0]).click().run()
        assert proc.wait(90) == 0, "the CLI did not end after Stop from the page"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    (run,) = runs.list_runs()
    assert run.status == "stopped" and run.model_path is not None
    at.run()
    assert "stopped" in progress_line(at).lower()
    assert "How each class evolves" in [h.value for h in at.subheader]  # issue 11's per-epoch mistakes
    if run.epochs_done >= 1:
        specs = " ".join(c.proto.spec for c in at.get("plotly_chart"))
        assert f"Confusion matrix at epoch {run.epochs_done} (" in specs


@pytest.mark.slow
@pytest.mark.heavy  # a CLI resume in a second process: CI runs it
def test_the_train_page_watches_its_last_run_resumed_by_another_process_which_alone_trains_it(artifacts):
    from cifar_ui import running

    job = start_job(TrainConfig(epochs=1, **QUICK))
    assert job.join(120) and job.snapshot().status == "completed", job.snapshot().error
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    proc = subprocess.Popen([sys.executable, "-m", "cifar_core", "resume", job.run_id, "--epochs", "200"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while json.loads((job.run_dir / "status.json").read_text()).get("pid") != proc.pid:  # it began training
            assert time.monotonic() < deadline and proc.poll() is None, "the CLI's resume never began"
            time.sleep(0.2)
        while not [t for t in running.targets() if t.is_active()]:  # this server's ended job gives way to it
            assert time.monotonic() < deadline, f"the run training elsewhere is not shown: {running.targets()}"
            time.sleep(0.2)
        (target,) = running.targets()
        assert target.run_id == job.run_id and target.is_active()
        assert f"pid {proc.pid}" in target.view().owner  # trained by the CLI's process, not this one
        with pytest.raises(training.JobBusyError, match=f"training run {job.run_id}"):
            jobs.resume(job.run_id, epochs=300)  # the CLI holds the machine's trainer
        with pytest.raises(runs.RunError, match=f"run {job.run_id} is being trained by another process"):
            training.resume_job(job.run_id, epochs=300)  # and the run's claim
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert runs.load_run(job.run_id).status == "interrupted"  # its trainer is gone: the run is free
    done = runs.load_run(job.run_id).epochs_done
    again = jobs.resume(job.run_id, epochs=done + 1)  # as the page's Resume does: a job process of its own
    (target,) = running.targets()
    assert target.run_id == job.run_id and target.is_active()
    assert again.wait(180) and runs.load_run(job.run_id).status == "completed", (again.run_dir / jobs.JOB_LOG).read_text()[-2000:]
    assert f"pid {again.process.pid}" in target.view().owner


def test_streamlit_skips_its_full_garbage_collection_after_every_rerun():
    """Streamlit's default gc.collect() after each script run costs 100-300 ms of GIL with
    TensorFlow loaded, per tab per refresh; the project's config turns it off, and Streamlit
    (run from the project folder, as `streamlit run dashboard.py` is) reads it so."""
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.get_option('runner.postScriptGC'), config.get_option('server.address'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "127.0.0.1"], out.stderr
