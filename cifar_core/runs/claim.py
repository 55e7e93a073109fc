"""Which process trains a run folder: an OS lock (flock) on a file inside it, held open by the
training process for the life of its job and let go by the OS however that process ends.

This is the one answer on this machine to "is the run's trainer alive?" (`claim_held`): a launcher
claims the fresh folder and passes the descriptor to the job process it starts, so the claim is held
from the folder's first moment to the job's last."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Optional

from cifar_core.runs.store import RunError
from cifar_core.trainer_lock import held

CLAIM_FILE = ".trainer.lock"  # kept in the folder: removing it would let two processes lock two files


class Claim:
    """A run folder held by this process; `release` (or the process's end) lets it go."""

    def __init__(self, fd: int):
        self._fd: Optional[int] = fd

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError("the claim was released")
        return self._fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the open file drops its flock

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run(run_dir: Path) -> Claim:
    """Hold `run_dir` for training (or deleting) it. Not a check of status files: the lock is taken
    or refused atomically, so two processes cannot both hold it.

    Raises:
      RunError: another process holds the folder, or it is missing or cannot be locked.
    """
    try:
        fd = os.open(run_dir / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
    except FileNotFoundError:
        raise RunError(f"no run {run_dir.name!r} in {run_dir.parent}") from None
    except OSError as exc:
        raise RunError(f"cannot lock run {run_dir.name} ({exc.strerror or exc})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunError(f"run {run_dir.name} is being trained by another process") from None
    except OSError as exc:
        os.close(fd)
        raise RunError(f"cannot lock run {run_dir.name} ({exc.strerror or exc})") from exc
    return Claim(fd)


def adopt_claim(fd: int) -> Claim:
    """The claim a launcher passed to this process as descriptor `fd` (already held)."""
    return Claim(fd)


def claim_held(run_dir: Path) -> bool:
    """Whether a process on this machine holds the run folder's claim (looked at, not taken)."""
    return held(Path(run_dir) / CLAIM_FILE)
