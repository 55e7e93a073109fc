"""A training job's live state: what the trainer thread publishes and every reader copies."""
from __future__ import annotations

import copy
import dataclasses
import threading
import time
from typing import Any, Optional

from cifar_core import runs
from cifar_core.config import TrainConfig

MAX_BATCH_POINTS = 2000  # per-batch curve length kept in memory; older points are thinned
LIVE_POINTS = 500  # per-batch curve length watchers get (dashboard tabs, live.json): a chart's worth
ACTIVE_STATUSES = ("preparing", *runs.ACTIVE)  # "preparing" lives only in memory


@dataclasses.dataclass
class JobSnapshot:
    """A consistent copy of a job's live state, safe to read from any thread."""

    run_id: str
    status: str  # preparing, running, stopping, completed, stopped, failed
    message: str  # what the job is doing now, for people
    config: TrainConfig
    epoch: int = 0  # 1-based epoch in progress (or last one)
    epochs: int = 0
    initial_epoch: int = 0  # epochs already done before this job (resume)
    batch: int = 0  # batches done in the current epoch
    batches_per_epoch: int = 0
    batch_steps: list[float] = dataclasses.field(default_factory=list)  # global step (epochs, fractional)
    batch_loss: list[float] = dataclasses.field(default_factory=list)  # running mean within the epoch
    batch_accuracy: list[float] = dataclasses.field(default_factory=list)
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    images_per_second: Optional[float] = None
    eta_seconds: Optional[float] = None
    started_at: float = 0.0
    finished_at: Optional[float] = None
    error: Optional[str] = None
    metrics: Optional[dict[str, Any]] = None
    version: int = 0  # of the curves: a watcher redraws its charts only when this changes
    owner: str = ""  # who trains it, when read from a run folder ("host, pid N")

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def progress(self) -> float:
        """Fraction of all epochs done, 0..1."""
        if not self.epochs:
            return 0.0
        within = self.batch / self.batches_per_epoch if self.batches_per_epoch else 0.0
        done = max(0, self.epoch - 1) + within if self.status in ACTIVE_STATUSES else len(self.history.get("loss", []))
        return min(1.0, max(0.0, done / self.epochs))


class JobState:
    """The lock-protected state the callback writes and every reader copies."""

    def __init__(self, run_id: str, config: TrainConfig, history: dict[str, list[float]], initial_epoch: int):
        self._lock = threading.Lock()
        self._snap = JobSnapshot(
            run_id=run_id, status="preparing", message="Preparing", config=config,
            epochs=config.epochs, initial_epoch=initial_epoch, epoch=initial_epoch,
            history=copy.deepcopy(history), started_at=time.time(),
        )
        self._published = copy.deepcopy(self._snap)

    def publish(self) -> JobSnapshot:
        """A copy for watchers, curves thinned to LIVE_POINTS, kept as the one `view` serves
        until the next publish. The publisher calls this every couple of seconds; every tab's
        once-a-second refresh then shares one version of the curves instead of copying and
        charting 2,000 points each time."""
        with self._lock:
            return self._publish_locked()

    def _publish_locked(self) -> JobSnapshot:
        s = self._snap
        keep = thin_indices(len(s.batch_steps), LIVE_POINTS)
        def points(values: list[float]) -> list[float]:  # 6 digits: half the JSON, nothing a chart shows
            return [float(f"{values[i]:.6g}") for i in keep]

        self._published = dataclasses.replace(
            s, batch_steps=points(s.batch_steps), batch_loss=points(s.batch_loss),
            batch_accuracy=points(s.batch_accuracy), history=copy.deepcopy(s.history),
            metrics=copy.deepcopy(s.metrics), version=self._published.version + 1)
        return self._published

    def view(self) -> JobSnapshot:
        """The live progress (status, epoch, batch, rate) with the curves as last published; a
        job that has ended is published at once, so its final curves are never stale. The curves
        are shared with other readers: treat them as read-only."""
        with self._lock:
            if self._snap.status not in ACTIVE_STATUSES and self._published.status != self._snap.status:
                self._publish_locked()
            p = self._published
            return dataclasses.replace(self._snap, batch_steps=p.batch_steps, batch_loss=p.batch_loss,
                                       batch_accuracy=p.batch_accuracy, history=p.history, version=p.version)

    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return copy.deepcopy(self._snap)

    def get(self, name: str) -> Any:
        """One scalar field, without copying the curves (the callback asks every batch)."""
        with self._lock:
            return getattr(self._snap, name)

    def update(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._snap, k, v)

    def request_stop(self) -> bool:
        """The one transition a Stop makes: an active job that is not already stopping becomes
        "stopping". False (and nothing changes) when the job has finished or is stopping."""
        with self._lock:
            if self._snap.status not in ACTIVE_STATUSES or self._snap.status == "stopping":
                return False
            self._snap.status = "stopping"
            self._snap.message = "Stopping after this batch, then saving"
            return True

    def start_running(self, **fields: Any) -> None:
        """preparing -> running, unless a Stop already made it "stopping" (which must stick)."""
        with self._lock:
            if self._snap.status == "preparing":
                self._snap.status = "running"
            for k, v in fields.items():
                setattr(self._snap, k, v)

    def add_batch(self, step: float, loss: float, accuracy: float) -> None:
        with self._lock:
            s = self._snap
            s.batch_steps.append(step)
            s.batch_loss.append(loss)
            s.batch_accuracy.append(accuracy)
            if len(s.batch_steps) > MAX_BATCH_POINTS:  # keep every other point: bounded memory, same shape
                s.batch_steps[:] = s.batch_steps[::2]
                s.batch_loss[:] = s.batch_loss[::2]
                s.batch_accuracy[:] = s.batch_accuracy[::2]

    def add_epoch(self, logs: dict[str, float]) -> dict[str, list[float]]:
        with self._lock:
            for k, v in logs.items():
                self._snap.history.setdefault(k, []).append(float(v))
            return copy.deepcopy(self._snap.history)


def thin_indices(n: int, limit: int) -> list[int]:
    """At most `limit` indices spread evenly over range(n), the first and last always kept."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
