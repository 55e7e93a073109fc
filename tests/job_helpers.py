"""Driving the trainer itself from a test: a TrainingJob run in a thread of the test process.

The product runs every job in a process of its own (cifar_core/jobs, tested in tests/test_jobs.py);
tests of the trainer (stop, resume, checkpoints, recipes, a full disk) run the very same
`TrainingJob.run` here, in a thread, so they can hand it data in memory and inject faults."""
from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from cifar_core import training


STARTED: list["ThreadedJob"] = []  # every one started, for conftest's check that none is left running


class ThreadedJob:
    """A TrainingJob running in a thread of the test; every attribute is the job's."""

    def __init__(self, job: training.TrainingJob):
        self.job = job
        self._thread = threading.Thread(target=job.run, name=f"test-train-{job.run_id}", daemon=True)
        STARTED.append(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)

    def start(self) -> "ThreadedJob":
        self._thread.start()
        return self

    def join(self, timeout: Optional[float] = None) -> bool:
        """True once the job has ended (its run folder final)."""
        return self.job.wait(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()


def start_job(config, *, on_created: Optional[Callable[[Any], None]] = None, **kwargs) -> ThreadedJob:
    """`training.new_job(config, **kwargs)` running in a thread; `on_created(job)` before it starts."""
    threaded = ThreadedJob(training.new_job(config, **kwargs))
    if on_created:
        on_created(threaded)
    return threaded.start()


def resume_job(run_id: str, *, on_created: Optional[Callable[[Any], None]] = None, **kwargs) -> ThreadedJob:
    """`training.resume_job(run_id, **kwargs)` running in a thread; `on_created(job)` before it starts."""
    threaded = ThreadedJob(training.resume_job(run_id, **kwargs))
    if on_created:
        on_created(threaded)
    return threaded.start()


def stop_everything(timeout: float = 120.0) -> None:
    """Stop every threaded job and every job process under the artifacts folder in use, and wait
    until each has ended (its claim let go)."""
    import time

    from cifar_core import runs
    from cifar_core.training import publisher

    while STARTED:
        job = STARTED.pop()
        if job.is_alive:
            job.stop()
            assert job.join(timeout), f"the threaded job {job.run_id} did not stop within {timeout:.0f} s"
    deadline = time.monotonic() + timeout
    for run in publisher.active_runs():
        publisher.request_stop(run.path)
    while publisher.active_runs():
        assert time.monotonic() < deadline, f"job processes still train after {timeout:.0f} s: " \
                                            f"{[r.run_id for r in publisher.active_runs()]}"
        time.sleep(0.2)


class WatchedRun:
    """A run training in a job process of its own, watched as the pages watch it: through its folder."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    @property
    def run(self):
        from cifar_core import runs

        return runs.load_run(self.run_id)

    @property
    def run_dir(self):
        return self.run.path

    @property
    def config(self):
        return self.run.config

    def snapshot(self):
        from cifar_core.training import publisher

        return publisher.read(self.run)

    def join(self, timeout: Optional[float] = None) -> bool:
        """True once the run's job process has let its claim go (its folder is final)."""
        import time

        from cifar_core import runs

        deadline = None if timeout is None else time.monotonic() + timeout
        while runs.claim_held(self.run_dir):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def stop(self) -> None:
        from cifar_core.training import publisher

        publisher.request_stop(self.run_dir)


def newest_run() -> Optional[WatchedRun]:
    """The run started last under the artifacts folder in use, or None."""
    from cifar_core import runs

    found = runs.list_runs()
    return WatchedRun(found[0].run_id) if found else None
