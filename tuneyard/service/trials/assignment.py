"""The next piece of work of a study: a queued trial to run again, a promotion to resume, or
a new trial placed in a bracket; all under the study's row lock, taken once for the calls
that queued for it meanwhile."""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, literal, select
from sqlalchemy.orm import Session

from tuneyard.errors import (
    Conflict,
    StudyFinished,
)
from tuneyard.protocol import ReplicateInfo
from tuneyard.scheduler.decisions import Promotion
from tuneyard.scheduler.engine import NEW_TRIAL
from tuneyard.service import joblog
from tuneyard.service import metrics as meter
from tuneyard.service.context import StudyContext
from tuneyard.service.transitions import move
from tuneyard.service.trials.lifecycle import Lifecycle
from tuneyard.service.trials.replicates import replicate_info
from tuneyard.service.trials.suggestions import Suggestion
from tuneyard.states import FINAL_STUDY_STATES, JobKind, LogKind, StudyState, TrialState
from tuneyard.store import counters
from tuneyard.store.board import SqlBoard
from tuneyard.store.models import (
    Study,
    Trial,
)


class _Turn(enum.Enum):
    NOTHING = "nothing"  # no call of the turn gets anything now
    ENDED = "ended"  # the study is over (stored): the calls left get StudyFinished


_NOTHING, _ENDED = _Turn.NOTHING, _Turn.ENDED


@dataclass(frozen=True)
class AssignmentResult:
    trial: Trial
    kind: JobKind
    reason: str
    # The fold and/or seed the job evaluates, in a study with ``evaluation``.
    replicate: ReplicateInfo | None = None


@dataclass(frozen=True)
class NextCall:
    """One worker's ``next`` call, as :meth:`TrialService.next_jobs` serves it."""

    worker: str | None = None
    # Its new trial's configuration made before the study's lock (``presuggest``), if any.
    early: Suggestion | None = None
    # The GPUs the worker runs the job on (none: a CPU slot), recorded on its attempt.
    gpus: Sequence[dict[str, Any]] = ()


# What a call got: its job, nothing for now (None), or the error it would have raised alone.
NextOutcome = AssignmentResult | Exception | None


class TrialService(Lifecycle):
    # -- next ------------------------------------------------------------------------------
    def next_job(
        self,
        study_id: int,
        worker: str | None = None,
        early: Suggestion | None = None,
        presuggested: bool = False,
        gpus: Sequence[dict[str, Any]] = (),
    ) -> AssignmentResult | None:
        """A promoted trial to resume, a queued one to run again, or a new trial (one call of
        :meth:`next_jobs`). ``early``: the new trial's configuration made before the study's
        lock, by the caller; without ``presuggested`` it is made here (``presuggest``)."""
        if not presuggested:
            early = self.presuggest(study_id)
        [outcome] = self.next_jobs(study_id, [NextCall(worker, early, gpus)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def next_jobs(
        self, study_id: int, calls: Sequence[NextCall], seconds: float | None = None
    ) -> list[NextOutcome]:
        """The next piece of work for each of several ``next`` calls of one study, in order,
        in one transaction under the study's row lock: that lock orders every new trial and
        every promotion of the study, so the database serves a study's calls one at a time
        whatever the number of API processes, and serving the calls that queued meanwhile in
        one turn pays for the lock, the reaping of expired leases and the rung reads once
        (tuneyard/service/ahead.py gathers them). A model-based suggestion, the one costly
        step, is made before the lock (``presuggest``; each call's ``early``).

        ``seconds``: how long the turn may hold the lock; once past it, no further call is
        taken, and the answers are those of the calls served (at least the first), the
        others left for the next turn with their suggestions still held. A call that gets
        nothing (no free slot, nothing to promote and no new trial allowed) ends the turn:
        the calls after it get nothing either, as they would find the same. When the study
        ends, the calls after the one that found its end get :class:`StudyFinished`. When
        the turn fails (a conflict, the database), nothing of it is kept and each call is
        served alone, so each gets the answer it would have had by itself. The suggestions
        of the calls answered are let go of."""
        answered = len(calls)
        try:
            try:
                out = self._next_jobs(study_id, calls, seconds)
                answered = len(out)
                return out
            except Exception:
                if len(calls) == 1:
                    raise
            return [self._next_alone(study_id, call) for call in calls]
        finally:
            for call in calls[:answered]:
                if call.early is not None:
                    self.kit.ahead.forget(study_id, call.early)

    def _next_alone(self, study_id: int, call: NextCall) -> NextOutcome:
        try:
            return self._next_jobs(study_id, [call])[0]
        except Exception as e:  # the call's own answer, raised by the caller
            return e

    def _next_jobs(
        self, study_id: int, calls: Sequence[NextCall], seconds: float | None = None
    ) -> list[NextOutcome]:
        out: list[NextOutcome] = []
        job: AssignmentResult | _Turn | None = None
        with self.kit.transaction() as s:
            study = self._lock_study(s, study_id)
            locked = time.monotonic()
            if study.state in FINAL_STUDY_STATES:
                raise StudyFinished(f"study {study_id} is {study.state}")
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            now = self.kit.clock()
            self._reap_expired(s, ctx, study, board, now)
            if study.state in (StudyState.PAUSED, StudyState.FAILING):
                # Its running trials finish; it starts nothing until resumed.
                return [None] * len(calls)
            for call in calls:
                job = self._assign(s, ctx, study, board, call, now)
                if isinstance(job, _Turn):
                    break
                out.append(job)
                if seconds is not None and time.monotonic() - locked > seconds:
                    return out  # the turn's time is up: the rest wait for the next one
            ended = study.state if job is _ENDED else None
        # Said once the transaction has stored the study's end: raised inside it, the end
        # would be rolled back with it.
        rest = len(calls) - len(out)
        if ended is None:
            return out + [None] * rest
        return out + [StudyFinished(f"study {study_id} is {ended}") for _ in range(rest)]

    def _assign(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        call: NextCall,
        now: datetime,
    ) -> AssignmentResult | _Turn | None:
        """One call's job, inside the turn's transaction (the study's lock held): None when
        this call gets nothing but the next one may, ``_NOTHING`` when no call would get
        anything, ``_ENDED`` when this call found the study's end (stored)."""
        worker, gpus = call.worker, call.gpus
        # The committed count (jobs ended meanwhile lower it) plus the reaped ones and the
        # slots this turn took.
        active = counters.read(s, study.id).active
        if active >= ctx.spec.limits.max_concurrent:
            return _NOTHING
        if ctx.scheduler.pauses:
            board.read_rungs()  # what the promotion search and the placement look at
        # A queued trial (a retry, or one handed back) goes preferably to the worker that
        # ran it last, whose cache may still hold its checkpoint; any other takes it
        # otherwise, so none waits for that worker. Few trials are queued at a time.
        mine = case((Trial.worker == worker, 0), else_=1) if worker else literal(1)
        work = ctx.engine.next_work(
            lambda: s.scalar(
                select(Trial)
                .where(Trial.study_id == study.id, Trial.state == TrialState.QUEUED)
                .order_by(mine, Trial.number)
                .limit(1)
                .with_for_update()
            ),
            board,
            may_start_new=self._may_start_new(s, study, ctx, now),
            running=active,
        )
        if isinstance(work, Trial):
            retry = work
            # A retry runs its job again, from the checkpoint the job started from.
            move(retry, TrialState.RUNNING)
            retry.worker = worker
            retry.lease_expires_at = self._lease(now)
            self._start_attempt(s, retry, worker, now, gpus)
            counters.add(s, study.id, active=1)
            kind = JobKind.RESUME if retry.checkpoint else JobKind.NEW
            return self._result(ctx, retry, kind, retry.reason or "retry")
        if isinstance(work, Promotion):
            promo = work
            trial = self._trial(s, promo.trial_id, lock=True)
            if trial.state != TrialState.PAUSED:
                raise Conflict(f"trial {trial.id} was chosen for promotion but is {trial.state}")
            move(trial, TrialState.RUNNING)
            trial.reason = promo.reason
            trial.resource_from = promo.resource_from
            trial.resource_to = promo.resource_to
            if ctx.spec.evaluation is not None:
                # Its replicates resume, each from its own checkpoint; this worker takes the
                # first (None: they all still run to save theirs).
                self._log(
                    s, trial, LogKind.PROMOTE, promo.reason, promo.from_rung, promo.resource_to
                )
                self._advance(s, ctx, study, board, trial)
                child = self._take_replicate(s, study, trial, worker, now, gpus)
                if child is None:
                    return None
                return self._result(ctx, child, JobKind.RESUME, promo.reason)
            trial.worker = worker
            trial.lease_expires_at = self._lease(now)
            self._start_attempt(s, trial, worker, now, gpus)
            counters.add(s, study.id, active=1)
            self._log(s, trial, LogKind.PROMOTE, promo.reason, promo.from_rung, promo.resource_to)
            return AssignmentResult(trial, JobKind.RESUME, promo.reason)
        if work is NEW_TRIAL:
            job = self._new_trial(s, ctx, study, board, worker, now, call.early, gpus)
            return self._result(ctx, *job)
        return _ENDED if self._maybe_finish(s, ctx, study, board) else _NOTHING

    @staticmethod
    def _result(ctx: StudyContext, trial: Trial, kind: JobKind, reason: str) -> AssignmentResult:
        ev = ctx.spec.evaluation
        if ev is None or trial.parent_id is None:
            return AssignmentResult(trial, kind, reason)
        return AssignmentResult(trial, kind, reason, replicate_info(ev, trial))

    def _new_trial(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        worker: str | None,
        now: datetime,
        early: Suggestion | None = None,
        gpus: Sequence[dict[str, Any]] = (),
    ) -> tuple[Trial, JobKind, str]:
        # What changed so far (expired leases handed back) is written already: the queued-
        # trial query flushed it. The counters changed here go out with the new trial's row.
        with s.no_autoflush:
            trial = self._insert_trial(s, ctx, study, board, worker, now, early)
        if ctx.spec.evaluation is not None:
            child = self._start_replicates(s, ctx, study, board, trial, worker, now, gpus)
            # Its first replicate is queued by the line above: there is one to take.
            assert child is not None
            return child, JobKind.NEW, child.reason or ""
        s.add(self._attempt(trial, worker, now, gpus))
        what = f"new trial, resource {trial.resource_from:g}..{trial.resource_to:g}"
        joblog.started(s, trial.id, trial.study_id, trial.attempts, worker, what)
        self._log(s, trial, LogKind.START, trial.reason or "", None, trial.resource_to)
        return trial, JobKind.NEW, trial.reason or ""

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
        admission = ctx.engine.admit(number, board, study.brackets_opened)
        placement = admission.placement
        if admission.opened is not None:
            study.brackets_opened += 1
        study.trials_started += 1
        if early is not None and self._still_new(s, study, early, number, ctx):
            params = early.params
            model = early.model  # ctx.model, as _still_new made sure
            with model.guard:
                model.save(s, study.id, self.kit.clock())
        else:
            params = meter.timed_suggest(
                self.kit, ctx, lambda: self._suggest(s, ctx, study, number)
            )
        trial = Trial(
            study_id=study.id,
            number=number,
            # A new trial starts running: its first attempt starts with it.
            state=TrialState.RUNNING,
            params=params,
            bracket=placement.bracket,
            base_rung=admission.base,
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
        counters.add(s, study.id, active=1)
        s.add(trial)
        s.flush()
        return trial
