"""The ask/tell use cases: next job, report, pause, complete, fail, heartbeat.

Each public method is one transaction. Anything that changes which trials run or rank (a new
trial, a promotion, a rung record, the end of a job) holds the study's row lock, so two API
processes serving one study never double-promote, duplicate a trial number or exceed
``max_trials``. A report that reaches no rung locks only its trial row: it is one indexed write.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, literal, select, update
from sqlalchemy.orm import Session
from threadpoolctl import ThreadpoolController

from tuneyard.errors import Conflict, InvalidRequest, NotFound, StudyFinished
from tuneyard.scheduler.decisions import Decision, fmt
from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.samplers.base import Observation as SamplerObservation
from tuneyard.scheduler.schedulers import TrialView
from tuneyard.service import metrics as meter
from tuneyard.service.context import StudyContext, Toolkit
from tuneyard.store.board import SqlBoard
from tuneyard.store.models import (
    Attempt,
    DecisionLog,
    Observation,
    Report,
    RungEntry,
    SamplerState,
    Study,
    Trial,
)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


# A model-based sampler's state is saved at least once per this many new observations.
SAVE_EVERY = 32


@dataclass(frozen=True)
class AssignmentResult:
    trial: Trial
    kind: str
    reason: str


class TrialService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    # -- shared helpers --------------------------------------------------------------------
    def _lock_study(self, s: Session, study_id: int) -> Study:
        study = s.scalar(
            select(Study)
            .where(Study.id == study_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        return study

    def _trial(self, s: Session, trial_id: int, lock: bool = False) -> Trial:
        q = select(Trial).where(Trial.id == trial_id)
        if lock:
            # Re-read under the lock: the identity map may hold a copy read before it.
            q = q.with_for_update().execution_options(populate_existing=True)
        trial = s.scalar(q)
        if trial is None:
            raise NotFound(f"trial {trial_id} does not exist")
        return trial

    def _log(
        self,
        s: Session,
        trial: Trial,
        kind: str,
        reason: str,
        rung: int | None = None,
        resource: float | None = None,
    ) -> None:
        s.add(
            DecisionLog(
                study_id=trial.study_id,
                trial_id=trial.id,
                kind=kind,
                reason=reason,
                rung=rung,
                resource=resource,
                created_at=self.kit.clock(),
            )
        )
        meter.decided(self.kit, s, kind)

    def _end_attempt(self, s: Session, trial: Trial, state: str, error: str | None = None) -> None:
        s.execute(
            update(Attempt)
            .where(
                Attempt.trial_id == trial.id,
                Attempt.number == trial.attempts,
                Attempt.ended_at.is_(None),
            )
            .values(state=state, error=error, ended_at=self.kit.clock())
        )

    def _start_attempt(self, s: Session, trial: Trial, worker: str | None, now: datetime) -> None:
        trial.attempts += 1
        s.add(
            Attempt(
                trial_id=trial.id,
                number=trial.attempts,
                resource_from=trial.resource_from,
                resource_to=trial.resource_to,
                state="running",
                worker=worker,
                started_at=now,
            )
        )

    def _lease(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.kit.settings.lease_seconds)

    def _target_rung(self, ctx: StudyContext, trial: Trial) -> int | None:
        """The rung a running trial's current job is heading to, if its range ends on one."""
        res = ctx.scheduler.resources
        for k in range(max(trial.rung, trial.base_rung - 1) + 1, len(res)):
            if abs(res[k] - trial.resource_to) < 1e-9:
                return k
        return None

    def _end_job(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        trial: Trial,
        state: str,
        reason: str,
        error: str | None = None,
    ) -> None:
        """Move a running trial to a final state and free its slot (study lock held)."""
        if trial.state != "running":
            raise Conflict(f"trial {trial.id} is {trial.state}, not running")
        if state != "completed" or trial.rung < ctx.scheduler.ladder.top:
            # A synchronous rung waits for every trial sent to it; this one will not arrive.
            k = self._target_rung(ctx, trial)
            if k is not None and ctx.scheduler.pauses:
                board.mark_dropped(trial.bracket, k)
        now = self.kit.clock()
        trial.state = state
        trial.reason = reason
        trial.pending = None
        trial.lease_expires_at = None
        trial.ended_at = now
        if error is not None:
            trial.error = error
        study.active = max(0, study.active - 1)
        self._end_attempt(s, trial, state, error)
        self._log(s, trial, {"completed": "complete", "stopped": "stop"}.get(state, "fail"), reason)

    def _retry_or_fail(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        trial: Trial,
        reason: str,
        error: str,
    ) -> None:
        """A failed attempt: queue the trial to run the same job again while it has retries
        left (``execution.max_retries``), from the same checkpoint; else fail it."""
        retries = ctx.spec.execution.max_retries if ctx.spec.execution else 0
        failed = s.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.trial_id == trial.id, Attempt.state == "failed")
        )
        if int(failed or 0) >= retries:
            self._end_job(s, ctx, study, board, trial, "failed", reason, error=error)
            return
        trial.state = "queued"
        trial.reason = f"retry {int(failed or 0) + 1} of {retries}: {reason}"
        trial.error = error
        trial.lease_expires_at = None
        study.active = max(0, study.active - 1)
        self._end_attempt(s, trial, "failed", error)
        self._log(s, trial, "retry", trial.reason, trial.rung, trial.resource_from)

    def _maybe_finish(self, s: Session, ctx: StudyContext, study: Study, board: SqlBoard) -> bool:
        """Complete the study when nothing runs, nothing can be promoted and no trial is left."""
        if study.state != "running" or study.active > 0:
            return False
        if study.trials_started < ctx.capacity:
            return False
        queued = s.scalar(
            select(Trial.id).where(Trial.study_id == study.id, Trial.state == "queued").limit(1)
        )
        if queued is not None:
            return False
        if ctx.scheduler.next_promotion(board) is not None:
            return False
        self._finish(s, study, "completed", "all trials finished")
        return True

    def _finish(self, s: Session, study: Study, state: str, reason: str) -> None:
        now = self.kit.clock()
        study.state = state
        study.reason = reason
        study.finished_at = now
        why = f"not promoted: the study {'finished' if state == 'completed' else 'was stopped'}"
        leftovers = s.scalars(
            select(Trial).where(Trial.study_id == study.id, Trial.state.in_(("paused", "queued")))
        ).all()
        for t in leftovers:
            t.state = "stopped"
            t.reason = why
            t.ended_at = now
            self._log(s, t, "stop", why, rung=t.rung)
        s.execute(
            update(RungEntry)
            .where(RungEntry.study_id == study.id, RungEntry.waiting.is_(True))
            .values(waiting=False)
        )

    # -- next ------------------------------------------------------------------------------
    def next_job(self, study_id: int, worker: str | None = None) -> AssignmentResult | None:
        with self.kit.transaction() as s:
            study = self._lock_study(s, study_id)
            if study.state in ("stopped", "completed"):
                raise StudyFinished(f"study {study_id} is {study.state}")
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            now = self.kit.clock()
            self._reap_expired(s, ctx, study, board, now)
            if study.state == "paused":
                return None
            if study.active >= ctx.spec.limits.max_concurrent:
                return None
            # A queued trial (a retry, or one handed back) goes preferably to the worker that
            # ran it last, whose cache may still hold its checkpoint; any other takes it
            # otherwise, so none waits for that worker. Few trials are queued at a time.
            mine = case((Trial.worker == worker, 0), else_=1) if worker else literal(1)
            retry = s.scalar(
                select(Trial)
                .where(Trial.study_id == study.id, Trial.state == "queued")
                .order_by(mine, Trial.number)
                .limit(1)
                .with_for_update()
            )
            if retry is not None:
                # A retry runs its job again, from the checkpoint the job started from.
                retry.state = "running"
                retry.worker = worker
                retry.lease_expires_at = self._lease(now)
                self._start_attempt(s, retry, worker, now)
                study.active += 1
                kind = "resume" if retry.checkpoint else "new"
                return AssignmentResult(retry, kind, retry.reason or "retry")
            promo = ctx.scheduler.next_promotion(board)
            if promo is not None:
                trial = self._trial(s, promo.trial_id, lock=True)
                if trial.state != "paused":
                    raise Conflict(
                        f"trial {trial.id} was chosen for promotion but is {trial.state}"
                    )
                board.mark_promoted(promo.bracket, promo.from_rung, trial.id)
                trial.state = "running"
                trial.reason = promo.reason
                trial.resource_from = promo.resource_from
                trial.resource_to = promo.resource_to
                trial.worker = worker
                trial.lease_expires_at = self._lease(now)
                self._start_attempt(s, trial, worker, now)
                study.active += 1
                self._log(s, trial, "promote", promo.reason, promo.from_rung, promo.resource_to)
                return AssignmentResult(trial, "resume", promo.reason)
            if ctx.scheduler.pauses:
                done = ctx.scheduler.finished_brackets(board)
                if done:
                    board.mark_done(done)
            if study.trials_started < ctx.capacity:
                return AssignmentResult(*self._new_trial(s, ctx, study, board, worker, now))
            if self._maybe_finish(s, ctx, study, board):
                raise StudyFinished(f"study {study_id} is completed")
            return None

    def _new_trial(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        worker: str | None,
        now: datetime,
    ) -> tuple[Trial, str, str]:
        number = study.trials_started
        placement, new_bracket = ctx.scheduler.place(number, board, study.brackets_opened)
        if new_bracket is not None:
            board.open_bracket(new_bracket)
            study.brackets_opened += 1
        bracket = board.bracket_row(placement.bracket)
        if bracket is None:
            raise Conflict(f"bracket {placement.bracket} of study {study.id} is missing")
        bracket.admitted += 1
        if bracket.size is not None and bracket.admitted >= bracket.size:
            bracket.closed = True
        study.trials_started += 1
        if study.trials_started >= ctx.capacity:
            board.close_all()
        params = meter.timed_suggest(self.kit, ctx, lambda: self._suggest(s, ctx, study, number))
        trial = Trial(
            study_id=study.id,
            number=number,
            state="running",
            params=params,
            bracket=placement.bracket,
            base_rung=bracket.base,
            rung=-1,
            resource_from=placement.resource_from,
            resource_to=placement.resource_to,
            score_sum=0.0,
            score_count=0,
            attempts=0,
            worker=worker,
            reason=placement.reason,
            lease_expires_at=self._lease(now),
            created_at=now,
            updated_at=now,
        )
        s.add(trial)
        s.flush()
        self._start_attempt(s, trial, worker, now)
        study.active += 1
        self._log(s, trial, "start", placement.reason, None, placement.resource_to)
        return trial, "new", placement.reason

    def _suggest(self, s: Session, ctx: StudyContext, study: Study, number: int) -> dict[str, Any]:
        """The new trial's configuration. A model-based sampler is brought up to date with
        the observations recorded since its watermark (not the whole study) and told which
        configurations are running (study lock held).

        Its state is saved when suggesting changed it, and otherwise once SAVE_EVERY
        observations have come in since the last save: a process that loads an older state
        reads the few observations after its watermark, so a lagging save loses nothing and
        the common next call skips rewriting the whole history."""
        sampler = ctx.sampler
        if not isinstance(sampler, ModelSampler):
            return sampler.suggest(number)
        row = s.get(SamplerState, study.id)
        if row is None:
            row = SamplerState(
                study_id=study.id,
                kind=sampler.kind,
                version=sampler.version,
                watermark=0,
                revision=0,
                state={},
            )
            s.add(row)
            # From scratch, whatever this process's copy took in during a rolled-back call.
            sampler.set_state(type(sampler)(sampler.space, sampler.seed, sampler.spec).get_state())
            sampler.revision, sampler.watermark, sampler.unsaved = -1, 0, 0
        elif sampler.revision != row.revision:
            # Another API process moved it on (or this one's last save was rolled back).
            sampler.set_state(row.state)
            sampler.revision, sampler.watermark, sampler.unsaved = row.revision, row.watermark, 0
        new = s.execute(
            select(
                Observation.id,
                Observation.number,
                Observation.resource,
                Observation.score,
                Trial.params,
            )
            .join(Trial, Trial.id == Observation.trial_id)
            .where(Observation.study_id == study.id, Observation.id > sampler.watermark)
            .order_by(Observation.id)
        ).all()
        if new:
            sampler.observe(
                [SamplerObservation(n, params, r, score) for _, n, r, score, params in new]
            )
            sampler.watermark = new[-1][0]
            sampler.unsaved += len(new)
        running = list(
            s.scalars(
                select(Trial.params).where(Trial.study_id == study.id, Trial.state == "running")
            )
        )
        # One BLAS thread: the models' matrices are small, and handing them to a second thread
        # costs more than it saves (a GP fit at 500 observations: 11 ms instead of 50 ms).
        with _blas().limit(limits=1):
            params = sampler.suggest(number, running)
        if sampler.changes_on_suggest or sampler.unsaved >= SAVE_EVERY or sampler.revision < 0:
            row.state = sampler.get_state()
            row.watermark = sampler.watermark
            row.revision += 1
            row.updated_at = self.kit.clock()
            sampler.revision = row.revision
            sampler.unsaved = 0
        return params

    def _observe(
        self, s: Session, ctx: StudyContext, trial: Trial, resource: float, score: float
    ) -> None:
        """Record a result for model-based samplers (once per trial and resource)."""
        if not isinstance(ctx.sampler, ModelSampler) or not math.isfinite(score):
            return
        seen = s.scalar(
            select(Observation.id).where(
                Observation.trial_id == trial.id, Observation.resource == resource
            )
        )
        if seen is None:
            s.add(
                Observation(
                    study_id=trial.study_id,
                    trial_id=trial.id,
                    number=trial.number,
                    resource=resource,
                    score=score,
                    created_at=self.kit.clock(),
                )
            )

    def reap_expired(self) -> list[int]:
        """Deal with every running trial whose lease ran out (retry or fail it); returns the
        studies touched. One range query on (state, lease_expires_at) finds them."""
        now = self.kit.clock()
        with self.kit.transaction() as s:
            study_ids = list(
                s.scalars(
                    select(Trial.study_id)
                    .where(Trial.state == "running", Trial.lease_expires_at < now)
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
                Trial.state == "running",
                Trial.lease_expires_at < now,
                Trial.study_id == study.id,
            )
        ).all()
        for t in expired:
            secs = fmt(self.kit.settings.lease_seconds)
            reason = f"lease expired: no report or heartbeat for {secs} s"
            self._retry_or_fail(s, ctx, study, board, t, reason, reason)

    # -- report ----------------------------------------------------------------------------
    def report(
        self, trial_id: int, step: float, value: float | None, metrics: dict[str, Any]
    ) -> Report:
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            stored = self._stored_report(s, trial_id, step)
            if stored is not None:
                return stored
            study = s.get(Study, peek.study_id)
            if study is None:
                raise NotFound(f"study {peek.study_id} does not exist")
            ctx = self.kit.context(study)
            metric = ctx.spec.metric
            if value is None:
                value = metrics.get(metric)
            bad = self._bad_value(metric, value, step)
            sched = ctx.scheduler
            crosses = bool(sched.ladder.crossed(max(peek.rung, peek.base_rung - 1), step))
            heavy = bad is not None or crosses or study.state == "stopped"
            if heavy:
                study = self._lock_study(s, study.id)
            trial = self._trial(s, trial_id, lock=True)
            stored = self._stored_report(s, trial_id, step)
            if stored is not None:
                return stored
            self._check_report(ctx, trial, step)
            now = self.kit.clock()
            board = ctx.board(s, study.id)
            if bad is not None:
                decision = Decision("stop", bad)
                self._end_job(s, ctx, study, board, trial, "failed", bad, error=bad)
                self._maybe_finish(s, ctx, study, board)
            elif study.state == "stopped":
                decision = Decision("stop", "the study was stopped")
                self._end_job(s, ctx, study, board, trial, "stopped", decision.reason)
                trial.value, trial.resource = value, step
            else:
                assert value is not None  # guaranteed by _bad_value
                decision = self._decide(s, ctx, study, board, trial, step, value, now)
            report = Report(
                trial_id=trial.id,
                step=step,
                value=value if bad is None else None,
                metrics=_jsonable(metrics),
                decision=decision.kind,
                reason=decision.reason,
                resource_to=trial.resource_to,
                created_at=now,
            )
            s.add(report)
            meter.reported(self.kit, s, decision.kind)
            return report

    def _stored_report(self, s: Session, trial_id: int, step: float) -> Report | None:
        return s.scalar(select(Report).where(Report.trial_id == trial_id, Report.step == step))

    @staticmethod
    def _bad_value(metric: str, value: float | None, step: float) -> str | None:
        if value is None:
            return f"metric {metric!r} missing from the report at step {fmt(step)}"
        if math.isnan(value):
            return f"metric {metric!r} is NaN at step {fmt(step)}"
        if math.isinf(value):
            return f"metric {metric!r} is infinite ({value}) at step {fmt(step)}"
        return None

    def _check_report(self, ctx: StudyContext, trial: Trial, step: float) -> None:
        if trial.state != "running":
            raise Conflict(
                f"trial {trial.id} is {trial.state}; it takes no more reports "
                f"(a repeated report of an earlier step returns its stored decision)"
            )
        if trial.pending == "pause":
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
        value: float,
        now: datetime,
    ) -> Decision:
        sched = ctx.scheduler
        score = ctx.sign * value
        trial.value = value
        trial.resource = step
        trial.best_score = score if trial.best_score is None else min(trial.best_score, score)
        trial.score_sum += score
        trial.score_count += 1
        trial.lease_expires_at = self._lease(now)
        view = TrialView(
            trial_id=trial.id,
            number=trial.number,
            bracket=trial.bracket,
            rung=trial.rung,
            resource_to=trial.resource_to,
            best_score=trial.best_score,
            mean_score=trial.score_sum / trial.score_count,
            base=trial.base_rung,
        )
        records = sched.milestones(view, step, score)
        for rec in records:
            board.record(rec.bracket, rec.rung, trial.id, rec.score)
            trial.rung = rec.rung
            self._observe(s, ctx, trial, sched.resources[rec.rung], score)
        decision = sched.decide(view, step, score, records, board)
        if decision.kind == "continue" and decision.promoted_from is not None:
            board.mark_promoted(trial.bracket, decision.promoted_from, trial.id)
            trial.resource_to = decision.resource_to or trial.resource_to
            # The attempt runs on: its recorded range says where it now ends.
            s.execute(
                update(Attempt)
                .where(Attempt.trial_id == trial.id, Attempt.number == trial.attempts)
                .values(resource_to=trial.resource_to)
            )
            trial.reason = decision.reason
            self._log(s, trial, "promote", decision.reason, decision.rung, trial.resource_to)
        elif decision.kind == "pause":
            trial.pending = "pause"
            trial.reason = decision.reason
            self._log(s, trial, "pause", decision.reason, decision.rung, step)
        elif decision.kind == "stop":
            self._observe(s, ctx, trial, step, score)
            self._end_job(s, ctx, study, board, trial, "stopped", decision.reason)
            self._maybe_finish(s, ctx, study, board)
        elif decision.kind == "complete":
            self._observe(s, ctx, trial, step, score)
            self._end_job(s, ctx, study, board, trial, "completed", decision.reason)
            self._maybe_finish(s, ctx, study, board)
        return decision

    # -- end of a job ------------------------------------------------------------------------
    def pause(self, trial_id: int, checkpoint: str | None) -> Trial:
        """The worker saved the checkpoint of a trial told to pause: it may now be promoted."""
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            if trial.state == "paused":
                return trial
            if trial.state != "running" or trial.pending != "pause":
                raise Conflict(f"trial {trial_id} is {trial.state} and was not told to pause")
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            trial.state = "paused"
            trial.pending = None
            trial.checkpoint = checkpoint
            trial.lease_expires_at = None
            study.active = max(0, study.active - 1)
            self._end_attempt(s, trial, "paused")
            board.set_waiting(trial.bracket, trial.rung, trial.id, True)
            self._maybe_finish(s, ctx, study, board)
            return trial

    def complete(
        self,
        trial_id: int,
        value: float | None,
        metrics: dict[str, Any],
        checkpoint: str | None,
    ) -> Trial:
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            if trial.state == "completed":
                return trial
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            if value is None:
                value = metrics.get(ctx.spec.metric)
            if value is None:
                value = trial.value
            if checkpoint is not None:
                trial.checkpoint = checkpoint
            step = trial.resource if trial.resource is not None else trial.resource_to
            bad = self._bad_value(ctx.spec.metric, value, step)
            if trial.state != "running":
                raise Conflict(f"trial {trial_id} is {trial.state}; only a running trial completes")
            if bad is not None:
                self._end_job(s, ctx, study, board, trial, "failed", bad, error=bad)
            else:
                trial.value = value
                if trial.resource is None:
                    trial.resource = trial.resource_to
                assert value is not None  # guaranteed by _bad_value
                self._observe(s, ctx, trial, trial.resource, ctx.sign * value)
                self._end_job(s, ctx, study, board, trial, "completed", "objective returned")
            self._maybe_finish(s, ctx, study, board)
            return trial

    def fail(self, trial_id: int, error: str) -> Trial:
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            if trial.state == "failed" or (trial.state == "queued" and trial.error == error):
                return trial  # a repeated request: the attempt already failed
            if trial.state != "running":
                raise Conflict(f"trial {trial_id} is {trial.state}; only a running trial can fail")
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            first_line = error.strip().splitlines()[-1] if error.strip() else "error"
            self._retry_or_fail(s, ctx, study, board, trial, first_line[:500], error)
            self._maybe_finish(s, ctx, study, board)
            return trial

    def release(
        self, trial_id: int, reason: str, checkpoint: str | None, step: float | None
    ) -> Trial:
        """Hand a running trial back unfinished (its worker is shutting down): it is queued to
        run again, from ``checkpoint`` saved at ``step`` when given, else from where its job
        started. Not a failure: it uses none of the trial's retries."""
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            if trial.state == "queued" and trial.reason and trial.reason.startswith("handed back"):
                return trial  # a repeated request
            if trial.state != "running":
                raise Conflict(
                    f"trial {trial_id} is {trial.state}; only a running trial is handed back"
                )
            if trial.pending == "pause":
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
                trial.checkpoint = checkpoint
                trial.resource_from = step
            trial.state = "queued"
            trial.reason = f"handed back: {reason}"
            trial.lease_expires_at = None
            study.active = max(0, study.active - 1)
            self._end_attempt(s, trial, "released", reason)
            self._log(s, trial, "release", trial.reason, trial.rung, trial.resource_from)
            return trial

    def heartbeat(self, trial_id: int) -> Trial:
        with self.kit.transaction() as s:
            trial = self._trial(s, trial_id, lock=True)
            if trial.state != "running":
                raise Conflict(
                    f"trial {trial_id} is {trial.state}; heartbeats are for running trials"
                )
            trial.lease_expires_at = self._lease(self.kit.clock())
            return trial


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities are not JSON: keep them readable as strings."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = str(v)
        else:
            out[k] = v
    return out
