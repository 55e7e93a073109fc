"""Every training job is a process of its own, one trainer lock per machine, and the unattended
machinery (the queue, sweep workers, the dashboard's runner) keeps its promises: a stop or a signal
saves the run, a killed job reads as interrupted and resumes, a worker waits for the machine, a
removed or interrupted trial ends cleanly, and nothing idles into the journal. Real job processes,
real Optuna storages, synthetic data; no mocks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from cifar_core import jobs, runs, trainer_lock
from cifar_core.config import TrainConfig
from cifar_core.sweeps import studies, worker
from cifar_core.sweeps.runner import Runner
from cifar_core.sweeps.storage import default_journal, open_storage
from job_helpers import WatchedRun

ROOT = Path(__file__).resolve().parent.parent
QUICK = dict(data="synthetic", train_subset=600, test_subset=200, batch_size=32)
TINY_ARGS = ["--data", "synthetic", "--train-subset", "600", "--test-subset", "200", "--batch-size", "32"]


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def trained_an_epoch(run_id: str) -> bool:
    try:
        return runs.load_run(run_id).epochs_done >= 1
    except runs.RunError:
        return False


def trials(name: str):
    return studies.load(name)[1].get_trials(deepcopy=False)


def cli(*args: str, artifacts: Path, new_session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "CIFAR_ARTIFACTS_DIR": str(artifacts), "CIFAR10_DATA": "synthetic"}
    return subprocess.Popen([sys.executable, "-m", "cifar_core", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=new_session)


# --- a job process, the trainer lock and the claim ------------------------------------------------

@pytest.mark.slow
def test_a_job_trains_in_its_own_process_holding_the_machine_and_its_run(artifacts):
    job = jobs.start(TrainConfig(epochs=2, **QUICK), name="own process")
    assert job.process.pid != os.getpid()
    holder = trainer_lock.holder()
    assert holder["what"] == f"training run {job.run_id}" and holder["pid"] == job.process.pid
    with pytest.raises(trainer_lock.JobBusyError, match=f"busy: training run {job.run_id}"):
        jobs.start(TrainConfig(epochs=1, **QUICK))  # a second Start anywhere: refused, with the reason
    assert [r.run_id for r in runs.list_runs()] == [job.run_id]  # and no folder made for it
    assert runs.load_run(job.run_id).status == "running" and runs.claim_held(job.run_dir)
    assert job.wait(180) and job.returncode == 0
    run = runs.load_run(job.run_id)
    assert run.status == "completed" and run.metrics["test_accuracy"] is not None
    assert json.loads((job.run_dir / "status.json").read_text())["pid"] == job.process.pid
    assert trainer_lock.holder() is None and not runs.claim_held(job.run_dir)


@pytest.mark.slow
@pytest.mark.heavy  # job processes, 10-40 s each: CI runs them (README: the default stays under 10 minutes)
def test_a_stop_while_the_process_starts_is_kept_and_sigterm_saves(artifacts):
    early = jobs.start(TrainConfig(epochs=50, **QUICK))
    early.stop()  # before TensorFlow has even loaded
    assert early.wait(120)
    assert runs.load_run(early.run_id).status == "stopped"

    job = jobs.start(TrainConfig(epochs=50, **QUICK))
    wait_for(lambda: WatchedRun(job.run_id).snapshot().batch > 0, 120, "the first batch")
    job.process.send_signal(signal.SIGTERM)  # what `kill PID` or a service manager sends
    assert job.wait(120) and job.returncode == 3  # 3: stopped by request, saved
    run = runs.load_run(job.run_id)
    assert run.status == "stopped" and (run.path / "model.keras").is_file()


@pytest.mark.slow
@pytest.mark.heavy  # job processes, 10-40 s each: CI runs them (README: the default stays under 10 minutes)
def test_a_job_killed_outright_is_interrupted_and_resumes_in_a_new_process(artifacts):
    job = jobs.start(TrainConfig(epochs=50, **QUICK))
    wait_for(lambda: trained_an_epoch(job.run_id), 180, "the first epoch")
    job.process.send_signal(signal.SIGKILL)
    assert job.wait(30)
    run = runs.load_run(job.run_id)
    assert run.status == "interrupted" and trainer_lock.holder() is None  # the OS let both locks go
    done = run.epochs_done
    resumed = jobs.resume(job.run_id, epochs=done + 1)
    assert resumed.process.pid != job.process.pid
    assert resumed.wait(180) and resumed.returncode == 0
    run = runs.load_run(job.run_id)
    assert run.status == "completed" and run.epochs_done == done + 1


@pytest.mark.slow
@pytest.mark.heavy  # job processes, 10-40 s each: CI runs them (README: the default stays under 10 minutes)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_cli_train_saves_and_marks_the_run_stopped_on_a_signal(artifacts, sig):
    process = cli("train", "--epochs", "50", *TINY_ARGS, artifacts=artifacts)
    run_id = wait_for(lambda: next((r.run_id for r in runs.list_runs()), None), 120, "the run folder")
    wait_for(lambda: WatchedRun(run_id).snapshot().batch > 0, 120, "the first batch")
    process.send_signal(sig)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    assert "stopped:" in out
    run = runs.load_run(run_id)
    assert run.status == "stopped" and (run.path / "model.keras").is_file()
    assert trainer_lock.holder() is None


def test_a_signal_landing_while_the_main_thread_holds_a_lock_stop_needs_does_not_deadlock():
    """A handler runs in the main thread between two bytecodes, possibly inside the job's state
    lock; `stop` must run elsewhere, after that lock is let go (not inside the handler)."""
    lock = threading.Lock()
    took: list[bool] = []
    called = threading.Event()

    def stop() -> None:
        took.append(lock.acquire(timeout=5))  # inside the handler this would wait on the main thread itself
        if took[-1]:
            lock.release()
        called.set()

    with jobs.stop_on_signals(stop) as stops:
        with lock:
            os.kill(os.getpid(), signal.SIGTERM)  # handled right here, lock held
            assert stops.signalled
        assert called.wait(10)
    assert took == [True]


@pytest.mark.slow
@pytest.mark.heavy  # a job process, ~20 s: CI runs it (README: the default stays under 10 minutes)
def test_a_job_process_imports_the_callers_package_from_any_working_directory(tmp_path):
    """`streamlit run /elsewhere/dashboard.py` puts the checkout on sys.path only for the server:
    the job process it starts must find the same cifar_core."""
    artifacts = tmp_path / "artifacts"
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
              "from cifar_core import jobs\nfrom cifar_core.config import TrainConfig\n"
              "job = jobs.start(TrainConfig(epochs=1, data='synthetic', train_subset=64, test_subset=32, batch_size=32))\n"
              "assert job.wait(180), 'the job did not end'\nprint(job.returncode, job.run_id)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CIFAR_ARTIFACTS_DIR"] = str(artifacts)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    code, run_id = done.stdout.split()[-2:]
    status = json.loads((artifacts / "runs" / run_id / "status.json").read_text())
    assert code == "0" and status["status"] == "completed", status.get("error")


# --- workers: the machine, signals, removal ------------------------------------------------------

@pytest.mark.slow
@pytest.mark.heavy  # job processes, 10-40 s each: CI runs them (README: the default stays under 10 minutes)
def test_a_queue_worker_waits_for_the_machine_instead_of_failing_the_run(artifacts):
    number = studies.enqueue(TrainConfig(epochs=1, **QUICK), name="waits")
    lines: list[str] = []
    stop = threading.Event()
    with trainer_lock.take("a test holding the machine (as a Start click would)") as held:
        thread = threading.Thread(target=lambda: worker.run_worker(studies.QUEUE, stop=stop, log=lines.append))
        thread.start()
        wait_for(lambda: any("waiting for the machine" in ln for ln in lines), 60, "the worker to wait")
        assert "a test holding the machine" in next(ln for ln in lines if "waiting" in ln)
        assert [t.state for t in trials(studies.QUEUE)] == [TrialState.WAITING]
        assert held.held
    thread.join(240)  # the machine is free: the worker takes it and trains the run
    assert not thread.is_alive()
    done = trials(studies.QUEUE)
    assert [t.state for t in done] == [TrialState.COMPLETE], [t.user_attrs.get("error") for t in done]
    assert runs.load_run(done[0].user_attrs["run_id"]).name == "waits" and number == 1


@pytest.mark.slow
@pytest.mark.heavy  # job processes, 10-40 s each: CI runs them (README: the default stays under 10 minutes)
def test_removing_a_queued_run_that_has_started_stops_it_cleanly(artifacts):
    studies.enqueue(TrainConfig(epochs=50, **QUICK), name="removed")
    lines: list[str] = []
    thread = threading.Thread(target=lambda: worker.run_worker(studies.QUEUE, log=lines.append))
    thread.start()
    run_id = wait_for(lambda: next((t.user_attrs.get("run_id") for t in trials(studies.QUEUE)), None), 120,
                      "the run to start")
    wait_for(lambda: WatchedRun(run_id).snapshot().batch > 0, 120, "the first batch")
    assert studies.remove(1) == "running"
    thread.join(120 + worker.CHECK_SECONDS)
    assert not thread.is_alive(), lines
    (trial,) = trials(studies.QUEUE)
    assert trial.state == TrialState.FAIL and "removed from the queue while it trained" in trial.user_attrs["error"]
    run = runs.load_run(run_id)
    assert run.status == "stopped" and (run.path / "model.keras").is_file()


@pytest.mark.heavy
@pytest.mark.parametrize("command,sig", [(("queue", "run"), signal.SIGTERM), (("sweep", "run", "s"), signal.SIGINT)],
                         ids=["queue-run-sigterm", "sweep-run-ctrl-c"])
def test_a_signalled_worker_saves_its_trials_run_and_returns_the_trial(artifacts, command, sig):
    if command[0] == "queue":
        studies.enqueue(TrainConfig(epochs=50, **QUICK), name="long")
        name = studies.QUEUE
    else:
        studies.create(studies.define("s", ["dropout=0..0.3"], TrainConfig(epochs=50, **QUICK), trials=1,
                                      pruner="none", sampler="random"))
        name = "s"
    # Ctrl-C at a terminal reaches the worker's whole process group (its job included); SIGTERM
    # is sent to the worker alone, as `kill PID` does
    process = cli(*command, artifacts=artifacts, new_session=True)
    run_id = wait_for(lambda: next((t.user_attrs.get("run_id") for t in trials(name)), None), 120, "a trial's run")
    wait_for(lambda: WatchedRun(run_id).snapshot().batch > 0, 120, "the first batch")
    if sig == signal.SIGINT:
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    out, _ = process.communicate(timeout=180)
    assert process.returncode == 130, out
    run = runs.load_run(run_id)
    assert run.status == "stopped" and (run.path / "model.keras").is_file(), out
    first, retry = sorted(trials(name), key=lambda t: t.number)
    assert first.state == TrialState.FAIL and "interrupted" in first.user_attrs["error"]
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == first.number
    assert retry.params == first.params and retry.user_attrs.get("config") == first.user_attrs.get("config")
    row = next(r for r in studies.trial_rows(*studies.load(name)) if r["trial"] == studies.display_number(retry.number))
    assert row["retry of"] == studies.display_number(first.number)
    assert row["run"] is None and row["error"] is None  # the retry has not run: its predecessor's are not its own
    assert trainer_lock.holder() is None


@pytest.mark.heavy
def test_a_killed_workers_job_stops_itself_and_the_heartbeat_retries_its_trial(artifacts, monkeypatch):
    monkeypatch.setenv("CIFAR_SWEEP_HEARTBEAT_SECONDS", "1")
    monkeypatch.setenv("CIFAR_SWEEP_GRACE_SECONDS", "5")
    studies.enqueue(TrainConfig(epochs=50, **QUICK), name="long")
    first = cli("queue", "run", artifacts=artifacts)
    run_id = wait_for(lambda: next((t.user_attrs.get("run_id") for t in trials(studies.QUEUE)), None), 120,
                      "the trial's run")
    wait_for(lambda: WatchedRun(run_id).snapshot().batch > 0, 120, "the first batch")
    first.send_signal(signal.SIGKILL)  # the worker dies; its job process, bound to it, saves and stops
    first.communicate(timeout=30)
    assert WatchedRun(run_id).join(120)
    run = runs.load_run(run_id)
    assert run.status == "stopped" and (run.path / "model.keras").is_file(), \
        (run.error, runs.read_status(run.path).get("traceback"), (run.path / "job.log").read_text()[-3000:])  # not trained on unreported
    (trial,) = trials(studies.QUEUE)
    assert trial.state == TrialState.RUNNING  # nobody has judged it yet
    second = cli("queue", "run", artifacts=artifacts)  # watches the silent trial for the grace period
    retry = wait_for(lambda: next((t for t in trials(studies.QUEUE) if t.system_attrs.get("failed_trial") == 0
                                   and t.user_attrs.get("run_id") not in (None, run_id)), None), 180,
                     "the retry to start")
    second.send_signal(signal.SIGTERM)
    out, _ = second.communicate(timeout=180)
    assert "its worker stopped beating" in out, out
    states = {t.number: t.state for t in trials(studies.QUEUE)}
    assert states[0] == TrialState.FAIL and retry.user_attrs["config"] == trial.user_attrs["config"]


# --- the dashboard's runner -----------------------------------------------------------------------

def _break_a_sweep(name: str) -> None:
    """A study as another version might have written it: the lab's attributes, a space it cannot parse."""
    import optuna

    study = optuna.create_study(study_name=name, storage=open_storage())
    for key, value in {"kind": "sweep", "space": ["no_such_field=1,2"], "base": {"epochs": "x"}}.items():
        study.set_user_attr(key, value)


@pytest.mark.slow
@pytest.mark.heavy  # job processes, 10-40 s each: CI runs them (README: the default stays under 10 minutes)
def test_the_runner_survives_a_broken_sweep_trains_the_queue_and_idles_without_writing(artifacts):
    _break_a_sweep("broken")
    studies.enqueue(TrainConfig(epochs=1, **QUICK), name="queued")
    runner = Runner()
    runner.sweeps.append("broken")
    runner.start()
    try:
        wait_for(lambda: any(t.state == TrialState.COMPLETE for t in trials(studies.QUEUE)), 240, "the queued run")
        wait_for(lambda: "broken" not in runner.sweeps, 60, "the broken sweep to be left")
        assert runner.running and any(line.startswith("broken:") for line in runner.log), runner.log
        lines = len(default_journal().read_text().splitlines())
        rounds = runner.rounds
        wait_for(lambda: runner.rounds >= rounds + 3, 30, "three idle rounds")
        assert len(default_journal().read_text().splitlines()) == lines  # an idle runner writes nothing
    finally:
        assert runner.shutdown(60)
