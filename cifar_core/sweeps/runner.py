"""The dashboard server's runner: one background thread per process that has the queue's runs
trained one after another, then the trials of sweeps started on this server, one at a time, each in
a job process of its own, whenever the machine's trainer is free (a run started by hand goes
first; the runner waits for the trainer lock). It never trains in the server's process, and no
exception ends it: a sweep it cannot read is left with one line in its log, a storage it cannot
reach is retried."""
from __future__ import annotations

import threading
from typing import Optional

from cifar_core.sweeps import studies, worker
from cifar_core.sweeps.storage import SweepError

POLL_SECONDS = 2.0


class Runner:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.sweeps: list[str] = []  # sweeps this server works on, in the order they were started
        self.last_error: Optional[str] = None
        self.log: list[str] = []
        self.rounds = 0  # times the loop has looked for work (tests wait for it to have idled)

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="cifar-runner", daemon=True)
                self._thread.start()

    def shutdown(self, timeout: Optional[float] = None) -> bool:
        """Start no further trial; wait up to `timeout` for the thread. True once it has ended."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def work_on(self, name: str) -> None:
        """Train this sweep's trials here (after the queue) until it is done or stopped."""
        studies.load(name)  # an unknown sweep: the error reaches the caller
        with self._lock:
            if name not in self.sweeps:
                self.sweeps.append(name)
        self.start()

    def leave(self, name: str) -> None:
        """Start no further trial of this sweep here (a running one finishes)."""
        with self._lock:
            if name in self.sweeps:
                self.sweeps.remove(name)

    def _note(self, line: str) -> None:
        self.log = (self.log + [line])[-50:]

    def _one(self, name: str) -> Optional[int]:
        """One trial of `name` if it has one: 1; 0 when it had none or failed to run; None when the
        sweep is over for this server (done, stopped, or it cannot be read)."""
        try:
            did = worker.run_worker(name, stop=self._stop, max_trials=1, watch_running=False, log=self._note)
            self.last_error = None
            return did or (0 if name == studies.QUEUE else None)
        except SweepError as exc:  # an unreadable sweep (another version) or an unreachable storage
            self.last_error = str(exc)
            self._note(f"{name}: {exc}")
            return 0 if name == studies.QUEUE else None
        except Exception as exc:  # noqa: BLE001 - the runner outlives any one trial's trouble
            self.last_error = f"{name}: {type(exc).__name__}: {exc}"
            self._note(self.last_error)
            return 0

    def _loop(self) -> None:
        while not self._stop.is_set():
            did = self._one(studies.QUEUE)
            for name in list(self.sweeps):
                if did or self._stop.is_set():
                    break
                did = self._one(name)
                if did is None:  # done, stopped, over its time or unreadable: nothing more to do here
                    self.leave(name)
            self.rounds += 1
            if not did:
                self._stop.wait(POLL_SECONDS)


_runner = Runner()


def runner() -> Runner:
    """This process's runner (started by the dashboard when a page is served)."""
    return _runner
