"""One owner of the trainer per machine: an OS lock (flock) on `artifacts/trainer.lock`.

Training, the probe and the learning-rate finder each hold it for as long as they use the CPU or
GPU, so none of them measures or trains beside another. It is taken atomically (never "check,
then start"): a Start click, a queue or sweep worker, the probe and the finder either get it or
are refused, with the holder's own words of what it is doing, or wait for it. Two servers, the
CLI and sweep workers sharing one artifacts folder share the one lock; the OS lets it go however
its holder ends (a kill included).

A launcher that takes the lock for a job process passes the open descriptor to the child
(`subprocess.Popen(pass_fds=...)`): the lock belongs to the open file, so the child holds it from
the moment it exists and the machine is never free in between. `held()` tells whether anyone holds
it without taking it (Linux's /proc/locks), so watching never disturbs a taker.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

from cifar_core.paths import artifacts_dir

LOCK_FILE = "trainer.lock"
WAIT_POLL_SECONDS = 0.5  # a waiting taker tries again this often (and checks its stop event)


class JobBusyError(RuntimeError):
    """The machine's trainer is held by another job, the probe or the learning-rate finder."""


def lock_path() -> Path:
    return artifacts_dir() / LOCK_FILE


class TrainerLock:
    """The machine's trainer, held through one open descriptor; `release` (or the end of every
    process holding the descriptor) lets it go."""

    def __init__(self, fd: int, path: Path):
        self._fd: Optional[int] = fd
        self.path = path

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError("the trainer lock was released")
        return self._fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def describe(self, what: str, **details: Any) -> None:
        """Say what the holder is doing, for those refused or waiting: written into the lock file
        itself (only the holder writes it; a reader trusts it only while the lock is held)."""
        record = {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), **details}
        data = json.dumps(record).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the last descriptor of the open file closed: the flock goes with it

    def __enter__(self) -> "TrainerLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # O_CLOEXEC by default: passed to a child only on purpose


def take(what: str, *, wait: bool = False, stop: Optional[threading.Event] = None,
         timeout: Optional[float] = None, **details: Any) -> Optional[TrainerLock]:
    """Hold the machine's trainer for `what` ("training run X", "the probe", ...).

    Without `wait`, a held lock raises JobBusyError saying who holds it. With `wait`, try again
    every WAIT_POLL_SECONDS until it is free, `stop` is set or `timeout` passes; then None.
    """
    path = lock_path()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if not wait:
                raise JobBusyError(busy_reason()) from None
            if (stop is not None and stop.wait(WAIT_POLL_SECONDS)) or \
                    (deadline is not None and time.monotonic() > deadline):
                return None
            if stop is None:
                time.sleep(WAIT_POLL_SECONDS)
            continue
        lock = TrainerLock(fd, path)
        lock.describe(what, **details)
        return lock


def adopt(fd: int) -> TrainerLock:
    """The lock a launcher passed to this process as descriptor `fd` (already held)."""
    return TrainerLock(fd, lock_path())


def held(path: Optional[Path] = None) -> bool:
    """Whether any process holds the flock on `path` (default: the trainer lock), without taking it."""
    path = path or lock_path()
    try:
        st = path.stat()
    except OSError:
        return False
    locks = _proc_locks()
    if locks is not None:
        return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in locks
    # No /proc/locks (not Linux): a shared try, let go at once. It may make a taker at that very
    # instant fail once, which takers that wait retry; never the other way round.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _proc_locks() -> Optional[set[tuple[int, int, int]]]:
    """(major, minor, inode) of every file with an flock, from /proc/locks; None without it."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    found = set()
    for line in text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (blocked waiters have "->" first)
        if len(parts) >= 6 and "FLOCK" in parts[1:3]:
            ident = parts[5] if parts[1] != "->" else parts[6]
            try:
                major, minor, inode = ident.split(":")
                found.add((int(major, 16), int(minor, 16), int(inode)))
            except ValueError:
                continue
    return found


def holder() -> Optional[dict[str, Any]]:
    """What the lock's holder said it is doing, while the lock is held; None when the machine is free."""
    path = lock_path()
    if not held(path):
        return None
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        record = {}
    return record if isinstance(record, dict) else {}


def busy_reason(record: Optional[dict[str, Any]] = None) -> str:
    """The machine is busy, in people's words: what holds it, where and since when."""
    record = record if record is not None else (holder() or {})
    what = record.get("what") or "another job"
    where = f"{record.get('host', '?')}, pid {record.get('pid', '?')}" if record.get("pid") else "another process"
    since = record.get("since")
    age = f" for {max(0, int(time.time() - since))} s" if isinstance(since, (int, float)) else ""
    return f"the machine's trainer is busy: {what} ({where}){age}; stop it or wait for it to finish"
