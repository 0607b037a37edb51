"""The worker registry: which worker processes are attached, on what hardware, doing what.

A worker registers when it starts, beats every few seconds and says goodbye when it stops
cleanly. One that stops beating is shown as ``lost``; its trial, if any, is dealt with by the
trial's own lease, not here.

The name is the key, but a live worker keeps its name: a second worker that registers under
the name of one that is active and was seen within a lease gets the first free of
``name-2``, ``name-3``…, so two workers started with the same ``--name`` show as two rows. The
name of a worker that stopped or was lost is taken over by the next one to register it (a
restarted worker gets its row back), as is the name of the same process registering again
(same host and pid: an answer it never received).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tuneyard.errors import Conflict, NotFound
from tuneyard.service.context import Toolkit
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState, WorkerState
from tuneyard.store import counters
from tuneyard.store.models import Study, Worker

# A worker that sent nothing for this many lease periods is listed as lost.
LOST_AFTER_LEASES = 1.0
# How many suffixes a name is tried with before the registration is refused.
MAX_SUFFIX = 1000
NAME_LENGTH = 200


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
        """The worker's row, under ``info.name`` or, when a live worker holds that name,
        the first free ``name-N``. Two workers that register one new name at the same
        moment both insert it; the one that loses tries again and gets a suffix."""
        for _ in range(3):
            try:
                return self._register(info)
            except IntegrityError:
                continue  # another registration took the name in the meantime
        raise Conflict(f"worker name {info.name!r}: too many registrations at once; try again")

    def _register(self, info: WorkerInfo) -> Worker:
        now = self.kit.clock()
        live_since = now - self._lost_after()
        with self.kit.transaction() as s:
            for name in _names(info.name):
                w = s.scalar(select(Worker).where(Worker.name == name).with_for_update())
                if w is None:
                    w = Worker(name=name)
                    s.add(w)
                    break
                same = w.host == info.host and w.pid == info.pid
                if same or w.state != WorkerState.ACTIVE or w.last_seen_at < live_since:
                    break  # a dead worker's name, or this very worker's: taken over
            else:
                raise Conflict(
                    f"worker name {info.name!r}: every suffix up to {MAX_SUFFIX} is live"
                )
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

    def _lost_after(self) -> timedelta:
        return timedelta(seconds=self.kit.settings.lease_seconds * LOST_AFTER_LEASES)

    def beat(self, worker_id: int, trial_id: int | None) -> Worker:
        """The worker is alive and runs ``trial_id``; one back after being given up as lost (or
        stopped) is active again. One statement: a fleet's workers beat every few seconds."""
        with self.kit.transaction() as s:
            w = s.scalars(
                update(Worker)
                .where(Worker.id == worker_id)
                .values(
                    last_seen_at=self.kit.clock(),
                    trial_id=trial_id,
                    state=WorkerState.ACTIVE,
                    stopped_at=case(
                        (Worker.state == WorkerState.ACTIVE, Worker.stopped_at), else_=None
                    ),
                )
                .returning(Worker),
                execution_options={"synchronize_session": False},
            ).one_or_none()
            if w is None:
                raise NotFound(f"worker {worker_id} is not registered")
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


def _names(name: str) -> Iterator[str]:
    """``name``, then ``name-2``, ``name-3``… (the name shortened to leave room)."""
    yield name
    for n in range(2, MAX_SUFFIX + 1):
        suffix = f"-{n}"
        yield name[: NAME_LENGTH - len(suffix)] + suffix


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


def most_gpus_per_slot(s: Session, queues: Collection[str], since: datetime) -> dict[str, int]:
    """The most GPUs one live worker slot of each of ``queues`` has (0: only CPU slots);
    a queue no live worker serves is left out. One query."""
    if not queues:
        return {}
    rows = s.execute(
        select(Worker.queue, Worker.gpus).where(
            Worker.queue.in_(sorted(queues)),
            Worker.state == WorkerState.ACTIVE,
            Worker.last_seen_at >= since,
        )
    )
    most: dict[str, int] = {}
    for queue, gpus in rows:
        if queue is not None:
            most[queue] = max(most.get(queue, 0), len(gpus or ()))
    return most


def queue_warnings(
    s: Session,
    kit: Toolkit,
    studies: Sequence[Study],
    spent: Mapping[int, counters.Counts] | None = None,
) -> dict[int, str]:
    """A warning for each study that waits for workers while no live worker can run its
    trials: a running study whose trials run from its queue (it has an entrypoint or a
    command), none of them running now, and no live worker serves that queue or, for trials
    that need several GPUs (``execution.gpus``), none has a slot with that many (such a slot
    leaves the jobs to others: ``tuneyard.worker.jobs.cannot_serve``). Ask/tell studies bring
    their own workers."""
    waiting: dict[int, tuple[str, int]] = {}
    running = [st.id for st in studies if st.state == StudyState.RUNNING]
    if spent is None:
        spent = counters.read_many(s, running)
    for st in studies:
        if st.state != StudyState.RUNNING or spent[st.id].active > 0:
            continue
        execution = StudySpec.from_stored(st.spec).execution
        if execution is not None and (execution.entrypoint or execution.command):
            waiting[st.id] = (execution.queue, execution.gpus)
    since = live_since(kit)
    if not any(gpus > 1 for _, gpus in waiting.values()):
        served = served_queues(s, {q for q, _ in waiting.values()}, since)
        return {
            sid: f"no live worker serves queue {queue!r}"
            for sid, (queue, _) in waiting.items()
            if queue not in served
        }
    most = most_gpus_per_slot(s, {q for q, _ in waiting.values()}, since)
    warnings: dict[int, str] = {}
    for sid, (queue, gpus) in waiting.items():
        if queue not in most:
            warnings[sid] = f"no live worker serves queue {queue!r}"
        elif gpus > 1 and most[queue] < gpus:
            warnings[sid] = (
                f"no live worker on queue {queue!r} has {gpus} GPUs per slot for its trials "
                f"(execution.gpus); the most is {most[queue]}: start one with "
                f"--gpus-per-slot {gpus}"
            )
    return warnings
