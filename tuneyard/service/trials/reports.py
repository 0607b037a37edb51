"""Reports: the plain one (a running trial's good value that reaches no rung: its row only,
two statements on PostgreSQL) and the general one (a rung under its rung's lock, a bad value,
a stopped study, a step an earlier attempt reported, the refusals)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Float, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from tuneyard.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    TuneyardError,
)
from tuneyard.scheduler.board import Board
from tuneyard.scheduler.decisions import Decision, fmt
from tuneyard.scheduler.schedulers import TrialView
from tuneyard.service import metrics as meter
from tuneyard.service import notifications
from tuneyard.service.context import StudyContext
from tuneyard.service.objectives import Measure, bad_value
from tuneyard.service.trials.base import STUDY_LOCKED, NeedsStudyLock
from tuneyard.service.trials.population import Population
from tuneyard.states import DecisionKind, LogKind, StudyState, TrialState
from tuneyard.store import counters
from tuneyard.store.board import SqlBoard
from tuneyard.store.models import (
    Attempt,
    Report,
    Study,
    Trial,
    utcnow,
)


class Reports(Population):
    # -- report ----------------------------------------------------------------------------
    def report(
        self,
        trial_id: int,
        step: float,
        value: float | None,
        metrics: dict[str, Any],
        *,
        attempt: int,
    ) -> Report:
        """A report of the trial's live ``attempt`` (:class:`StaleAttempt` for any other).

        Idempotent on (trial, step) within an attempt: a repeat returns the stored answer.
        A step that an earlier attempt reported (a retry that runs the job again) is decided
        again and replaces that attempt's report, so an answer always means "stored"."""
        try:
            plain = self._plain_report(trial_id, step, value, metrics, attempt)
            if plain is not None:
                return plain
            return self._report(trial_id, step, value, metrics, attempt, recheck=False)
        except IntegrityError:
            # The unique (trial, step) key refused this report: a copy of it was stored while
            # this one was being decided. Answer as that one was answered.
            return self._report(trial_id, step, value, metrics, attempt, recheck=True)

    def _plain_report(
        self,
        trial_id: int,
        step: float,
        value: float | None,
        metrics: dict[str, Any],
        attempt: int,
    ) -> Report | None:
        """The common report, most of a trial's: a good value from a running trial of a study
        not stopped, that reaches no rung, and that the scheduler answers with a plain
        ``continue``. It takes two statements and no lock of the study's: on PostgreSQL a read
        and a compare-and-set write in autocommit on the driver's connection
        (tuneyard/store/fast_paths.py); elsewhere a transaction whose read locks the trial's
        row. Both run on plain rows, none through the ORM's unit of work.

        None, with nothing written, when the report is anything else (or is refused, or the
        trial changed between the read and the write): the general path (``_report``) then
        takes it, and answers or refuses it itself."""
        raw = self.kit.fast_paths
        if raw is None:
            return self._plain_report_locked(trial_id, step, value, metrics, attempt)
        try:
            with raw.connection() as conn:
                found = raw.peek(conn, trial_id, step)
                if found is None:
                    return None
                plan = self._plain_plan(
                    found, trial_id, step, value, metrics, attempt, lambda i: raw.spec(conn, i)
                )
                if not isinstance(plan, _PlainWrite):
                    return plan
                values = plan.values | {
                    f"old_{c.key}": found[i]
                    for i, c in enumerate(_PLAIN_TRIAL_COLUMNS)
                    if c.key in _COMPARED
                }
                values |= {"running": TrialState.RUNNING, "stopped": StudyState.STOPPED}
                report_id = raw.write_report(conn, values)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            return None  # the general path retries it on a fresh connection, or answers 503
        if report_id is None:
            return None
        plan.report.id = report_id
        meter.reported_now(self.kit, plan.report.decision)
        return plan.report

    def _plain_report_locked(
        self,
        trial_id: int,
        step: float,
        value: float | None,
        metrics: dict[str, Any],
        attempt: int,
    ) -> Report | None:
        """The plain report as one transaction that locks the trial's row (SQLite)."""
        with self.kit.transaction() as s:
            # Core statements on the session's connection: rows, not ORM objects.
            conn = s.connection()
            row = conn.execute(_PEEK, {"trial_id": trial_id, "step": step}).first()
            if row is None:
                return None

            def spec_of(study_id: int) -> dict[str, Any]:
                return cast(
                    dict[str, Any],
                    conn.execute(select(Study.spec).where(Study.id == study_id)).scalar_one(),
                )

            plan = self._plain_plan(tuple(row), trial_id, step, value, metrics, attempt, spec_of)
            if not isinstance(plan, _PlainWrite):
                return plan
            if conn.dialect.name == "postgresql":
                plan.report.id = conn.execute(_UPDATE_AND_INSERT, plan.values).scalar_one()
            else:
                conn.execute(_UPDATE_TRIAL, plan.values)
                plan.report.id = conn.execute(_INSERT_REPORT, plan.values).scalar_one()
            meter.reported(self.kit, s, plan.report.decision)
            return plan.report

    def _plain_plan(
        self,
        found: tuple[Any, ...],
        trial_id: int,
        step: float,
        value: float | None,
        metrics: dict[str, Any],
        attempt: int,
        spec_of: Callable[[int], dict[str, Any]],
    ) -> _PlainWrite | Report | None:
        """What a plain report writes, from the trial as read (``found``: the columns of
        ``_PEEK``): the report and the statements' values; the stored report when this step
        was reported by this attempt already; None when the report is not a plain one."""
        n = len(_PLAIN_TRIAL_COLUMNS)
        study_id, study_state, seed, created_at, parent_state = cast(
            tuple[int, str, int, datetime, str | None], found[n : n + 5]
        )
        if found[_PLAIN_ATTEMPTS] != attempt:
            return None  # refused by the general path, which says why
        if found[_PLAIN_PARENT] is not None and parent_state != TrialState.RUNNING:
            # A replicate of a trial that ended (it stops) or pauses: the general path's.
            return None
        if found[n + 5] is not None:
            stored = _report_row(found[n + 5 :])
            # A step an earlier attempt reported is decided again, by the general path.
            return stored if stored.attempt == attempt else None
        ctx = self.kit.cached_context(study_id, created_at)
        if ctx is None:
            ctx = self.kit.context(
                Study(id=study_id, spec=spec_of(study_id), seed=seed, created_at=created_at)
            )
        sched = ctx.scheduler
        if ctx.objectives.by_fronts:
            return None  # the trial's vector and feasibility are the general path's
        if value is None:
            value = metrics.get(ctx.spec.metric)
        if bad_value(ctx.spec.metric, value, step) is not None or study_state == StudyState.STOPPED:
            return None
        # The row as read: the same checks as the general path's, on the same values.
        # A plain object: an ORM instance's instrumented construction costs more than the
        # rest of the decision.
        trial = _TrialRow(*found[:n])
        if sched.ladder.crossed(max(trial.rung, trial.base_rung - 1), step):
            return None
        try:
            self._check_report(ctx, trial, step)
        except TuneyardError:
            return None
        assert value is not None  # guaranteed by bad_value
        score = ctx.sign * value
        trial.best_score = score if trial.best_score is None else min(trial.best_score, score)
        trial.score_sum += score
        trial.score_count += 1
        try:
            decision = ctx.engine.plain(_view(trial, trial.best_score), step, score, _NO_BOARD)
        except _BoardNeeded:
            return None
        if decision is None:
            return None
        now = self.kit.clock()
        report = Report(
            trial_id=trial_id,
            attempt=attempt,
            step=step,
            value=value,
            metrics=_jsonable(metrics),
            decision=decision.kind,
            reason=decision.reason,
            resource_to=trial.resource_to,
            created_at=now,
        )
        # Every name distinct from the trial's columns, which would join the update's SET.
        values = {
            f"report_{c.key}": getattr(report, c.key) for c in _REPORT_COLUMNS if c.key != "id"
        }
        values |= {
            "trial_id": trial_id,
            "new_value": value,
            "new_resource": step,
            "new_best_score": trial.best_score,
            "new_score_sum": trial.score_sum,
            "new_score_count": trial.score_count,
            "new_lease_expires_at": self._lease(now),
            "new_updated_at": utcnow(),
        }
        return _PlainWrite(report, values)

    def _report(
        self,
        trial_id: int,
        step: float,
        value: float | None,
        metrics: dict[str, Any],
        attempt: int,
        recheck: bool,
    ) -> Report:
        """Any report, in one transaction: one that reaches a rung (its trial's and rungs'
        locks; :class:`NeedsStudyLock` when it completes a trial of a study that tells of a
        new best, and then again with the study's lock first), a bad value, a report to a stopped
        study or of a replicate (the study's lock first), a step an earlier attempt
        reported, and the refusals. A copy of the report stored after the first read (a
        retry racing the original) is looked up again only where this one is refused, where
        it replaces an earlier attempt's, or when the final insert hit the unique key
        (``recheck``)."""
        try:
            with self.kit.transaction() as s:
                report = self._decide_report(
                    s, trial_id, step, value, metrics, attempt, recheck, study_lock=False
                )
        except NeedsStudyLock:
            with self.kit.transaction() as s:
                report = self._decide_report(
                    s, trial_id, step, value, metrics, attempt, recheck, study_lock=True
                )
        # A job this report ended may have been its study's last: is the study over?
        self._finish_drained(counters.drained(s))
        return report

    def _decide_report(
        self,
        s: Session,
        trial_id: int,
        step: float,
        value: float | None,
        metrics: dict[str, Any],
        attempt: int,
        recheck: bool,
        study_lock: bool,
    ) -> Report:
        # The trial, its study and this step's stored report, in one statement.
        found = s.execute(
            select(Trial, Study, Report)
            .join(Study, Study.id == Trial.study_id)
            .outerjoin(Report, (Report.trial_id == Trial.id) & (Report.step == step))
            .where(Trial.id == trial_id)
        ).first()
        if found is None:
            raise NotFound(f"trial {trial_id} does not exist")
        peek, study, first = found
        stored: Report | None = first
        self._fence(peek, attempt)
        if stored is not None and stored.attempt == attempt:
            return stored
        ctx = self.kit.context(study)
        # A metric the study needs and the report lacks is refused here, before anything
        # changes; a NaN fails the trial below.
        measured = ctx.objectives.measure(value, metrics, step)
        bad = measured if isinstance(measured, str) else None
        measure = measured if not isinstance(measured, str) else None
        value = measure.value if measure is not None else value
        # A replicate's report may change its trial and its other replicates, which the
        # study's lock orders; a bad value fails the trial. A rung decision needs only the
        # rungs' locks, unless it completes a trial of a study that tells of a new best
        # (kept on the study's row): at the top rung it would, so that takes the lock first.
        sched = ctx.scheduler
        tells = ctx.spec.notifications is not None
        heavy = (
            study_lock
            or (tells and step >= sched.ladder.max_resource - 1e-9)
            or bad is not None
            or study.state == StudyState.STOPPED
            or peek.parent_id is not None
        )
        if heavy:
            study = self._lock_study(s, study.id)
        trial = self._trial(s, trial_id, lock=True)
        self._fence(trial, attempt)
        if recheck or stored is not None:
            # Read again under the trial's lock: a copy of this report (of this attempt)
            # may have been stored, or replaced the earlier attempt's, meanwhile.
            stored = self._stored_report(s, trial_id, step)
            if stored is not None and stored.attempt == attempt:
                return stored
        try:
            self._check_report(ctx, trial, step)
        except TuneyardError:
            # Refused, unless a copy of this report was stored meanwhile: its answer stands.
            again = self._stored_report(s, trial_id, step)
            if again is not None and again.attempt == attempt:
                return again
            raise
        now = self.kit.clock()
        board = ctx.board(s, study.id)
        # Nothing below reads back what it changed through the ORM (rung entries and
        # observations are written by statements of their own), so the changes to the
        # trial, its rung and the study go out together, once, at commit.
        with s.no_autoflush:
            if bad is not None:
                decision = Decision(DecisionKind.STOP, bad)
                self._end_job(s, ctx, study, board, trial, TrialState.FAILED, bad, error=bad)
                self._maybe_finish(s, ctx, study, board)
            elif study.state == StudyState.STOPPED:
                decision = Decision(DecisionKind.STOP, "the study was stopped")
                self._end_job(s, ctx, study, board, trial, TrialState.STOPPED, decision.reason)
                trial.value, trial.resource = value, step
                if measure is not None:
                    _keep_values(trial, measure)
            elif stored is not None and stored.decision == DecisionKind.PAUSE:
                assert measure is not None  # a bad value is the first branch
                decision = self._pause_again(s, trial, step, measure, stored, now)
            elif trial.parent_id is not None:
                assert measure is not None
                decision = self._decide_replicate(s, ctx, study, board, trial, step, measure, now)
            else:
                assert measure is not None
                decision = self._decide(s, ctx, study, board, trial, step, measure, now)
        fields = {
            "attempt": attempt,
            "value": value if bad is None else None,
            "metrics": _jsonable(metrics),
            "decision": decision.kind,
            "reason": decision.reason,
            "resource_to": trial.resource_to,
            "created_at": now,
        }
        if stored is None:
            report = Report(trial_id=trial.id, step=step, **fields)
            s.add(report)
        else:
            # The earlier attempt's report of this step gives way to this one's.
            report = stored
            for key, v in fields.items():
                setattr(report, key, v)
        meter.reported(self.kit, s, decision.kind)
        return report

    def _pause_again(
        self,
        s: Session,
        trial: Trial,
        step: float,
        measure: Measure,
        stored: Report,
        now: datetime,
    ) -> Decision:
        """A re-run's report of the step at which an earlier attempt was told to pause (that
        attempt died before it saved its checkpoint). The rung was recorded, and decided, then:
        the decision stands, and this attempt pauses there too, with its own value stored."""
        score = measure.score
        trial.value, trial.resource = measure.value, step
        _keep_values(trial, measure)
        trial.best_score = score if trial.best_score is None else min(trial.best_score, score)
        trial.lease_expires_at = self._lease(now)
        trial.pending = DecisionKind.PAUSE
        trial.reason = stored.reason
        self._log(s, trial, LogKind.PAUSE, stored.reason, trial.rung, step)
        return Decision(DecisionKind.PAUSE, stored.reason, rung=trial.rung)

    def _stored_report(self, s: Session, trial_id: int, step: float) -> Report | None:
        return s.scalar(
            select(Report)
            .where(Report.trial_id == trial_id, Report.step == step)
            .execution_options(populate_existing=True)
        )

    def _check_report(self, ctx: StudyContext, trial: Trial | _TrialRow, step: float) -> None:
        if trial.state != TrialState.RUNNING:
            raise Conflict(
                f"trial {trial.id} is {trial.state}; it takes no more reports "
                f"(a repeated report of an earlier step returns its stored decision)"
            )
        if trial.pending == DecisionKind.PAUSE:
            raise Conflict(
                f"trial {trial.id} was told to pause at {fmt(trial.resource_to)}; "
                "save its checkpoint and call /pause"
            )
        top = ctx.scheduler.ladder.max_resource
        if step > top + 1e-9:
            raise InvalidRequest(
                f"step: {fmt(step)} exceeds the study's max_resource {fmt(top)}",
                field="step",
            )
        if ctx.scheduler.pauses and step > trial.resource_to + 1e-9:
            raise Conflict(
                f"step {fmt(step)} is past the end of the trial's current job "
                f"(resource_to {fmt(trial.resource_to)})"
            )
        if step <= trial.resource_from - 1e-9:
            raise Conflict(
                f"step {fmt(step)} is not after the job's start (resource_from "
                f"{fmt(trial.resource_from)})"
            )

    def _decide(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        trial: Trial,
        step: float,
        measure: Measure,
        now: datetime,
    ) -> Decision:
        score = measure.score
        trial.value = measure.value
        _keep_values(trial, measure)
        trial.resource = step
        trial.best_score = score if trial.best_score is None else min(trial.best_score, score)
        trial.score_sum += score
        trial.score_count += 1
        trial.lease_expires_at = self._lease(now)
        view = _view(trial, trial.best_score)
        outcome = ctx.engine.report(view, step, score, board, measure.vector)
        for rec in outcome.records:
            trial.rung = rec.rung
            self._observe(s, ctx, trial, ctx.scheduler.resources[rec.rung], score, measure.vector)
        decision = outcome.decision
        if decision.kind == DecisionKind.CONTINUE and decision.promoted_from is not None:
            trial.resource_to = decision.resource_to or trial.resource_to
            # The attempt runs on: its recorded range says where it now ends.
            s.execute(
                update(Attempt)
                .where(Attempt.trial_id == trial.id, Attempt.number == trial.attempts)
                .values(resource_to=trial.resource_to)
            )
            trial.reason = decision.reason
            self._log(s, trial, LogKind.PROMOTE, decision.reason, decision.rung, trial.resource_to)
        elif decision.kind == DecisionKind.PAUSE:
            trial.pending = DecisionKind.PAUSE
            trial.reason = decision.reason
            self._log(s, trial, LogKind.PAUSE, decision.reason, decision.rung, step)
        elif decision.kind in (DecisionKind.STOP, DecisionKind.COMPLETE):
            locked = s.info.get(STUDY_LOCKED) == study.id
            done = decision.kind == DecisionKind.COMPLETE
            if done and ctx.spec.notifications is not None and not locked:
                raise NeedsStudyLock
            self._observe(s, ctx, trial, step, score, measure.vector)
            state = TrialState.COMPLETED if done else TrialState.STOPPED
            self._end_job(s, ctx, study, board, trial, state, decision.reason)
            if done:
                notifications.trial_completed(s, self.kit, ctx, study, trial)
            if locked:
                self._maybe_finish(s, ctx, study, board)
            # Else its slot is freed as this commits, and report() asks whether the study
            # is over when that was its last running job.
        return decision


# What a stored report answers with, and what the plain report path reads of its trial.
_REPORT_COLUMNS = (
    Report.id,
    Report.trial_id,
    Report.attempt,
    Report.step,
    Report.value,
    Report.metrics,
    Report.decision,
    Report.reason,
    Report.resource_to,
    Report.created_at,
)

_PLAIN_TRIAL_COLUMNS = (
    Trial.id,
    Trial.parent_id,
    Trial.number,
    Trial.state,
    Trial.pending,
    Trial.bracket,
    Trial.base_rung,
    Trial.rung,
    Trial.resource_from,
    Trial.resource_to,
    Trial.best_score,
    Trial.score_sum,
    Trial.score_count,
    Trial.attempts,
)

_PLAIN_ATTEMPTS = len(_PLAIN_TRIAL_COLUMNS) - 1
_PLAIN_PARENT = 1

# The trial's columns a plain report's decision read and its write compares (the state and
# the attempt are compared with what the report requires: running, the report's attempt).
_COMPARED = frozenset(
    {
        "pending",
        "bracket",
        "base_rung",
        "rung",
        "resource_from",
        "resource_to",
        "best_score",
        "score_sum",
        "score_count",
    }
)


@dataclass(slots=True)
class _TrialRow:
    """What a plain report reads of its trial: the columns of ``_PLAIN_TRIAL_COLUMNS``."""

    id: int
    parent_id: int | None
    number: int
    state: str
    pending: str | None
    bracket: int
    base_rung: int
    rung: int
    resource_from: float
    resource_to: float
    best_score: float | None
    score_sum: float
    score_count: int
    attempts: int


@dataclass
class _PlainWrite:
    """A plain report's decision: the report, and the values of the statements that store it."""

    report: Report
    values: dict[str, Any]


class _BoardNeeded(Exception):
    """A scheduler looked at the board for a report that reaches no rung."""


class _NoBoard:
    """The board of a plain report, which reaches no rung: no scheduler reads one then, and
    should one, the report goes to the general path (which reads the real one)."""

    def __getattr__(self, name: str) -> Any:
        raise _BoardNeeded(name)


_NO_BOARD = cast(Board, _NoBoard())

# A replicate's trial: its state says whether the replicate's report may be a plain one.
_PARENT = aliased(Trial, name="parent")

# The plain report's statements, built once: building and hashing a statement on every call
# costs more than running it.
_PEEK = (
    select(
        *_PLAIN_TRIAL_COLUMNS,
        Study.id,
        Study.state,
        Study.seed,
        Study.created_at,
        _PARENT.state,
        *_REPORT_COLUMNS,
    )
    .join(Study, Study.id == Trial.study_id)
    .outerjoin(_PARENT, _PARENT.id == Trial.parent_id)
    .outerjoin(
        Report, (Report.trial_id == Trial.id) & (Report.step == bindparam("step", type_=Float))
    )
    .where(Trial.id == bindparam("trial_id"))
    .with_for_update(of=Trial)
)

_UPDATE_TRIAL = (
    update(Trial)
    .where(Trial.id == bindparam("trial_id"))
    .values(
        {
            col: bindparam(f"new_{col}")
            for col in (
                "value",
                "resource",
                "best_score",
                "score_sum",
                "score_count",
                "lease_expires_at",
                "updated_at",
            )
        }
    )
)

_INSERT_REPORT = (
    insert(Report)
    .values({c.key: bindparam(f"report_{c.key}") for c in _REPORT_COLUMNS if c.key != "id"})
    .returning(Report.id)
)

# PostgreSQL: the trial's update rides along with the report's insert, one round trip.
_UPDATE_AND_INSERT = _INSERT_REPORT.add_cte(_UPDATE_TRIAL.cte("trial_update"))


def _report_row(values: Sequence[Any]) -> Report:
    """A stored report, from the values of ``_REPORT_COLUMNS``."""
    return Report(**{c.key: v for c, v in zip(_REPORT_COLUMNS, values, strict=True)})


def _view(trial: Trial | _TrialRow, best_score: float) -> TrialView:
    """What the scheduler sees of a trial (its running statistics already updated)."""
    return TrialView(
        trial_id=trial.id,
        number=trial.number,
        bracket=trial.bracket,
        rung=trial.rung,
        resource_to=trial.resource_to,
        best_score=best_score,
        mean_score=trial.score_sum / trial.score_count,
        base=trial.base_rung,
    )


def _keep_values(trial: Trial, measure: Measure) -> None:
    """A study with several objectives or constraints: the trial's latest values, total
    violation and failed constraints, as the report gave them."""
    if measure.vector is None:
        return
    trial.values = measure.values
    trial.violation = measure.vector.violation
    trial.infeasible = measure.infeasible


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities are not JSON: keep them readable as strings."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = str(v)
        else:
            out[k] = v
    return out
