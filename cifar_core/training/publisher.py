"""A run's live state in its own folder, so that any process can watch it and ask it to stop.

The trainer's publisher thread writes `live.json` (atomically) every PUBLISH_SECONDS while the
job runs, and once more when it ends: status, epoch, batch, images/s, ETA, the per-batch curve
thinned to a chart's worth of points, and the history. The file's age is the heartbeat of a
trainer on another host. A watcher that wants the run stopped writes `stop_request.json` next to
it; the publisher sees it within STOP_POLL_SECONDS and stops the job.

Every job is a process of its own (cifar_core/jobs), so this folder is how the dashboard, the CLI
and the sweep workers watch and stop any of them, a cluster's chief on shared storage included.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

from cifar_core import runs
from cifar_core.runs.heartbeat import LIVE_FILE
from cifar_core.training.state import JobSnapshot

STOP_FILE = "stop_request.json"
PUBLISH_SECONDS = 2.0  # live.json's period while training
STOP_POLL_SECONDS = 0.5  # how soon a stop request in the folder is seen (a stat, nothing read)
_FIELDS = ("status", "message", "epoch", "epochs", "initial_epoch", "batch", "batches_per_epoch", "batch_steps",
           "batch_loss", "batch_accuracy", "history", "images_per_second", "eta_seconds", "started_at",
           "finished_at", "error", "metrics", "version")


def to_record(snap: JobSnapshot) -> dict[str, Any]:
    """What live.json holds: the snapshot without its config (the run folder has config.json)."""
    record = {name: getattr(snap, name) for name in _FIELDS}
    record.update(run_id=snap.run_id, updated_at=time.time(), host=socket.gethostname(), pid=os.getpid())
    return record


def from_record(record: dict[str, Any], run: runs.Run) -> JobSnapshot:
    """A snapshot from live.json, with the run folder's word on the status: a trainer that died
    without a final status reads as interrupted, as everywhere else in the lab."""
    fields = {name: record[name] for name in _FIELDS if name in record}
    owner = f"{record.get('host', '?')}, pid {record.get('pid', '?')}"
    snap = JobSnapshot(run_id=run.run_id, config=run.config, owner=owner,
                       **{"status": "running", "message": "", **fields})
    return _settle(snap, run)


def _settle(snap: JobSnapshot, run: runs.Run) -> JobSnapshot:
    if run.status != snap.status and run.status not in runs.ACTIVE:
        # The folder is final (or the trainer is gone) while live.json still says it runs.
        messages = {"interrupted": "Interrupted: its trainer stopped without saying so (killed or crashed)",
                    "completed": "Finished", "stopped": "Stopped by request", "failed": f"Failed: {run.error}"}
        snap = dataclasses.replace(snap, status=run.status, message=messages.get(run.status, run.status),
                                   error=run.error, metrics=run.metrics or snap.metrics,
                                   finished_at=run.finished_at or run.last_write_at, eta_seconds=None)
    return snap


def read(run: runs.Run) -> Optional[JobSnapshot]:
    """The live view of a run folder; from its history and status alone when it has no live.json
    (written by an older version, or the trainer has not published yet). None for a broken run."""
    if run.broken or run.config is None:
        return None
    try:
        record = runs.read_json(run.path / LIVE_FILE)
        if not isinstance(record, dict):
            raise runs.RunError("live.json is not an object")
        return from_record(record, run)
    except (runs.RunError, TypeError, ValueError):
        done = run.epochs_done
        snap = JobSnapshot(run_id=run.run_id, status=run.status, message="Waiting for the trainer's first report",
                           config=run.config, epoch=done, epochs=run.config.epochs, history=run.history,
                           started_at=run.started_at or 0.0, finished_at=run.finished_at, metrics=run.metrics,
                           error=run.error)
        return _settle(snap, run)


def request_stop(run_dir: Path) -> None:
    """Ask the trainer of a run folder to stop after its current batch (it saves what it learned)."""
    runs.write_json(run_dir / STOP_FILE, {"requested_at": time.time(), "by": f"{socket.gethostname()}:{os.getpid()}"})


def stop_requested(run_dir: Path, since: float = 0.0) -> bool:
    """Whether a stop was asked for at or after `since` (an older request was meant for an earlier
    session of the run: a resume is not stopped by it)."""
    path = run_dir / STOP_FILE
    try:
        requested = path.stat().st_mtime
    except OSError:
        return False
    try:
        record = runs.read_json(path)
        requested = float(record.get("requested_at", requested)) if isinstance(record, dict) else requested
    except (runs.RunError, TypeError, ValueError):
        pass  # half a request, or a hand-made file: its time on disk stands
    return requested >= since


def active_runs() -> list[runs.Run]:
    """Runs training right now under the artifacts folder (their job processes alive), newest first."""
    return [r for r in runs.list_runs() if r.is_active and not r.broken]


class Publisher:
    """The thread that writes a job's live.json and watches for a stop request in its folder."""

    def __init__(self, job: Any, period: float = PUBLISH_SECONDS):
        self._job = job
        self._period = period
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"live-{job.run_id}", daemon=True)
        self.failures = 0  # writes that failed (a full disk): the job goes on, watchers see it stale
        self._writing = threading.Lock()  # the training thread (an epoch's end) and this one: one version at a time

    def start(self) -> None:
        self._thread.start()

    def publish_now(self) -> None:
        """Write live.json at once, not at the next period (a resume that just took its folder over)."""
        self._publish()

    def _publish(self) -> None:
        if not self._job.owns_folder:  # a resume writes its run folder only once training begins
            return
        with self._writing:  # a newer version never lands before an older one
            try:
                runs.write_json(self._job.run_dir / LIVE_FILE, to_record(self._job.state.publish()))
            except OSError:
                self.failures += 1

    def _loop(self) -> None:
        next_publish = 0.0
        while True:
            if time.monotonic() >= next_publish:
                self._publish()
                next_publish = time.monotonic() + self._period
            if stop_requested(self._job.run_dir, self._job.stops_since):
                self._job.stop()
            if self._done.wait(min(STOP_POLL_SECONDS, self._period)):
                return

    def finish(self) -> None:
        """The job has ended: publish its final state once more and drop any stop request."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        self._publish()
        (self._job.run_dir / STOP_FILE).unlink(missing_ok=True)
