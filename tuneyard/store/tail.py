"""What every transaction writes last, just before it commits: its studies' counter
increments (tuneyard/store/counters.py), then its observations (tuneyard/store/observations.py).
These are the last two locks of the lock order (tuneyard/service/trials/base.py), held from
here to the commit only. Registered for every session by importing this module (store/db.py
does)."""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session

from tuneyard.store import counters, observations


@event.listens_for(Session, "before_commit")
def _write_tail(session: Session) -> None:
    if not (counters.pending(session) or observations.pending(session)):
        return
    # The unit of work's own changes first: its locks come before these two.
    session.flush()
    counters.flush(session)
    observations.flush(session)
