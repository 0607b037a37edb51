"""The worker registry: which worker processes are attached, on what hardware, doing what.

A worker registers when it starts (again after a restart: the name is the key), beats every
few seconds and says goodbye when it stops cleanly. One that stops beating is shown as
``lost``; its trial, if any, is dealt with by the trial's own lease, not here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneyard.errors import NotFound
from tuneyard.service.context import Toolkit
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState, WorkerState
from tuneyard.store.models import Study, Worker

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
        cutoff = live_since(self.kit)
        for w in rows:
            if w.state == WorkerState.ACTIVE and w.last_seen_at < cutoff:
                w.state = WorkerState.LOST
        return rows


def live_since(kit: Toolkit) -> datetime:
    """An active worker seen after this is live; one silent since is lost."""
    return kit.clock() - timedelta(seconds=kit.settings.lease_seconds * LOST_AFTER_LEASES)


def served_queues(s: Session, queues: Collection[str], since: datetime) -> set[str]:
    """Which of ``queues`` a live worker (active, seen after ``since``) serves: one query."""
    if not queues:
        return set()
    rows = s.scalars(
        select(Worker.queue)
        .where(
            Worker.queue.in_(sorted(queues)),
            Worker.state == WorkerState.ACTIVE,
            Worker.last_seen_at >= since,
        )
        .distinct()
    )
    return {q for q in rows if q is not None}


def queue_warnings(s: Session, kit: Toolkit, studies: Sequence[Study]) -> dict[int, str]:
    """A warning for each study that waits for workers while no live worker serves its
    queue: a running study whose trials run from its queue (it has an entrypoint or a
    command), none of them running now. Ask/tell studies bring their own workers."""
    waiting: dict[int, str] = {}
    for st in studies:
        if st.state != StudyState.RUNNING or st.active > 0:
            continue
        execution = StudySpec.from_stored(st.spec).execution
        if execution is not None and (execution.entrypoint or execution.command):
            waiting[st.id] = execution.queue
    served = served_queues(s, set(waiting.values()), live_since(kit))
    return {
        sid: f"no live worker serves queue {queue!r}"
        for sid, queue in waiting.items()
        if queue not in served
    }
