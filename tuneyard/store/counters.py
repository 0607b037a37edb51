"""A study's slot count and usage (:class:`StudyCounters`), changed as a transaction commits.

Every change is an increment (a slot taken or freed, an attempt's time added) gathered in the
session (:func:`add`) and applied by one ``UPDATE ... SET active = active + :d`` just before the
commit, so the row is locked from there to the commit only, and after every other lock of the
transaction (the lock order is in tuneyard/service/trials/base.py). A read (:func:`read`) takes
no lock: the committed values plus what this transaction will add. Slots are only taken under
the study's lock (``next``), so a reader holding it sees at least the slots in use: a job that
ends meanwhile can only lower the count, and the path that ends it then finds the study over
(:func:`drained`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import case, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tuneyard.store.models import StudyCounters
from tuneyard.store.sql import insert_new

_PENDING = "tuneyard.counters.pending"
_DRAINED = "tuneyard.counters.drained"


@dataclass
class Counts:
    active: int = 0
    gpu_seconds: float = 0.0
    worker_seconds: float = 0.0


def create(s: Session, study_id: int) -> None:
    s.add(StudyCounters(study_id=study_id, active=0, gpu_seconds=0.0, worker_seconds=0.0))


def add(
    s: Session,
    study_id: int,
    active: int = 0,
    gpu_seconds: float = 0.0,
    worker_seconds: float = 0.0,
) -> None:
    """Add to the study's counters when ``s`` commits."""
    pending: dict[int, Counts] = s.info.setdefault(_PENDING, {})
    c = pending.setdefault(study_id, Counts())
    c.active += active
    c.gpu_seconds += gpu_seconds
    c.worker_seconds += worker_seconds


def read(s: Session, study_id: int) -> Counts:
    """The committed counters plus this transaction's own increments; no lock taken.

    Read in a statement of its own, after the study's lock was taken: a statement that
    waited for that lock sees the locked row as it is now but the other rows it joins as they
    were when it started (PostgreSQL's READ COMMITTED), which would miss the slot the
    previous holder of the lock took."""
    row = s.execute(
        select(StudyCounters.active, StudyCounters.gpu_seconds, StudyCounters.worker_seconds).where(
            StudyCounters.study_id == study_id
        )
    ).first()
    mine = s.info.get(_PENDING, {}).get(study_id, Counts())
    if row is None or row[0] is None:
        return Counts(max(0, mine.active), mine.gpu_seconds, mine.worker_seconds)
    return Counts(
        max(0, row[0] + mine.active),
        (row[1] or 0.0) + mine.gpu_seconds,
        (row[2] or 0.0) + mine.worker_seconds,
    )


def pending(s: Session) -> bool:
    return bool(s.info.get(_PENDING))


def drained(s: Session) -> list[int]:
    """The studies whose last running job this (committed) transaction ended: their count
    went to 0 here, so whether the study is over is asked again, under its lock."""
    return list(s.info.get(_DRAINED, ()))


def flush(s: Session) -> None:
    """Apply the gathered increments, one statement per study (a before-commit step)."""
    pending: dict[int, Counts] = s.info.pop(_PENDING, {})
    if not pending:
        return
    conn = s.connection()
    for study_id in sorted(pending):
        c = pending[study_id]
        if not (c.active or c.gpu_seconds or c.worker_seconds):
            continue
        now = _apply(conn, study_id, c)
        if now is None:
            # A study stored without its counters' row (made outside StudyService): one now.
            insert_new(conn, StudyCounters, {"study_id": study_id}, key=(StudyCounters.study_id,))
            now = _apply(conn, study_id, c)
        if c.active < 0 and now is not None and now <= 0:
            s.info.setdefault(_DRAINED, set()).add(study_id)


def _apply(conn: Connection, study_id: int, c: Counts) -> int | None:
    """Add ``c`` to the study's row; its new slot count, None when it has no row."""
    return conn.execute(
        update(StudyCounters)
        .where(StudyCounters.study_id == study_id)
        .values(
            # Never below 0, as a slot freed twice (a bug) must not hand out a slot.
            active=case(
                (StudyCounters.active + c.active < 0, 0), else_=StudyCounters.active + c.active
            ),
            gpu_seconds=StudyCounters.gpu_seconds + c.gpu_seconds,
            worker_seconds=StudyCounters.worker_seconds + c.worker_seconds,
        )
        .returning(StudyCounters.active)
    ).scalar()


def read_many(s: Session, study_ids: Sequence[int]) -> dict[int, Counts]:
    """The committed counters of several studies, in one statement (the read paths: a page
    of studies); a study without a row counts zero."""
    if not study_ids:
        return {}
    rows = s.execute(
        select(
            StudyCounters.study_id,
            StudyCounters.active,
            StudyCounters.gpu_seconds,
            StudyCounters.worker_seconds,
        ).where(StudyCounters.study_id.in_(list(study_ids)))
    ).all()
    found = {int(r[0]): Counts(int(r[1]), float(r[2] or 0.0), float(r[3] or 0.0)) for r in rows}
    return {i: found.get(i, Counts()) for i in study_ids}
