"""What model-based samplers learn from: observations, written in their study's commit order.

A sampler's copy in an API process reads the observations after its watermark, the highest id
it has seen (tuneyard/service/ahead.py). That reads every observation once only if a study's
observations become visible in the order of their ids, and rung reports write them without
the study's lock. So a transaction's observations are written last, just before it commits
(tuneyard/store/tail.py), under a per-study advisory lock held until the commit: ids are
drawn and made visible one transaction at a time, in the same order. Being the last lock a
transaction takes, it cannot close a cycle with the study's, trials' and rungs' row locks.
SQLite has a single writer, so there the order holds without a lock.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneyard.store.models import Observation
from tuneyard.store.sql import insert_new

_PENDING = "tuneyard.observations.pending"
# The advisory lock's first key: which of tuneyard's locks this is (the second: the study).
LOCK_CLASS = 0x7479


def add(s: Session, **values: Any) -> None:
    """Write an observation when ``s`` commits (once per trial and resource)."""
    s.info.setdefault(_PENDING, []).append(values)


def pending(session: Session) -> bool:
    return bool(session.info.get(_PENDING))


def flush(session: Session) -> None:
    """Write the gathered observations under the study's advisory lock (a before-commit
    step: tuneyard/store/tail.py)."""
    rows: list[dict[str, Any]] = session.info.pop(_PENDING, [])
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        for study_id in sorted({r["study_id"] for r in rows}):
            conn.execute(select(func.pg_advisory_xact_lock(LOCK_CLASS, study_id % 2**31)))
    for values in rows:
        insert_new(conn, Observation, values, key=(Observation.trial_id, Observation.resource))
