"""Training jobs as processes of their own.

Every job (a run started from the page, a queued run, a sweep trial, a resume, a TTA evaluation) is
a process of its own, started here: `start` and `resume` take the machine's trainer lock (cifar_core/trainer_lock.py)
and the run folder's claim, hand both open descriptors to a new `python -m cifar_core.jobs.process`
and return once that process has taken them over. From then on the run folder is the only
interface between the job and whoever watches or stops it: status.json, live.json,
stop_request.json and the claim. Nothing trains in the process that asked: not the dashboard's
server, not a sweep worker. `run_here` is the other way in: the CLI's `train` and `resume` make
the CLI's own process the job's, under the same lock.

A job killed outright leaves its claim free, so its run reads as interrupted, and resumable.

May import: config, files, paths, quiet, trainer_lock, data, recipes, models, runs, insight, planning, training.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from cifar_core import runs, trainer_lock
from cifar_core.config import TrainConfig
from cifar_core.paths import ARTIFACTS_ENV, artifacts_dir
from cifar_core.runs.store import PLAN_FILE
from cifar_core.trainer_lock import JobBusyError, TrainerLock  # noqa: F401 (re-exported)

JOB_LOG = "job.log"  # the job process's own output (TensorFlow's lines, a crash's traceback)
READY_SECONDS = 120.0  # a job process takes its lock and claim over within this (Python starts, no TensorFlow yet)
PROCESS_MODULE = "cifar_core.jobs.process"


class Job:
    """A job process started here: its run, and the process (to wait for; stop goes through the folder)."""

    def __init__(self, run_id: str, run_dir: Path, process: subprocess.Popen, started_seconds: float):
        self.run_id = run_id
        self.run_dir = run_dir
        self.process = process
        self.started_seconds = started_seconds  # from the call to the job process's word that it holds the run

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the job process to end; True once it has."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll()

    def stop(self) -> None:
        """Ask the job to save and end after its current batch, through its run folder."""
        from cifar_core.training import publisher

        publisher.request_stop(self.run_dir)


def start(config: TrainConfig, *, name: str = "", tags: Any = (), plan: Optional[dict[str, Any]] = None,
          status: Optional[dict[str, Any]] = None, lock: Optional[TrainerLock] = None, bound: bool = False) -> Job:
    """Start training a new run in a job process; returns once that process holds the run.

    `lock`: the trainer lock the caller already holds (a sweep worker waited for it); it passes to
    the job process and the caller's copy is let go. Without it the lock is taken here, or the call
    is refused. `status`: extra status.json fields (a sweep trial's record). `bound`: the job stops
    (saved, marked stopped) when this process dies, as a sweep trial must; otherwise it outlives
    the process that started it (a server restart does not end a run started from its page).

    Raises:
      JobBusyError: the machine's trainer is held (the message says by what).
      DataError: the data source does not exist or holds no CIFAR-10 data.
      runs.RunError: the artifacts folder is not writable or nearly full, or the process did not start.
      ValueError: a name or tag that `runs.clean_meta` refuses.
    """
    from cifar_core.data import locate_source, resolve_source

    config = config.replace(data=resolve_source(config.data))
    locate_source(config.data)  # a typo or an empty folder is refused before the lock or a run folder
    runs.clean_meta(name=name, tags=tags)
    runs.check_writable(runs.runs_dir())  # an unwritable or full artifacts folder: refused before the lock
    began = time.monotonic()
    lock = lock or trainer_lock.take("starting a training run")
    claim: Optional[runs.Claim] = None
    run_dir: Optional[Path] = None
    try:
        run_dir = runs.create_run(config, name=name, tags=tags)
        claim = runs.claim_run(run_dir)  # a fresh folder: nobody else holds it
        if plan is not None:
            runs.write_json(run_dir / PLAN_FILE, plan)
        if status:
            runs.update_status(run_dir, **status)
        lock.describe(f"training run {run_dir.name}", run_id=run_dir.name)
        process = _spawn(["new", str(run_dir)], lock, claim, run_dir, bound)
    except BaseException as exc:
        if run_dir is not None and run_dir.is_dir():  # the folder says why it never trained
            runs.update_status(run_dir, status="failed", finished_at=time.time(),
                               error=f"the job process did not start: {exc}")
        raise
    finally:
        if claim is not None:
            claim.release()  # the job process holds its own descriptor now (or nobody: it failed)
        lock.release()
    return Job(run_dir.name, run_dir, process, time.monotonic() - began)


def resume(run_id: str, *, epochs: Optional[int] = None, lock: Optional[TrainerLock] = None,
           bound: bool = False) -> Job:
    """Continue a run in a job process, as `training.resume_job` describes; returns once that
    process holds the run (which changes nothing in its folder until training begins).

    Raises:
      JobBusyError: the machine's trainer is held.
      runs.RunError: another process trains the run, or it cannot be resumed (the message says why).
      DataError: the run's data source no longer exists.
    """
    from cifar_core import training

    began, asked = time.monotonic(), time.time()
    lock = lock or trainer_lock.take(f"resuming run {run_id}", run_id=run_id)
    try:
        job = training.resume_job(run_id, epochs=epochs)  # every check, under the run's claim
        claim = job.claim
        try:
            lock.describe(f"resuming run {run_id}", run_id=run_id)
            args = ["resume", run_id, "--stops-since", repr(asked)] + ([] if epochs is None else ["--epochs", str(epochs)])
            process = _spawn(args, lock, claim, job.run_dir, bound)
        finally:
            claim.release()
    finally:
        lock.release()
    return Job(run_id, job.run_dir, process, time.monotonic() - began)


def evaluate_tta(run_id: str, level: str) -> Job:
    """Evaluate a run's model with test-time augmentation in a job process of its own, holding the
    machine's trainer (it predicts the test set 2 or 6 times); the result lands in the run folder
    (`insight.evaluation.recorded_tta`). Returns once the process holds the machine.

    Raises:
      JobBusyError: the machine's trainer is held.
      runs.RunError: no such run, or it has no model yet.
    """
    run = runs.load_run(run_id)
    if run.model_path is None:
        raise runs.RunError(f"run {run_id} has no saved model yet")
    began = time.monotonic()
    with trainer_lock.take(f"TTA evaluation of run {run_id} ({level})", run_id=run_id, tta=level) as lock:
        process = _spawn(["tta", run_id, "--level", level], lock, None, run.path, bound=False)
    return Job(run_id, run.path, process, time.monotonic() - began)


def _spawn(args: list[str], lock: TrainerLock, claim: Optional[runs.Claim], run_dir: Path,
           bound: bool) -> subprocess.Popen:
    """The job process, holding `lock` and `claim` (inherited descriptors); returns once it said
    it holds them, or raises RunError with what it printed before it died."""
    # the job imports this very cifar_core, wherever the caller's cwd is (`streamlit run /elsewhere/dashboard.py`)
    source = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, ARTIFACTS_ENV: str(artifacts_dir()),
           "PYTHONPATH": source if not path else os.pathsep.join([source, path])}
    fds = (lock.fd,) if claim is None else (lock.fd, claim.fd)
    command = [sys.executable, "-m", PROCESS_MODULE, *args, "--lock-fd", str(lock.fd)]
    if claim is not None:
        command += ["--claim-fd", str(claim.fd)]
    if bound:
        command += ["--parent", str(os.getpid())]
    with open(run_dir / JOB_LOG, "ab") as log:
        # bound: in this process's group, so a Ctrl-C at the terminal reaches the job as well
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                   pass_fds=fds, start_new_session=not bound, env=env)
    try:
        said = _first_line(process, READY_SECONDS)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.stdout.close()
    if said != "ready":
        process.kill()
        process.wait()
        raise runs.RunError(f"the job process did not start: {_last_line(run_dir / JOB_LOG) or said or 'no word'}")
    threading.Thread(target=process.wait, name=f"reap-{run_dir.name}", daemon=True).start()  # no zombie left
    return process


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(process.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return process.stdout.readline().decode(errors="replace").strip()


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# --- the job in this very process: the CLI's train and resume -----------------------------------

def run_here(make: Callable[[], Any], *, what: str, wait: bool = False,
             on_start: Optional[Callable[[Any], None]] = None) -> Any:
    """Hold the machine's trainer (refused when busy, or waited for), make the job with `make` and
    train it in this thread; SIGINT and SIGTERM ask it to save and stop (a second one abandons it).
    `on_start(job)` runs before training (the CLI's progress printer). Returns the ended job.

    A cluster's non-chief worker takes no lock: it is part of its chief's job."""
    from cifar_core.training import distributed

    lock = trainer_lock.take(what, wait=wait) if distributed.current().is_chief else None
    try:
        job = make()
        if lock is not None:
            lock.describe(f"training run {job.run_id}", run_id=job.run_id)
        with stop_on_signals(job.stop):
            if on_start:
                on_start(job)
            return job.run()
    finally:
        if lock is not None:
            lock.release()


class stop_on_signals:
    """While in the block, SIGINT and SIGTERM ask for a stop: `stop` is called once, from a thread
    of its own (a handler runs in the main thread between two bytecodes, maybe inside a lock
    `stop` needs, so it only sets an event); a second signal raises KeyboardInterrupt, abandoning
    the save. `watch_parent=PID` asks for the stop, the same way, once this process's parent is no
    longer PID (the process that started it died; polled, as a repeated parent-death signal would
    look like a second Ctrl-C). Signal handlers are installed from the main thread only."""

    POLL_SECONDS = 0.5

    def __init__(self, stop: Callable[[], Any], *, watch_parent: Optional[int] = None):
        self._stop = stop
        self._parent = watch_parent
        self._count = 0
        self._asked = threading.Event()
        self._done = threading.Event()
        self._before: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self._count += 1
        if self._count > 1:
            raise KeyboardInterrupt
        self._asked.set()

    def _watch(self) -> None:
        poll = self.POLL_SECONDS if self._parent is not None else None  # no parent to watch: just wait
        while not self._done.is_set():
            if self._asked.wait(poll) or (self._parent is not None and os.getppid() != self._parent):
                break
        if not self._done.is_set():
            self._stop()

    def __enter__(self) -> "stop_on_signals":
        if threading.current_thread() is threading.main_thread():  # Python takes signals there only
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._before[sig] = signal.signal(sig, self._handle)
        threading.Thread(target=self._watch, name="stop-on-signals", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._before.items():
            signal.signal(sig, handler)
        self._done.set()
        self._asked.set()  # wakes the watcher, which sees the block ended and calls nothing

    @property
    def signalled(self) -> bool:
        return self._count > 0
