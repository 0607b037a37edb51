"""One log line per job as the API sees it: when an attempt starts (``next``) and when it
ends (complete, stop, pause, fail, hand-back, a lease run out), with the trial, the study,
the attempt, its duration and its outcome, at INFO on ``tuneyard.jobs``.

A line is written once the transaction that started or ended the attempt commits: a
transaction that rolls back (a lost race, a 409) logs nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

log = logging.getLogger("tuneyard.jobs")
_PENDING = "tuneyard_job_lines"


def started(
    s: Session, trial_id: int, study_id: int, attempt: int, worker: str | None, what: str
) -> None:
    _note(
        s,
        "trial %s (study %s, attempt %s) starts on %s: %s",
        trial_id,
        study_id,
        attempt,
        worker or "an unnamed worker",
        what,
    )


def ended(
    s: Session,
    trial_id: int,
    study_id: int,
    attempt: int,
    outcome: str,
    began: datetime,
    now: datetime,
) -> None:
    if began.tzinfo is None and now.tzinfo is not None:
        began = began.replace(tzinfo=now.tzinfo)  # SQLite gives naive UTC back
    took = f"{(now - began).total_seconds():.1f} s"
    _note(
        s,
        "trial %s (study %s, attempt %s) ends after %s: %s",
        trial_id,
        study_id,
        attempt,
        took,
        outcome,
    )


def _note(s: Session, msg: str, *args: Any) -> None:
    if log.isEnabledFor(logging.INFO):
        s.info.setdefault(_PENDING, []).append((msg, args))


@event.listens_for(Session, "after_commit")
def _after_commit(s: Session) -> None:
    lines = s.info.pop(_PENDING, None)
    for msg, args in lines or ():
        log.info(msg, *args)


@event.listens_for(Session, "after_rollback")
def _after_rollback(s: Session) -> None:
    s.info.pop(_PENDING, None)
