"""The workers' list: every registered worker with the trial it runs and how busy it was over
the last hour, from its attempts (summed in SQL, a few index probes per worker)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from tuneyard.service.dashboard.base import DashboardBase
from tuneyard.service.workers import LOST_AFTER_LEASES
from tuneyard.states import WorkerState
from tuneyard.store.models import Attempt, Trial, Worker

BUSY_WINDOW = timedelta(hours=1)


class Workers(DashboardBase):
    def workers(self, limit: int) -> list[dict[str, Any]]:
        """Every registered worker (stopped ones too), with the trial it runs and the share of
        the last hour it spent running trials (of its life, when that is shorter)."""
        now = self.kit.clock()
        start = now - BUSY_WINDOW
        lost_after = timedelta(seconds=self.kit.settings.lease_seconds * LOST_AFTER_LEASES)
        with self.kit.transaction() as s:
            rows = s.execute(
                select(Worker, Trial.number, Trial.study_id)
                .outerjoin(Trial, Trial.id == Worker.trial_id)
                .order_by(Worker.name)
                .limit(limit)
            ).all()
            inside, edges = self._attempts_in_window(s, [w.name for w, _, _ in rows], start, now)
        out = []
        for w, number, study_id in rows:
            state = w.state
            if state == WorkerState.ACTIVE and w.last_seen_at < now - lost_after:
                state = WorkerState.LOST
            online = state == WorkerState.ACTIVE
            # The part of the last hour the worker was there: from its registration (if
            # later) to now, or to when it stopped or was last heard of.
            end = now if online else min(now, w.stopped_at or w.last_seen_at)
            begin = max(start, w.started_at)
            busy = None
            if end > begin:
                secs = inside.get(w.name, 0.0)
                for a, b in edges.get(w.name, []):
                    if a >= w.started_at:  # not an attempt left open by an earlier life
                        lo, hi = max(a, begin), min(b or end, end)
                        secs += max(0.0, (hi - lo).total_seconds())
                busy = min(1.0, max(0.0, secs / (end - begin).total_seconds()))
            out.append(
                {
                    "id": w.id,
                    "name": w.name,
                    "host": w.host,
                    "pid": w.pid,
                    "queue": w.queue,
                    "slots": w.slots,
                    "state": state,
                    "online": online,
                    "gpus": w.gpus,
                    "trial_id": w.trial_id if online else None,
                    "trial_number": number if online else None,
                    "study_id": study_id if online else None,
                    "started_at": w.started_at,
                    "last_seen_at": w.last_seen_at,
                    "stopped_at": w.stopped_at,
                    "busy_fraction": busy,
                }
            )
        return out

    def _attempts_in_window(
        self, s: Session, names: list[str], start: datetime, now: datetime
    ) -> tuple[dict[str, float], dict[str, list[tuple[datetime, datetime | None]]]]:
        """Per worker: the seconds of its attempts that started and ended within [start, now]
        since it registered (summed in SQL, one index range per worker), and the attempts at
        the window's edges: still open (or ending later), and the last one started before it
        (one index probe per worker)."""
        inside: dict[str, float] = {}
        edges: dict[str, list[tuple[datetime, datetime | None]]] = {n: [] for n in names}
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            for name, secs in s.execute(
                select(Attempt.worker, func.sum(_seconds(s, Attempt.started_at, Attempt.ended_at)))
                .join(Worker, Worker.name == Attempt.worker)
                .where(
                    Worker.name.in_(chunk),
                    Attempt.started_at >= start,
                    Attempt.started_at >= Worker.started_at,
                    Attempt.ended_at <= now,
                )
                .group_by(Attempt.worker)
            ):
                inside[name] = float(secs or 0.0)
            for name, a, b in s.execute(
                select(Attempt.worker, Attempt.started_at, Attempt.ended_at).where(
                    Attempt.worker.is_not(None),
                    Attempt.worker.in_(chunk),
                    Attempt.started_at >= start,
                    Attempt.started_at < now,
                    or_(Attempt.ended_at.is_(None), Attempt.ended_at > now),
                )
            ):
                edges[str(name)].append((a, b))
            before = (
                select(Worker.name.label("w"), _last_start_before(start).label("t"))
                .where(Worker.name.in_(chunk))
                .subquery()
            )
            for name, a, b in s.execute(
                select(Attempt.worker, Attempt.started_at, Attempt.ended_at).join(
                    before,
                    and_(Attempt.worker == before.c.w, Attempt.started_at == before.c.t),
                )
            ):
                if b is None or b > start:
                    edges[str(name)].append((a, b))
        return inside, edges


def _last_start_before(when: datetime) -> Any:
    return (
        select(func.max(Attempt.started_at))
        .where(Attempt.worker == Worker.name, Attempt.started_at < when)
        .correlate(Worker)
        .scalar_subquery()
    )


def _seconds(s: Session, start: Any, end: Any) -> Any:
    """``end - start`` in seconds, in SQL."""
    if s.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)
