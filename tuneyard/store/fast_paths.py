"""The calls a fleet makes most, as single statements in autocommit on PostgreSQL, run on the
driver's connection: a plain report and a trial's heartbeat.

Through SQLAlchemy each was a transaction of four round trips (BEGIN, a read that locks the
trial, the write, COMMIT), and SQLAlchemy's execution path around their statements was half
of the API's CPU per report (bench/README.md, "Where a report's CPU goes"). Here they are
hand-written SQL on psycopg's connection (which prepares them server-side after a few runs):

- **A plain report** (a running trial's good value that reaches no rung, answered
  ``continue``) in two statements. :data:`PEEK` reads the trial, its study, its parent's
  state (a replicate) and any report of the step, without a lock. :data:`WRITE` updates the
  trial and stores the report in one statement, *if the trial is still as it was read*:
  every column the decision read is compared in the UPDATE's WHERE (a compare-and-set; under
  READ COMMITTED a row changed meanwhile is compared as changed), together with the study
  not stopped and a replicate's trial still running. When anything moved, nothing is written
  and the caller hands the report to the general path, which decides it under the trial's
  lock. The unique (trial, step) key still turns away a copy of the report stored meanwhile
  (:class:`sqlalchemy.exc.IntegrityError`, as on the general path).
- **A trial's heartbeat** in one statement, :data:`EXTEND_LEASE`: the lease moves only while
  the trial runs the beating attempt; otherwise nothing changes and the general path answers
  (404, or 409 naming the live attempt or the trial's state).

Only for PostgreSQL through psycopg; SQLite keeps the general transactions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.types.json import Json
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

# The columns read, in the order of reports.py's _PLAIN_TRIAL_COLUMNS, then the study's
# (id, state, seed, created_at), the parent's state, and _REPORT_COLUMNS.
PEEK = """
SELECT t.id, t.parent_id, t.number, t.state, t.pending, t.bracket, t.base_rung, t.rung,
       t.resource_from, t.resource_to, t.best_score, t.score_sum, t.score_count, t.attempts,
       s.id, s.state, s.seed, s.created_at, p.state,
       r.id, r.trial_id, r.attempt, r.step, r.value, r.metrics, r.decision, r.reason,
       r.resource_to, r.created_at
FROM trials AS t
JOIN studies AS s ON s.id = t.study_id
LEFT JOIN trials AS p ON p.id = t.parent_id
LEFT JOIN reports AS r ON r.trial_id = t.id AND r.step = %(step)s
WHERE t.id = %(trial_id)s
"""

SPEC = "SELECT spec FROM studies WHERE id = %(study_id)s"

WRITE = """
WITH upd AS (
    UPDATE trials
    SET value = %(new_value)s, resource = %(new_resource)s, best_score = %(new_best_score)s,
        score_sum = %(new_score_sum)s, score_count = %(new_score_count)s,
        lease_expires_at = %(new_lease_expires_at)s, updated_at = %(new_updated_at)s
    WHERE id = %(trial_id)s
      AND state = %(running)s
      AND attempts = %(report_attempt)s
      AND pending IS NOT DISTINCT FROM %(old_pending)s
      AND bracket = %(old_bracket)s
      AND base_rung = %(old_base_rung)s
      AND rung = %(old_rung)s
      AND resource_from = %(old_resource_from)s
      AND resource_to = %(old_resource_to)s
      AND best_score IS NOT DISTINCT FROM %(old_best_score)s
      AND score_sum = %(old_score_sum)s
      AND score_count = %(old_score_count)s
      AND (parent_id IS NULL OR EXISTS (
          SELECT 1 FROM trials AS p WHERE p.id = trials.parent_id AND p.state = %(running)s))
      AND EXISTS (
          SELECT 1 FROM studies AS s WHERE s.id = trials.study_id AND s.state <> %(stopped)s)
    RETURNING id
)
INSERT INTO reports
    (trial_id, attempt, step, value, metrics, decision, reason, resource_to, created_at)
SELECT upd.id, %(report_attempt)s, %(report_step)s, %(report_value)s, %(report_metrics)s,
       %(report_decision)s, %(report_reason)s, %(report_resource_to)s, %(report_created_at)s
FROM upd
RETURNING id
"""

EXTEND_LEASE = """
UPDATE trials SET lease_expires_at = %(lease)s, updated_at = %(now)s
WHERE id = %(trial_id)s AND attempts = %(attempt)s AND state = %(running)s
RETURNING lease_expires_at
"""

# What a lost or restarting database raises on the driver's connection.
_LOST = (psycopg.OperationalError, psycopg.InterfaceError)


class FastPaths:
    """The statements above on connections of ``engine``'s pool (PostgreSQL, psycopg)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Statements run so far (what SQLAlchemy's events, which don't see these, would count).
        self.statements = 0

    @staticmethod
    def usable(engine: Engine) -> bool:
        return engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit for the block. A connection lost meanwhile is
        invalidated (the pool replaces it) and the error raised: the caller takes the
        general path, whose transaction answers 503 if the database is really gone."""
        fairy = self.engine.raw_connection()
        conn: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
        try:
            conn.autocommit = True
            yield conn
        except _LOST:
            fairy.invalidate()
            raise
        finally:
            if fairy.is_valid:
                conn.autocommit = False
            fairy.close()

    def peek(
        self, conn: psycopg.Connection[Any], trial_id: int, step: float
    ) -> tuple[Any, ...] | None:
        self.statements += 1
        row = conn.execute(PEEK, {"trial_id": trial_id, "step": step}).fetchone()
        return None if row is None else tuple(row)

    def spec(self, conn: psycopg.Connection[Any], study_id: int) -> dict[str, Any]:
        self.statements += 1
        row = conn.execute(SPEC, {"study_id": study_id}).fetchone()
        assert row is not None  # the study of a trial just read (deletion cascades)
        spec: dict[str, Any] = row[0]
        return spec

    def write_report(self, conn: psycopg.Connection[Any], values: Mapping[str, Any]) -> int | None:
        """Store the report if the trial is as read: its id, or None when nothing was written.
        :class:`IntegrityError` when a report of the step was stored meanwhile."""
        params = dict(values)
        params["report_metrics"] = Json(params["report_metrics"])
        self.statements += 1
        try:
            row = conn.execute(WRITE, params).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(WRITE, None, exc) from exc
        return None if row is None else int(row[0])

    def extend_lease(
        self, trial_id: int, attempt: int, lease: datetime, now: datetime, running: str
    ) -> datetime | None:
        """The trial's new lease, or None when it does not run ``attempt`` (nothing changed)."""
        with self.connection() as conn:
            self.statements += 1
            row = conn.execute(
                EXTEND_LEASE,
                {
                    "trial_id": trial_id,
                    "attempt": attempt,
                    "lease": lease,
                    "now": now,
                    "running": running,
                },
            ).fetchone()
        return None if row is None else cast(datetime, row[0])
