"""The worker registry: which worker processes are attached, on what hardware, doing what.

A worker registers when it starts (again after a restart: the name is the key), beats every
few seconds and says goodbye when it stops cleanly. One that stops beating is shown as
``lost``; its trial, if any, is dealt with by the trial's own lease, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from tuneyard.errors import NotFound
from tuneyard.service.context import Toolkit
from tuneyard.states import WorkerState
from tuneyard.store.models import Worker

# A worker that sent nothing for this many lease periods is listed as lost.
LOST_AFTER_LEASES = 1.0


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    host: str
    pid: int | None = None
    queue: str | None = None
    slots: int = 1
    gpus: tuple[dict[str, Any], ...] = ()


class WorkerService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def register(self, info: WorkerInfo) -> Worker:
        now = self.kit.clock()
        with self.kit.transaction() as s:
            w = s.scalar(select(Worker).where(Worker.name == info.name).with_for_update())
            if w is None:
                w = Worker(name=info.name)
                s.add(w)
            w.host = info.host
            w.pid = info.pid
            w.queue = info.queue
            w.slots = info.slots
            w.gpus = list(info.gpus)
            w.state = WorkerState.ACTIVE
            w.trial_id = None
            w.started_at = now
            w.last_seen_at = now
            w.stopped_at = None
            s.flush()
            return w

    def beat(self, worker_id: int, trial_id: int | None) -> Worker:
        with self.kit.transaction() as s:
            w = s.get(Worker, worker_id, with_for_update=True)
            if w is None:
                raise NotFound(f"worker {worker_id} is not registered")
            w.last_seen_at = self.kit.clock()
            w.trial_id = trial_id
            if w.state != WorkerState.ACTIVE:
                # Back after being given up as lost.
                w.state, w.stopped_at = WorkerState.ACTIVE, None
            return w

    def stop(self, worker_id: int) -> Worker:
        with self.kit.transaction() as s:
            w = s.get(Worker, worker_id, with_for_update=True)
            if w is None:
                raise NotFound(f"worker {worker_id} is not registered")
            now = self.kit.clock()
            w.state, w.trial_id, w.stopped_at = WorkerState.STOPPED, None, now
            w.last_seen_at = now
            return w

    def list(self, include_stopped: bool = False, limit: int = 500) -> list[Worker]:
        """Workers by name; an active one silent for longer than a lease is shown as lost."""
        with self.kit.transaction() as s:
            q = select(Worker).order_by(Worker.name).limit(limit)
            if not include_stopped:
                q = q.where(Worker.state != WorkerState.STOPPED)
            rows = list(s.scalars(q))
            s.expunge_all()
        cutoff = self.kit.clock() - timedelta(
            seconds=self.kit.settings.lease_seconds * LOST_AFTER_LEASES
        )
        for w in rows:
            if w.state == WorkerState.ACTIVE and w.last_seen_at < cutoff:
                w.state = WorkerState.LOST
        return rows
