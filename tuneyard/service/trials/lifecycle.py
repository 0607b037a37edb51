"""The end of a job as its worker tells it (pause, complete, fail, release), its heartbeat,
and the reaping of leases that ran out."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneyard.errors import (
    Conflict,
    InvalidRequest,
)
from tuneyard.scheduler.decisions import fmt
from tuneyard.service import notifications
from tuneyard.service.checkpoint_locations import check_location
from tuneyard.service.context import StudyContext
from tuneyard.service.objectives import Measure, bad_value
from tuneyard.service.transitions import move, move_study
from tuneyard.service.trials.reports import Reports
from tuneyard.states import AttemptState, DecisionKind, LogKind, StudyState, TrialState
from tuneyard.store import counters
from tuneyard.store.board import SqlBoard
from tuneyard.store.models import (
    RungEntry,
    Study,
    Trial,
    utcnow,
)


class Lifecycle(Reports):
    # -- end of a job ------------------------------------------------------------------------
    def pause(self, trial_id: int, checkpoint: str | None, *, attempt: int) -> Trial:
        """The worker saved the checkpoint of a trial told to pause: it may now be promoted.

        A trial's own pause locks its row only: it frees its slot through the study's
        counters and marks its rung entry as waiting for a promotion, which ``next`` reads
        once this commits. The study's lock is taken afterwards only when this was the
        study's last running job, to ask whether the study is over. A replicate's pause and a
        population member's change other trials: they take the study's lock first."""
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = s.get(Study, peek.study_id)
            if study is None:
                raise Conflict(f"trial {trial_id} has no study")
            ctx = self.kit.context(study)
            light = peek.parent_id is None and ctx.population is None
            if not light:
                study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            self._fence(trial, attempt)
            if trial.state == TrialState.PAUSED:
                return trial
            if trial.state != TrialState.RUNNING or trial.pending != DecisionKind.PAUSE:
                raise Conflict(f"trial {trial_id} is {trial.state} and was not told to pause")
            if checkpoint is not None:
                checkpoint = check_location(self.kit.settings, trial.study_id, trial.id, checkpoint)
            board = ctx.board(s, study.id)
            move(trial, TrialState.PAUSED)
            trial.pending = None
            self._set_checkpoint(trial, checkpoint)
            trial.lease_expires_at = None
            counters.add(s, study.id, active=-1)
            self._end_attempt(s, trial, AttemptState.PAUSED)
            if light:
                board.set_waiting(trial.bracket, trial.rung, trial.id, True)
            else:
                if trial.parent_id is None:
                    self._population_step(s, ctx, study, trial)
                    board.set_waiting(trial.bracket, trial.rung, trial.id, True)
                else:
                    self._replicate_paused(s, ctx, study, board, trial)
                self._maybe_finish(s, ctx, study, board)
        if self._finish_drained(counters.drained(s)):
            # The study's end stopped the trial, if it was not promoted: say so.
            with self.kit.reading() as s:
                trial = self._trial(s, trial_id)
        return trial

    def complete(
        self,
        trial_id: int,
        value: float | None,
        metrics: dict[str, Any],
        checkpoint: str | None,
        *,
        attempt: int,
    ) -> Trial:
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            self._fence(trial, attempt)
            if checkpoint is not None and trial.state in (TrialState.RUNNING, TrialState.COMPLETED):
                # The objective's last save: the trial's model once it has completed (a trial
                # a report completed gets it with a second, otherwise repeated, /complete).
                model = check_location(self.kit.settings, trial.study_id, trial.id, checkpoint)
                if model != trial.checkpoint:
                    self._set_checkpoint(trial, model)
                    self._sweep_later(trial, 0.0)  # the study's best few models are kept
            if trial.state == TrialState.COMPLETED:
                return trial
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            step = trial.resource if trial.resource is not None else trial.resource_to
            if trial.state != TrialState.RUNNING:
                raise Conflict(f"trial {trial_id} is {trial.state}; only a running trial completes")
            measured = self._final_measure(ctx, trial, value, metrics, step)
            if isinstance(measured, str):
                self._end_job(
                    s, ctx, study, board, trial, TrialState.FAILED, measured, error=measured
                )
            else:
                trial.value = measured.value
                if measured.vector is not None:
                    trial.values = measured.values
                    trial.violation = measured.vector.violation
                    trial.infeasible = measured.infeasible
                if trial.resource is None:
                    trial.resource = trial.resource_to
                self._observe(s, ctx, trial, trial.resource, measured.score, measured.vector)
                self._end_job(
                    s, ctx, study, board, trial, TrialState.COMPLETED, "objective returned"
                )
                notifications.trial_completed(s, self.kit, ctx, study, trial)
            self._maybe_finish(s, ctx, study, board)
            return trial

    @staticmethod
    def _final_measure(
        ctx: StudyContext,
        trial: Trial,
        value: float | None,
        metrics: dict[str, Any],
        step: float,
    ) -> Measure | str:
        """The result an objective returned, or why it fails the trial. Given no value (or,
        with several objectives or constraints, none of the metrics), the trial's last
        report stands; given some of the metrics, the report must carry them all."""
        objectives = ctx.objectives
        if not objectives.by_fronts:
            if value is None:
                value = metrics.get(ctx.spec.metric)
            if value is None:
                value = trial.value
            return objectives.measure(value, {}, step)
        given = value is not None or any(m in metrics for m in objectives.needed)
        if given:
            return objectives.measure(value, metrics, step)
        if trial.values is None:
            return bad_value(objectives.metrics[0], None, step) or "no result"
        measure = objectives.of_values(trial.values, {})
        # The last report's feasibility stands: its metrics were checked then.
        vector = measure.vector
        assert vector is not None
        failed = tuple(trial.infeasible.split(", ")) if trial.infeasible else ()
        return replace(
            measure, vector=replace(vector, violation=trial.violation or 0.0, failed=failed)
        )

    def fail(self, trial_id: int, error: str, output: str | None = None, *, attempt: int) -> Trial:
        """The objective of the live attempt crashed: ``error`` is what went wrong (a message
        or a traceback), ``output`` the end of what it printed. The trial's reason is the
        error's summary; the error, with the output after it, is stored."""
        text = error if not output else f"{error}\n\nits output ends with:\n{output}"
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            if self._ended_as(s, trial, attempt, AttemptState.FAILED):
                return trial  # a repeated request: the attempt already failed
            self._fence(trial, attempt)
            if trial.state != TrialState.RUNNING:
                raise Conflict(f"trial {trial_id} is {trial.state}; only a running trial can fail")
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            summary = error_summary(error)
            self._retry_or_fail(s, ctx, study, board, trial, summary, text)
            if trial.state == TrialState.FAILED:
                _note_failure(study, trial, summary, error_class(error))
            self._maybe_finish(s, ctx, study, board)
            self._maybe_fail_fast(s, ctx, study)
            return trial

    def _maybe_fail_fast(self, s: Session, ctx: StudyContext, study: Study) -> None:
        """Move a running study to failing when its last ``limits.fail_fast`` failed trials
        failed with the same error and none of its trials has completed or reached a rung yet
        (the study's first trials: after one did, a failure says something about that
        trial's parameters, not about the code). Two EXISTS probes on indexes, only once the
        streak is long enough."""
        limit = ctx.spec.limits.fail_fast
        if study.state != StudyState.RUNNING or limit == 0 or study.error_streak < limit:
            return
        done = select(Trial.id).where(
            Trial.study_id == study.id, Trial.state == TrialState.COMPLETED
        )
        ranked = select(RungEntry.id).where(RungEntry.study_id == study.id)
        if s.scalar(select(done.exists())) or s.scalar(select(ranked.exists())):
            return
        move_study(study, StudyState.FAILING)
        n = study.error_streak
        first = "the first trial failed with" if n == 1 else f"the first {n} trials failed with"
        same = "" if n == 1 else " the same error,"
        shipped = ctx.spec.execution is not None and ctx.spec.execution.code is not None
        # A study's shipped code is fixed when it is created: a fix ships with a new study.
        fix = (
            "fix the code and create the study again with --code"
            if shipped
            else "fix it and resume the study"
        )
        study.reason = f"failing: {first}{same} {study.last_error}; {fix}"
        notifications.study_failing(s, self.kit, ctx, study)

    def release(
        self,
        trial_id: int,
        reason: str,
        checkpoint: str | None,
        step: float | None,
        *,
        attempt: int,
    ) -> Trial:
        """Hand a running trial back unfinished (its worker is shutting down): it is queued to
        run again, from ``checkpoint`` saved at ``step`` when given, else from where its job
        started. Not a failure: it uses none of the trial's retries."""
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            if self._ended_as(s, trial, attempt, AttemptState.RELEASED):
                return trial  # a repeated request: the attempt was handed back already
            self._fence(trial, attempt)
            if trial.state != TrialState.RUNNING:
                raise Conflict(
                    f"trial {trial_id} is {trial.state}; only a running trial is handed back"
                )
            if trial.pending == DecisionKind.PAUSE:
                raise Conflict(
                    f"trial {trial_id} was told to pause; save its checkpoint and call /pause"
                )
            if checkpoint is not None:
                if step is None:
                    raise InvalidRequest("step: required with a checkpoint", field="step")
                if not trial.resource_from - 1e-9 <= step <= trial.resource_to + 1e-9:
                    raise InvalidRequest(
                        f"step: {fmt(step)} is outside the job's range "
                        f"{fmt(trial.resource_from)}..{fmt(trial.resource_to)}",
                        field="step",
                    )
                self._set_checkpoint(
                    trial, check_location(self.kit.settings, trial.study_id, trial.id, checkpoint)
                )
                trial.resource_from = step
            move(trial, TrialState.QUEUED)
            trial.reason = f"handed back: {reason}"
            trial.lease_expires_at = None
            counters.add(s, study.id, active=-1)
            self._end_attempt(s, trial, AttemptState.RELEASED, reason)
            self._log(s, trial, LogKind.RELEASE, trial.reason, trial.rung, trial.resource_from)
            return trial

    def checkpointed(self, trial_id: int, checkpoint: str, step: float, *, attempt: int) -> Trial:
        """The live attempt saved the trial's state at ``step`` (``execution.checkpoint_every``)
        and stored it at ``checkpoint``: should the attempt end unfinished (its worker killed,
        its lease run out, handed back without a checkpoint), the trial runs again from there,
        from ``step``. The checkpoint and the resource it was saved at change together.

        ``step`` must be one the trial already reported (so no report before it is lost when
        the trial resumes after it) and not before the job's start; a repeat is a no-op."""
        with self.kit.transaction() as s:
            trial = self._trial(s, trial_id, lock=True)
            self._fence(trial, attempt)
            if trial.state != TrialState.RUNNING:
                raise Conflict(
                    f"trial {trial_id} is {trial.state}; only a running trial saves checkpoints"
                )
            if trial.pending == DecisionKind.PAUSE:
                raise Conflict(
                    f"trial {trial_id} was told to pause; save its checkpoint and call /pause"
                )
            location = check_location(self.kit.settings, trial.study_id, trial.id, checkpoint)
            if location == trial.checkpoint and abs(step - trial.resource_from) < 1e-9:
                return trial  # a repeated request
            if step < trial.resource_from - 1e-9:
                raise InvalidRequest(
                    f"step: {fmt(step)} is before the job's start {fmt(trial.resource_from)}",
                    field="step",
                )
            reported = trial.resource if trial.resource is not None else trial.resource_from
            if step > reported + 1e-9:
                raise InvalidRequest(
                    f"step: {fmt(step)} has not been reported yet (the last report is at "
                    f"{fmt(reported)}); report a step before saving its checkpoint",
                    field="step",
                )
            self._set_checkpoint(trial, location)
            trial.resource_from = step
            trial.lease_expires_at = self._lease(self.kit.clock())
            return trial

    def heartbeat(self, trial_id: int, *, attempt: int) -> datetime | None:
        """Extend the lease of the trial's live attempt, and return it; another attempt's beat
        is refused. On PostgreSQL one statement that moves the lease only while the trial runs
        that attempt (tuneyard/store/fast_paths.py); when it moved nothing, the transaction
        below says why (or extends it, should the trial have just started running it)."""
        fast = self.kit.fast_paths
        if fast is not None:
            now = self.kit.clock()
            try:
                lease = fast.extend_lease(
                    trial_id, attempt, self._lease(now), utcnow(), TrialState.RUNNING
                )
            except (psycopg.OperationalError, psycopg.InterfaceError):
                lease = None  # the transaction below retries it, or answers 503
            if lease is not None:
                return lease
        with self.kit.transaction() as s:
            trial = self._trial(s, trial_id, lock=True)
            self._fence(trial, attempt)
            if trial.state != TrialState.RUNNING:
                raise Conflict(
                    f"trial {trial_id} is {trial.state}; heartbeats are for running trials"
                )
            trial.lease_expires_at = self._lease(self.kit.clock())
            return trial.lease_expires_at

    def reap_expired(self) -> list[int]:
        """Deal with every running trial whose lease ran out (retry or fail it); returns the
        studies touched. One range query on (state, lease_expires_at) finds them."""
        now = self.kit.clock()
        with self.kit.transaction() as s:
            study_ids = list(
                s.scalars(
                    select(Trial.study_id)
                    .where(Trial.state == TrialState.RUNNING, Trial.lease_expires_at < now)
                    .distinct()
                )
            )
        for study_id in study_ids:
            with self.kit.transaction() as s:
                study = self._lock_study(s, study_id)
                ctx = self.kit.context(study)
                board = ctx.board(s, study.id)
                self._reap_expired(s, ctx, study, board, now)
                self._maybe_finish(s, ctx, study, board)
        return study_ids

    def _reap_expired(
        self, s: Session, ctx: StudyContext, study: Study, board: SqlBoard, now: datetime
    ) -> None:
        expired = s.scalars(
            select(Trial).where(
                Trial.state == TrialState.RUNNING,
                Trial.lease_expires_at < now,
                Trial.study_id == study.id,
            )
        ).all()
        for t in expired:
            secs = fmt(self.kit.settings.lease_seconds)
            reason = f"lease expired: no report or heartbeat for {secs} s"
            self._retry_or_fail(s, ctx, study, board, t, reason, reason)


def _note_failure(study: Study, trial: Trial, summary: str, kind: str | None) -> None:
    """Remember the error a trial of the study failed with, and count the trials in a row
    that failed with that same summary."""
    same = study.last_error == summary and study.error_streak > 0
    study.error_streak = study.error_streak + 1 if same else 1
    study.last_error = summary
    study.last_error_type = kind
    study.last_error_trial_id = trial.id


_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def error_class(error: str) -> str | None:
    """The class of the exception a traceback ends with (``ValueError``, ``pkg.mod.MyError``);
    None when the error is not a Python traceback."""
    if not error.lstrip().startswith("Traceback"):
        return None
    found = _EXCEPTION.match(error_summary(error))
    return found.group(1)[:200] if found else None


def error_summary(error: str) -> str:
    """One line that says what went wrong: a traceback's last line (the exception), else
    the first line of the text."""
    lines = [ln for ln in error.strip().splitlines() if ln.strip()]
    if not lines:
        return "error"
    line = lines[0]
    if line.startswith("Traceback"):
        # The exception's line is the last one not indented (notes and chained causes aside).
        line = next((ln for ln in reversed(lines) if not ln.startswith((" ", "\t"))), line)
    return line.strip()[:500]
