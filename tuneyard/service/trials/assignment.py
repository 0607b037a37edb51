"""The next piece of work of a study: a queued trial to run again, a promotion to resume, or
a new trial placed in a bracket; all under the study's row lock."""

from __future__ import annotations

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


@dataclass(frozen=True)
class AssignmentResult:
    trial: Trial
    kind: JobKind
    reason: str
    # The fold and/or seed the job evaluates, in a study with ``evaluation``.
    replicate: ReplicateInfo | None = None


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
        """A promoted trial to resume, a queued one to run again, or a new trial. The study's
        row lock is held throughout, and that lock orders every new trial and every rung
        decision of the study; a model-based suggestion, the one costly step, is therefore
        made before it is taken: by ``presuggest``, here or, so that one call's suggestion
        overlaps the previous call's transaction, by the caller (``early``, or None with
        ``presuggested`` when it made none). ``gpus`` are the GPUs the worker runs the job
        on (none: a CPU slot), recorded on the attempt it starts."""
        if not presuggested:
            early = self.presuggest(study_id)
        try:
            return self._next_job(study_id, worker, early, gpus)
        finally:
            if early is not None:
                self.kit.ahead.forget(study_id, early)

    def _next_job(
        self,
        study_id: int,
        worker: str | None,
        early: Suggestion | None,
        gpus: Sequence[dict[str, Any]] = (),
    ) -> AssignmentResult | None:
        with self.kit.transaction() as s:
            study = self._lock_study(s, study_id)
            if study.state in FINAL_STUDY_STATES:
                raise StudyFinished(f"study {study_id} is {study.state}")
            ctx = self.kit.context(study)
            board = ctx.board(s, study.id)
            now = self.kit.clock()
            self._reap_expired(s, ctx, study, board, now)
            if study.state in (StudyState.PAUSED, StudyState.FAILING):
                return None  # its running trials finish; it starts nothing until resumed
            # The committed count (jobs ended meanwhile lower it) plus the reaped ones.
            active = counters.read(s, study.id).active
            if active >= ctx.spec.limits.max_concurrent:
                return None
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
                    raise Conflict(
                        f"trial {trial.id} was chosen for promotion but is {trial.state}"
                    )
                move(trial, TrialState.RUNNING)
                trial.reason = promo.reason
                trial.resource_from = promo.resource_from
                trial.resource_to = promo.resource_to
                if ctx.spec.evaluation is not None:
                    # Its replicates resume, each from its own checkpoint; this worker
                    # takes the first (None: they all still run to save theirs).
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
                self._log(
                    s, trial, LogKind.PROMOTE, promo.reason, promo.from_rung, promo.resource_to
                )
                return AssignmentResult(trial, JobKind.RESUME, promo.reason)
            if work is NEW_TRIAL:
                job = self._new_trial(s, ctx, study, board, worker, now, early, gpus)
                return self._result(ctx, *job)
            if not self._maybe_finish(s, ctx, study, board):
                return None
            ended = study.state
        # Said once the transaction has stored the study's end: raised inside it, the end
        # would be rolled back with it.
        raise StudyFinished(f"study {study_id} is {ended}")

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
