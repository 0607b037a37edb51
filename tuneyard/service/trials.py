"""The ask/tell use cases: next job, report, pause, complete, fail, heartbeat.

Each public method is one transaction. Anything that changes which trials run or rank (a new
trial, a promotion, a rung record, the end of a job) holds the study's row lock, so two API
processes serving one study never double-promote, duplicate a trial number or exceed
``max_trials``. A report that reaches no rung locks only its trial row: it is one indexed write.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Float, bindparam, case, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer
from threadpoolctl import ThreadpoolController

from tuneyard.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    StaleAttempt,
    StudyFinished,
    TuneyardError,
)
from tuneyard.scheduler.decisions import Decision, fmt
from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.samplers.base import Observation as SamplerObservation
from tuneyard.scheduler.schedulers import TrialView
from tuneyard.service import metrics as meter
from tuneyard.service.checkpoint_locations import check_location
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
    utcnow,
)
from tuneyard.store.sql import insert_new


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


# A model-based sampler's state is saved at least once per this many new observations.
SAVE_EVERY = 32
# ... or once per this fraction of the history's size, when that is more: a save writes the
# whole history, so saving every SAVE_EVERY observations would cost O(n) per observation.
SAVE_FRACTION = 8
# Observations recorded in a session, by (trial id, resource): each is written once.
_OBSERVED = "tuneyard.trials.observed"


def _save_after(sampler: ModelSampler) -> int:
    """How many new observations a model-based sampler's stored state may lag behind."""
    return max(SAVE_EVERY, len(sampler.history) // SAVE_FRACTION)


@dataclass(frozen=True, eq=False)
class Suggestion:
    """A new trial's configuration made before the study's lock was taken (``presuggest``)."""

    number: int  # the trial number it was suggested for
    base: int  # the study's trials_started when it was suggested
    params: dict[str, Any]
    sampler: ModelSampler  # the copy that made it (a study's context may be rebuilt)


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

    @staticmethod
    def _fence(trial: Trial, attempt: int) -> None:
        """Refuse a call of any attempt but the trial's live one, before it changes anything.

        A worker frozen past its lease (or cut off from the API) and then woken still holds
        its old attempt: meanwhile the trial was queued again, or already runs elsewhere as a
        new attempt. Believing it would store its late reports over the live ones, extend
        the live attempt's lease and let it fail or end a healthy job."""
        if attempt != trial.attempts:
            raise StaleAttempt(trial.id, attempt, trial.attempts)
        if trial.state == "queued":
            raise StaleAttempt(
                trial.id,
                attempt,
                trial.attempts,
                f"it has ended and the trial is queued to run again: {trial.reason}",
            )

    def check_live(self, trial_id: int, attempt: int) -> None:
        """Refuse (:class:`StaleAttempt`) a call of an attempt that is not the trial's live
        one, for the calls that write nothing to the trial itself (a checkpoint upload)."""
        with self.kit.transaction() as s:
            trial = self._trial(s, trial_id)
            self._fence(trial, attempt)

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
        s.add(self._attempt(trial, worker, now))

    @staticmethod
    def _attempt(trial: Trial, worker: str | None, now: datetime) -> Attempt:
        """The row of the trial's attempt number ``trial.attempts``, starting now."""
        return Attempt(
            trial_id=trial.id,
            number=trial.attempts,
            resource_from=trial.resource_from,
            resource_to=trial.resource_to,
            state="running",
            worker=worker,
            started_at=now,
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
        elif state in ("completed", "stopped"):
            # Ended well: an earlier attempt's error stays in that attempt's row only.
            trial.error = None
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
    def next_job(
        self,
        study_id: int,
        worker: str | None = None,
        early: Suggestion | None = None,
        presuggested: bool = False,
    ) -> AssignmentResult | None:
        """A promoted trial to resume, a queued one to run again, or a new trial. The study's
        row lock is held throughout, and that lock orders every new trial and every rung
        decision of the study; a model-based suggestion, the one costly step, is therefore
        made before it is taken: by ``presuggest``, here or, so that one call's suggestion
        overlaps the previous call's transaction, by the caller (``early``, or None with
        ``presuggested`` when it made none)."""
        if not presuggested:
            early = self.presuggest(study_id)
        try:
            return self._next_job(study_id, worker, early)
        finally:
            if early is not None:
                self.kit.forget_suggestion(study_id, early)

    def _next_job(
        self, study_id: int, worker: str | None, early: Suggestion | None
    ) -> AssignmentResult | None:
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
                return AssignmentResult(*self._new_trial(s, ctx, study, board, worker, now, early))
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
        early: Suggestion | None = None,
    ) -> tuple[Trial, str, str]:
        # What changed so far (expired leases handed back) is written already: the queued-
        # trial query flushed it. The counters changed here go out with the new trial's row.
        with s.no_autoflush:
            trial = self._insert_trial(s, ctx, study, board, worker, now, early)
        s.add(self._attempt(trial, worker, now))
        self._log(s, trial, "start", trial.reason or "", None, trial.resource_to)
        return trial, "new", trial.reason or ""

    def _insert_trial(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        worker: str | None,
        now: datetime,
        early: Suggestion | None = None,
    ) -> Trial:
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
        if early is not None and self._still_new(s, study, early, number, ctx):
            params = early.params
            assert isinstance(ctx.sampler, ModelSampler)  # as presuggest made sure
            with ctx.sampler.guard:
                self._save_sampler(s, ctx, study)
        else:
            params = meter.timed_suggest(
                self.kit, ctx, lambda: self._suggest(s, ctx, study, number)
            )
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
            # Its first attempt starts now (the attempt's row needs the trial's id).
            attempts=1,
            worker=worker,
            reason=placement.reason,
            lease_expires_at=self._lease(now),
            created_at=now,
            updated_at=now,
        )
        study.active += 1
        s.add(trial)
        s.flush()
        return trial

    def presuggest(self, study_id: int) -> Suggestion | None:
        """The next new trial's configuration, made without the study's lock, or None when
        the next call may not make a new trial, or its sampler is not model-based. A caller
        whose calls overlap holds it (``Toolkit.hold_suggestion``) until it hands it to
        ``next_job``, which always lets go of it; a held suggestion counts as running for
        the ones made after it, which take the numbers after it.

        Only a model-based suggestion costs much (TPE with 64 running trials, a GP), and made
        under the lock it would hold every other ``next`` and every rung decision of the study
        for as long. It is made here from what is committed (the observations, the running
        trials, the trial number it would get) and from the suggestions this process holds.
        Under the lock ``_insert_trial`` takes it when nothing was made meanwhile (so for a
        lone worker, suggestions are those of the locked path), or when the trials made since
        hold other configurations (``_still_new``): two API processes may suggest from the
        same state and random stream, and the second to take the lock suggests again. The
        stored state is only ever written under the lock."""
        with self.kit.reading() as s:
            study = s.get(Study, study_id)
            if study is None or study.state != "running":
                return None
            ctx = self.kit.context(study)
            sampler = ctx.sampler
            if (
                not isinstance(sampler, ModelSampler)
                or sampler.changes_on_suggest
                or study.active >= ctx.spec.limits.max_concurrent
                or study.trials_started >= ctx.capacity
            ):
                return None
            if ctx.scheduler.pauses and ctx.scheduler.next_promotion(ctx.board(s, study_id)):
                return None  # the next call resumes a paused trial
            with sampler.guard:
                if not self._refresh_sampler(s, study, sampler):
                    return None  # nothing stored yet: the first one is made under the lock
                made = self.kit.suggestions(study_id)
                number = study.trials_started + len(made)
                params = meter.timed_suggest(
                    self.kit,
                    ctx,
                    lambda: self._model_suggest(
                        s, study, sampler, number, [m.params for m in made]
                    ),
                )
            return Suggestion(number, study.trials_started, params, sampler)

    @staticmethod
    def _still_new(
        s: Session, study: Study, early: Suggestion, number: int, ctx: StudyContext
    ) -> bool:
        """Whether a suggestion made before the lock may be the new trial ``number``: no trial
        was made since it was suggested, or those made since hold other configurations. (Its
        random stream may then be that of another number: the order in which parallel
        workers arrive decides which trial gets which configuration anyway.)"""
        if early.sampler is not ctx.sampler:
            return False
        if early.base == number == early.number:
            return True
        since = s.scalars(
            select(Trial.params).where(Trial.study_id == study.id, Trial.number >= early.base)
        )
        return all(params != early.params for params in since)

    def _suggest(self, s: Session, ctx: StudyContext, study: Study, number: int) -> dict[str, Any]:
        """The new trial's configuration, under the study's lock. A model-based sampler is
        brought up to date with the observations recorded since its watermark (not the whole
        study) and told which configurations are running; its state is saved when due (see
        ``_save_sampler``)."""
        sampler = ctx.sampler
        if not isinstance(sampler, ModelSampler):
            return sampler.suggest(number)
        with sampler.guard:
            return self._suggest_model(s, ctx, study, sampler, number)

    def _suggest_model(
        self, s: Session, ctx: StudyContext, study: Study, sampler: ModelSampler, number: int
    ) -> dict[str, Any]:
        created = None
        if not self._refresh_sampler(s, study, sampler):
            created = SamplerState(
                study_id=study.id,
                kind=sampler.kind,
                version=sampler.version,
                watermark=0,
                revision=0,
                state={},
            )
            s.add(created)
            # From scratch, whatever this process's copy took in during a rolled-back call.
            sampler.set_state(type(sampler)(sampler.space, sampler.seed, sampler.spec).get_state())
            sampler.revision, sampler.watermark, sampler.unsaved = -1, 0, 0
            self._refresh_sampler(s, study, sampler, load=False)
        params = self._model_suggest(s, study, sampler, number)
        self._save_sampler(s, ctx, study, created)
        return params

    def _refresh_sampler(
        self, s: Session, study: Study, sampler: ModelSampler, load: bool = True
    ) -> bool:
        """Bring this process's copy of the sampler up to date: the stored state when another
        process moved it on, then the observations after its watermark. False when the study
        has no stored state yet.

        The stored state is read only when this process's copy is not the latest: it holds
        the whole history, and reading it on every call would grow with the study."""
        if load:
            row = s.execute(
                select(SamplerState.revision).where(SamplerState.study_id == study.id)
            ).first()
            if row is None:
                return False
            if sampler.revision != row.revision:
                # Another API process moved it on (or this one's last save was rolled back).
                stored = s.execute(
                    select(SamplerState.state, SamplerState.revision, SamplerState.watermark).where(
                        SamplerState.study_id == study.id
                    )
                ).one()
                sampler.set_state(stored.state)
                sampler.revision, sampler.watermark = stored.revision, stored.watermark
                sampler.unsaved = 0
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
        return True

    @staticmethod
    def _model_suggest(
        s: Session,
        study: Study,
        sampler: ModelSampler,
        number: int,
        pending: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        running = [
            *s.scalars(
                select(Trial.params).where(Trial.study_id == study.id, Trial.state == "running")
            ),
            *pending,
        ]
        # One BLAS thread: the models' matrices are small, and handing them to a second thread
        # costs more than it saves (a GP fit at 500 observations: 11 ms instead of 50 ms).
        with _blas().limit(limits=1):
            return sampler.suggest(number, running)

    def _save_sampler(
        self, s: Session, ctx: StudyContext, study: Study, row: SamplerState | None = None
    ) -> None:
        """Save the sampler's state (study lock held) when suggesting changed it, and
        otherwise once SAVE_EVERY observations (or 1/SAVE_FRACTION of the history, when that
        is more) have come in since the last save: a process that loads an older state reads
        the observations after its watermark, so a lagging save loses nothing, and the common
        next call neither reads nor rewrites the whole history. A copy that another process
        moved past meanwhile is not saved: the stored state is as good, and this process
        loads it next time."""
        sampler = ctx.sampler
        assert isinstance(sampler, ModelSampler)
        if not (
            sampler.changes_on_suggest
            or sampler.unsaved >= _save_after(sampler)
            or sampler.revision < 0
        ):
            return
        if row is None:  # not the row this call created
            row = s.scalar(
                select(SamplerState)
                .where(SamplerState.study_id == study.id)
                .options(defer(SamplerState.state))
            )
        if row is None or (sampler.revision >= 0 and row.revision != sampler.revision):
            return
        row.state = sampler.get_state()
        row.watermark = sampler.watermark
        row.revision += 1
        row.updated_at = self.kit.clock()
        sampler.revision = row.revision
        sampler.unsaved = 0

    def _observe(
        self, s: Session, ctx: StudyContext, trial: Trial, resource: float, score: float
    ) -> None:
        """Record a result for model-based samplers (once per trial and resource)."""
        if not isinstance(ctx.sampler, ModelSampler) or not math.isfinite(score):
            return
        # A trial that stops or completes at a rung is observed there twice in one call.
        done: set[tuple[int, float]] = s.info.setdefault(_OBSERVED, set())
        if (trial.id, resource) in done:
            return
        done.add((trial.id, resource))
        insert_new(
            s.connection(),
            Observation,
            {
                "study_id": trial.study_id,
                "trial_id": trial.id,
                "number": trial.number,
                "resource": resource,
                "score": score,
                "created_at": self.kit.clock(),
            },
            key=(Observation.trial_id, Observation.resource),
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
        ``continue``. It locks only the trial's row, and on PostgreSQL takes two statements:
        one reads and locks the trial with its study and any stored report of this step, one
        updates the trial and stores the report (a data-modifying CTE). They are built once
        and run on plain rows, none through the ORM's unit of work.

        None, with nothing written, when the report is anything else (or is refused): the
        general path (``_report``) then takes it, and answers or refuses it itself."""
        with self.kit.transaction() as s:
            # Core statements on the session's connection: rows, not ORM objects.
            conn = s.connection()
            found = conn.execute(_PEEK, {"trial_id": trial_id, "step": step}).first()
            if found is None:
                return None
            n = len(_PLAIN_TRIAL_COLUMNS)
            study_id, study_state, seed, created_at = cast(
                tuple[int, str, int, datetime], tuple(found[n : n + 4])
            )
            if found[_PLAIN_ATTEMPTS] != attempt:
                return None  # refused by the general path, which says why
            if found[n + 4] is not None:
                stored = _report_row(found[n + 4 :])
                # A step an earlier attempt reported is decided again, by the general path.
                return stored if stored.attempt == attempt else None
            ctx = self.kit.cached_context(study_id, created_at)
            if ctx is None:
                spec = conn.execute(select(Study.spec).where(Study.id == study_id)).scalar_one()
                ctx = self.kit.context(
                    Study(id=study_id, spec=spec, seed=seed, created_at=created_at)
                )
            sched = ctx.scheduler
            if value is None:
                value = metrics.get(ctx.spec.metric)
            if (
                self._bad_value(ctx.spec.metric, value, step) is not None
                or study_state == "stopped"
            ):
                return None
            # The row as locked: the same checks as the general path's, on the same values.
            trial = Trial(**{c.key: v for c, v in zip(_PLAIN_TRIAL_COLUMNS, found, strict=False)})
            if sched.ladder.crossed(max(trial.rung, trial.base_rung - 1), step):
                return None
            try:
                self._check_report(ctx, trial, step)
            except TuneyardError:
                return None
            assert value is not None  # guaranteed by _bad_value
            score = ctx.sign * value
            trial.best_score = score if trial.best_score is None else min(trial.best_score, score)
            trial.score_sum += score
            trial.score_count += 1
            view = _view(trial, trial.best_score)
            if sched.milestones(view, step, score):
                return None
            decision = sched.decide(view, step, score, [], ctx.board(s, study_id))
            if decision.kind != "continue" or decision.promoted_from is not None:
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
            if conn.dialect.name == "postgresql":
                report.id = conn.execute(_UPDATE_AND_INSERT, values).scalar_one()
            else:
                conn.execute(_UPDATE_TRIAL, values)
                report.id = conn.execute(_INSERT_REPORT, values).scalar_one()
            meter.reported(self.kit, s, decision.kind)
            return report

    def _report(
        self,
        trial_id: int,
        step: float,
        value: float | None,
        metrics: dict[str, Any],
        attempt: int,
        recheck: bool,
    ) -> Report:
        """Any report, in one transaction: one that reaches a rung (the study's lock first),
        a bad value, a report to a stopped study, a step an earlier attempt reported, and
        the refusals. A copy of the report stored after the first read (a retry racing the
        original) is looked up again only where this one is refused, where it replaces an
        earlier attempt's, or when the final insert hit the unique key (``recheck``)."""
        with self.kit.transaction() as s:
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

    def _stored_report(self, s: Session, trial_id: int, step: float) -> Report | None:
        return s.scalar(
            select(Report)
            .where(Report.trial_id == trial_id, Report.step == step)
            .execution_options(populate_existing=True)
        )

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
        view = _view(trial, trial.best_score)
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
    def pause(self, trial_id: int, checkpoint: str | None, *, attempt: int) -> Trial:
        """The worker saved the checkpoint of a trial told to pause: it may now be promoted."""
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            self._fence(trial, attempt)
            if trial.state == "paused":
                return trial
            if trial.state != "running" or trial.pending != "pause":
                raise Conflict(f"trial {trial_id} is {trial.state} and was not told to pause")
            if checkpoint is not None:
                checkpoint = check_location(self.kit.settings, trial.study_id, trial.id, checkpoint)
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
        *,
        attempt: int,
    ) -> Trial:
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            self._fence(trial, attempt)
            if trial.state == "completed":
                return trial
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            if value is None:
                value = metrics.get(ctx.spec.metric)
            if value is None:
                value = trial.value
            if checkpoint is not None and trial.state == "running":
                trial.checkpoint = check_location(
                    self.kit.settings, trial.study_id, trial.id, checkpoint
                )
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

    def fail(self, trial_id: int, error: str, output: str | None = None, *, attempt: int) -> Trial:
        """The objective of the live attempt crashed: ``error`` is what went wrong (a message
        or a traceback), ``output`` the end of what it printed. The trial's reason is the
        error's summary; the error, with the output after it, is stored."""
        text = error if not output else f"{error}\n\nits output ends with:\n{output}"
        with self.kit.transaction() as s:
            peek = self._trial(s, trial_id)
            study = self._lock_study(s, peek.study_id)
            trial = self._trial(s, trial_id, lock=True)
            repeated = trial.state == "failed" or (trial.state == "queued" and trial.error == text)
            if attempt == trial.attempts and repeated:
                return trial  # a repeated request: the attempt already failed
            self._fence(trial, attempt)
            if trial.state != "running":
                raise Conflict(f"trial {trial_id} is {trial.state}; only a running trial can fail")
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            self._retry_or_fail(s, ctx, study, board, trial, error_summary(error), text)
            self._maybe_finish(s, ctx, study, board)
            return trial

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
            handed_back = trial.state == "queued" and trial.reason == f"handed back: {reason}"
            if attempt == trial.attempts and handed_back:
                return trial  # a repeated request
            self._fence(trial, attempt)
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
                trial.checkpoint = check_location(
                    self.kit.settings, trial.study_id, trial.id, checkpoint
                )
                trial.resource_from = step
            trial.state = "queued"
            trial.reason = f"handed back: {reason}"
            trial.lease_expires_at = None
            study.active = max(0, study.active - 1)
            self._end_attempt(s, trial, "released", reason)
            self._log(s, trial, "release", trial.reason, trial.rung, trial.resource_from)
            return trial

    def heartbeat(self, trial_id: int, *, attempt: int) -> Trial:
        """Extend the lease of the trial's live attempt; another attempt's beat is refused."""
        with self.kit.transaction() as s:
            trial = self._trial(s, trial_id, lock=True)
            self._fence(trial, attempt)
            if trial.state != "running":
                raise Conflict(
                    f"trial {trial_id} is {trial.state}; heartbeats are for running trials"
                )
            trial.lease_expires_at = self._lease(self.kit.clock())
            return trial


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

# The plain report's statements, built once: building and hashing a statement on every call
# costs more than running it.
_PEEK = (
    select(
        *_PLAIN_TRIAL_COLUMNS,
        Study.id,
        Study.state,
        Study.seed,
        Study.created_at,
        *_REPORT_COLUMNS,
    )
    .join(Study, Study.id == Trial.study_id)
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


def _report_row(values: Sequence[Any]) -> Report:
    """A stored report, from the values of ``_REPORT_COLUMNS``."""
    return Report(**{c.key: v for c, v in zip(_REPORT_COLUMNS, values, strict=True)})


def _view(trial: Trial, best_score: float) -> TrialView:
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


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities are not JSON: keep them readable as strings."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = str(v)
        else:
            out[k] = v
    return out
