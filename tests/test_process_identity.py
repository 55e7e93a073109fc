"""Who trains a run: status.json records the trainer's pid with its start time and the boot, so a
run whose trainer died reads as interrupted even when its pid now belongs to another process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cifar_core import runs
from cifar_core.runs import store
from cifar_core.config import TrainConfig

HAS_PROC = Path(f"/proc/{os.getpid()}/stat").is_file() and Path("/proc/sys/kernel/random/boot_id").is_file()
needs_proc = pytest.mark.skipif(not HAS_PROC, reason="no /proc here: only the pid is recorded and checked")


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/<pid>/stat (read here independently of the code under test)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text.rsplit(")", 1)[1].split()[19])


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


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
def test_a_live_pid_with_another_start_time_is_another_process(artifacts):
    other = os.getppid()  # alive for the whole test: the process that started pytest
    start = start_ticks(other)
    same = run_trained_by("same", pid=other, pid_start_ticks=start, boot_id=boot_id())
    reused = run_trained_by("reused", pid=other, pid_start_ticks=start + 1, boot_id=boot_id())
    rebooted = run_trained_by("rebooted", pid=other, pid_start_ticks=start, boot_id="not-" + boot_id())
    assert runs.load_run(same).status == "running"  # the control: the very process it recorded
    assert runs.load_run(reused).status == "interrupted"
    assert runs.load_run(rebooted).status == "interrupted"


@needs_proc
def test_a_trainer_reads_as_running_while_it_lives_and_interrupted_once_killed(artifacts):
    trainer = subprocess.Popen(["sleep", "60"])
    try:
        run_id = run_trained_by("slept", pid=trainer.pid, pid_start_ticks=start_ticks(trainer.pid), boot_id=boot_id())
        assert runs.load_run(run_id).status == "running"
        trainer.kill()
        trainer.wait(10)
        assert runs.load_run(run_id).status == "interrupted"
    finally:
        trainer.kill()
        trainer.wait(10)


@needs_proc
def test_a_killed_trainer_not_yet_reaped_reads_as_interrupted(artifacts):
    # A zombie still answers kill(pid, 0); its parent may be slow to reap it.
    trainer = subprocess.Popen(["sleep", "60"])
    try:
        run_id = run_trained_by("zombie", pid=trainer.pid, pid_start_ticks=start_ticks(trainer.pid), boot_id=boot_id())
        trainer.kill()
        os.waitid(os.P_PID, trainer.pid, os.WEXITED | os.WNOWAIT)  # dead, still unreaped
        assert runs.load_run(run_id).status == "interrupted"
    finally:
        trainer.kill()
        trainer.wait(10)


def test_an_old_status_without_start_time_or_boot_still_uses_the_pid(artifacts):
    alive = run_trained_by("old-alive", pid=os.getppid())
    dead = run_trained_by("old-dead", pid=2**22 + 4321)  # above any pid_max: no such process
    assert runs.load_run(alive).status == "running"
    assert runs.load_run(dead).status == "interrupted"


def test_without_proc_only_the_pid_is_recorded_and_checked(artifacts, monkeypatch):
    monkeypatch.setattr(store, "_proc_stat", lambda pid: None)
    monkeypatch.setattr(store, "_boot_id", lambda: None)
    path = runs.create_run(TrainConfig(), run_id="no-proc")
    status = json.loads((path / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["pid_start_ticks"] is None and status["boot_id"] is None
    alive = run_trained_by("no-proc-alive", pid=os.getppid(), pid_start_ticks=123, boot_id="recorded-elsewhere")
    assert runs.load_run(alive).status == "running"  # nothing to compare with: the live pid decides


@needs_proc
def test_a_resumed_run_records_the_resuming_process(artifacts, tiny_data):
    from cifar_core import training

    job = training.start_job(TrainConfig(epochs=1, architecture="airbench", widths=(8, 16, 16), batch_size=32,
                                         data="synthetic"), dataset=tiny_data)
    assert job.join(120) and job.snapshot().status == "completed"
    runs.update_status(job.run_dir, pid_start_ticks=1, boot_id="an earlier boot")  # as if written before
    resumed = training.resume_job(job.run_id, dataset=tiny_data, epochs=2)
    assert resumed.join(120) and resumed.snapshot().status == "completed"  # written once training began
    status = json.loads((job.run_dir / "status.json").read_text())
    assert status["pid"] == os.getpid() and status["pid_start_ticks"] == start_ticks(os.getpid())
    assert status["boot_id"] == boot_id()


def test_a_pid_recorded_in_another_process_of_this_host_is_checked_there(artifacts):
    # The same check from a fresh interpreter: the reader is not the trainer.
    trainer = subprocess.Popen(["sleep", "60"])
    try:
        fields = {"pid": trainer.pid}
        if HAS_PROC:
            fields.update(pid_start_ticks=start_ticks(trainer.pid) + 7, boot_id=boot_id())
        run_id = run_trained_by("elsewhere", **fields)
        code = f"from cifar_core import runs; print(runs.load_run({run_id!r}).status)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parent.parent, env=dict(os.environ))
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == ("interrupted" if HAS_PROC else "running")
    finally:
        trainer.kill()
        trainer.wait(10)
