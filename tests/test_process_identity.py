"""Who trains a run: status.json records the trainer's pid with its start time and the boot (for
people, "host, pid N"); whether that trainer is alive is the run claim's answer, not the record's: a
run reads as running while some process of this host holds its claim, and as interrupted once that
process is gone, whatever pid status.json names."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_core import jobs, runs, trainer_lock
from cifar_core.runs import store
from cifar_core.config import TrainConfig
from job_helpers import resume_job, start_job

ROOT = Path(__file__).resolve().parent.parent
HAS_PROC = Path(f"/proc/{os.getpid()}/stat").is_file() and Path("/proc/sys/kernel/random/boot_id").is_file()
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="no /proc here: only the pid is recorded")


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (read here independently of the code under test)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text.rsplit(")", 1)[1].split()[19])


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


_HOLD_CLAIM = """
import sys
from cifar_core import runs
claim = runs.claim_run(runs.run_path(sys.argv[1]))
print("holding", flush=True)
sys.stdin.read()
"""


def hold_claim(run_id: str) -> subprocess.Popen:
    """Another process of this host holding the run's claim, as a job process does while it trains."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, run_id], cwd=ROOT, env=dict(os.environ),
                              text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert holder.stdout.readline().strip() == "holding", holder.stdout.read()
    return holder


def run_trained_by(run_id: str, **status_fields) -> str:
    """A run whose status.json says "running" with exactly these trainer fields (others removed)."""
    path = runs.create_run(TrainConfig(), run_id=run_id)
    status = json.loads((path / "status.json").read_text())
    for key in ("pid", "pid_start_ticks", "boot_id"):
        status.pop(key, None)
    runs.write_json(path / "status.json", {**status, **status_fields})
    return run_id


@needs_proc
def test_a_new_run_records_its_trainers_start_time_and_boot(artifacts):
    path = runs.create_run(TrainConfig(), run_id="mine")
    status = json.loads((path / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["host"] == socket.gethostname()
    assert status["pid_start_ticks"] == start_ticks(os.getpid()) and status["boot_id"] == boot_id()


@needs_proc
def test_a_job_process_records_its_own_identity(artifacts):
    job = jobs.start(TrainConfig(epochs=1, data="synthetic", train_subset=64, test_subset=32, batch_size=32))
    ticks = start_ticks(job.process.pid)  # read while it lives (it loads TensorFlow now)
    status = json.loads((job.run_dir / "status.json").read_text())
    assert status["pid"] == job.process.pid != os.getpid() and status["host"] == socket.gethostname()
    assert status["pid_start_ticks"] == ticks and status["boot_id"] == boot_id()
    assert job.wait(180) and runs.load_run(job.run_id).status == "completed", \
        (job.run_dir / jobs.JOB_LOG).read_text()[-2000:]
    assert json.loads((job.run_dir / "status.json").read_text())["pid"] == job.process.pid  # kept to the end


@needs_proc
def test_a_recorded_identity_of_a_live_process_does_not_make_a_run_alive(artifacts):
    other = os.getppid()  # alive for the whole test: the process that started pytest
    same = run_trained_by("same", pid=other, pid_start_ticks=start_ticks(other), boot_id=boot_id())
    mine = run_trained_by("mine", pid=os.getpid(), pid_start_ticks=start_ticks(os.getpid()), boot_id=boot_id())
    assert runs.load_run(same).status == "interrupted"  # nobody holds its claim: its trainer is gone
    assert runs.load_run(mine).status == "interrupted"
    with runs.claim_run(runs.run_path(same)):  # the control: the claim held, the same record reads running
        assert runs.load_run(same).status == "running"


def test_a_trainer_reads_as_running_while_it_holds_the_claim_and_interrupted_once_killed(artifacts):
    run_id = run_trained_by("claimed", pid=2**22 + 4321)  # whatever pid it names: above any pid_max
    holder = hold_claim(run_id)
    try:
        assert runs.load_run(run_id).status == "running"
        assert runs.claim_held(runs.run_path(run_id))
        holder.kill()
        holder.wait(10)
        assert runs.load_run(run_id).status == "interrupted"
        assert not runs.claim_held(runs.run_path(run_id))
    finally:
        holder.kill()
        holder.wait(10)


def test_a_killed_trainer_not_yet_reaped_reads_as_interrupted(artifacts):
    # A zombie still answers kill(pid, 0), and its pid is still its own; the OS let its claim go.
    holder = None
    try:
        holder = hold_claim(run_trained_by("zombie"))
        runs.update_status(runs.run_path("zombie"), pid=holder.pid, host=socket.gethostname(),
                           **({"pid_start_ticks": start_ticks(holder.pid), "boot_id": boot_id()} if HAS_PROC else {}))
        assert runs.load_run("zombie").status == "running"
        holder.send_signal(signal.SIGKILL)
        os.waitid(os.P_PID, holder.pid, os.WEXITED | os.WNOWAIT)  # dead, still unreaped
        assert runs.load_run("zombie").status == "interrupted"
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(10)


def test_an_old_status_without_start_time_or_boot_reads_as_its_claim_says(artifacts):
    old = run_trained_by("old", pid=os.getppid())  # written before start times were recorded
    assert runs.load_run(old).status == "interrupted"
    with runs.claim_run(runs.run_path(old)):
        assert runs.load_run(old).status == "running"


def test_without_proc_only_the_pid_is_recorded_and_the_claim_still_decides(artifacts, monkeypatch):
    monkeypatch.setattr(store, "_proc_stat", lambda pid: None)
    monkeypatch.setattr(store, "_boot_id", lambda: None)
    monkeypatch.setattr(trainer_lock, "_proc_locks", lambda: None)  # no /proc/locks: a shared try instead
    path = runs.create_run(TrainConfig(), run_id="no-proc")
    status = json.loads((path / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["pid_start_ticks"] is None and status["boot_id"] is None
    holder = hold_claim("no-proc")
    try:
        assert runs.load_run("no-proc").status == "running"
    finally:
        holder.kill()
        holder.wait(10)
    assert runs.load_run("no-proc").status == "interrupted"


@needs_proc
def test_a_resumed_run_records_the_resuming_process(artifacts, tiny_data):
    job = start_job(TrainConfig(epochs=1, architecture="airbench", widths=(8, 16, 16), batch_size=32,
                                data="synthetic"), dataset=tiny_data)
    assert job.join(120) and job.snapshot().status == "completed"
    runs.update_status(job.run_dir, pid_start_ticks=1, boot_id="an earlier boot")  # as if written before
    resumed = resume_job(job.run_id, dataset=tiny_data, epochs=2)
    assert resumed.join(120) and resumed.snapshot().status == "completed"  # written once training began
    status = json.loads((job.run_dir / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["pid_start_ticks"] == start_ticks(os.getpid())
    assert status["boot_id"] == boot_id()


def test_a_claim_held_by_another_process_is_seen_from_a_third(artifacts):
    # The same answer from a fresh interpreter: neither the reader nor the recorded pid is the trainer.
    held, free = run_trained_by("elsewhere", pid=os.getpid()), run_trained_by("nobody", pid=os.getpid())
    holder = hold_claim(held)
    try:
        code = f"from cifar_core import runs; print(runs.load_run({held!r}).status, runs.load_run({free!r}).status)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=ROOT, env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["running", "interrupted"]
    finally:
        holder.kill()
        holder.wait(10)
