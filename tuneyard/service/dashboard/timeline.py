"""The timeline: every worker's attempts over a time window, for a Gantt chart per worker.

Bounded three ways: a window (at most :data:`MAX_WINDOW`), a row limit, and pages keyed by
(start, id). Only the attempts that overlap the window are read, by index ranges: those that
started before it and ended in it or still run (``ix_attempts_ended``), and those that started
in it (``ix_attempts_started``); never all the attempts of the database. A study's
timeline narrows that to its trials.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from tuneyard.errors import InvalidRequest, NotFound
from tuneyard.service.dashboard.base import DashboardBase
from tuneyard.service.studies import KEY, decode_cursor, encode_cursor
from tuneyard.store.models import Attempt, Study, Trial, Worker

# The widest window one request may ask for, and the one it gets by default (for a study:
# from its creation to its end, at most MAX_WINDOW).
MAX_WINDOW = timedelta(days=31)
DEFAULT_WINDOW = timedelta(hours=6)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def window(
    now: datetime,
    since: datetime | None,
    until: datetime | None,
    study_span: tuple[datetime, datetime | None] | None = None,
) -> tuple[datetime, datetime]:
    """The window to read: ``since`` and ``until`` as given; a missing end is now (a study's:
    its end, if it ended), a missing start :data:`DEFAULT_WINDOW` (a study's: its creation)
    before the end but no more than :data:`MAX_WINDOW`. 422 naming ``since`` when it is not
    before ``until`` or the window is wider than :data:`MAX_WINDOW`, naming ``until`` for an
    end too close to year 1 to have a window before it."""
    if until is None:
        until = study_span[1] if study_span and study_span[1] else now
    until = _aware(until)
    if since is None:
        try:
            earliest = until - MAX_WINDOW
        except OverflowError as exc:
            raise InvalidRequest(
                f"until: {until.isoformat()} leaves no room for a window before it", field="until"
            ) from exc
        since = study_span[0] if study_span else max(earliest, until - DEFAULT_WINDOW)
        since = max(_aware(since), earliest)
    since = _aware(since)
    if since >= until:
        raise InvalidRequest(
            f"since: must be before until ({since.isoformat()} is not before {until.isoformat()})",
            field="since",
        )
    if until - since > MAX_WINDOW:
        raise InvalidRequest(
            f"since: the window may span at most {MAX_WINDOW.days} days, got "
            f"{(until - since) / timedelta(days=1):.1f}",
            field="since",
        )
    return since, until


def _cursor_start(cursor: str) -> tuple[datetime, int]:
    """The (start, id) a timeline cursor holds; 422 naming ``cursor`` for any other."""
    micros, last_id = decode_cursor(cursor, KEY, KEY)
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), int(last_id)
    except OverflowError as exc:
        raise InvalidRequest("cursor: not a cursor this API returned", field="cursor") from exc


class Timeline(DashboardBase):
    @staticmethod
    def _overlapping(
        s: Session, base: Select[*tuple[Any, ...]], lo: datetime, hi: datetime, n: int
    ) -> list[Any]:
        """The first ``n`` attempts of ``base`` (by start, then id) that overlap [lo, hi), in
        three index range reads (one OR over them all would walk ``ix_attempts_started`` from
        the oldest attempt): those that started before ``lo`` and ended after it, or run still
        (``ix_attempts_ended``; they all come first), then those that started in the window
        (``ix_attempts_started``)."""
        order = (Attempt.started_at, Attempt.id)
        before = base.where(Attempt.started_at < lo)
        rows: list[Any] = []
        for still in (Attempt.ended_at > lo, Attempt.ended_at.is_(None)):
            rows += s.execute(before.where(still).order_by(*order).limit(n)).all()
        rows.sort(key=lambda r: (_aware(r[5]), r[0]))
        rows = rows[:n]
        if len(rows) < n:
            inside = base.where(Attempt.started_at >= lo, Attempt.started_at < hi)
            rows += s.execute(inside.order_by(*order).limit(n - len(rows))).all()
        return rows

    def timeline(
        self,
        since: datetime | None,
        until: datetime | None,
        study_id: int | None,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        """The attempts that overlap the window, by start then id, at most ``limit`` after
        ``cursor``; the workers that ran them (host, GPUs); the window and the next cursor."""
        after = _cursor_start(cursor) if cursor else None
        with self.kit.transaction() as s:
            span = None
            if study_id is not None:
                row = s.execute(
                    select(Study.created_at, Study.finished_at).where(Study.id == study_id)
                ).first()
                if row is None:
                    raise NotFound(f"study {study_id} does not exist")
                span = (row[0], row[1])
            lo, hi = window(self.kit.clock(), since, until, span)
            base = select(
                Attempt.id,
                Attempt.trial_id,
                Attempt.number,
                Attempt.worker,
                Attempt.state,
                Attempt.started_at,
                Attempt.ended_at,
                Attempt.resource_from,
                Attempt.resource_to,
                Trial.study_id,
                Trial.number,
                Trial.state,
            ).join(Trial, Trial.id == Attempt.trial_id)
            if study_id is not None:
                base = base.where(Trial.study_id == study_id)
            if after is not None:
                t0, last_id = after
                base = base.where(
                    or_(
                        Attempt.started_at > t0,
                        and_(Attempt.started_at == t0, Attempt.id > last_id),
                    )
                )
            rows = self._overlapping(s, base, lo, hi, limit + 1)
            page = rows[:limit]
            names = sorted({r[3] for r in page if r[3]})
            workers: dict[str, dict[str, Any]] = {
                w.name: {"name": w.name, "host": w.host, "gpus": list(w.gpus or [])}
                for w in (s.scalars(select(Worker).where(Worker.name.in_(names))) if names else [])
            }
        nxt = None
        if len(rows) > limit:
            last = page[-1]
            nxt = encode_cursor([_micros(_aware(last[5])), int(last[0])])
        items = [
            {
                "trial_id": int(r[1]),
                "study_id": int(r[9]),
                "trial_number": int(r[10]),
                "trial_state": r[11],
                "attempt": int(r[2]),
                "worker": r[3],
                "state": r[4],
                "started_at": r[5],
                "ended_at": r[6],
                "resource_from": float(r[7]),
                "resource_to": float(r[8]),
            }
            for r in page
        ]
        lanes: list[dict[str, Any]] = [
            workers.get(n, {"name": n, "host": None, "gpus": []}) for n in names
        ]
        return {
            "since": lo,
            "until": hi,
            "now": self.kit.clock(),
            "study_id": study_id,
            "items": items,
            "workers": lanes,
            "next_cursor": nxt,
        }
