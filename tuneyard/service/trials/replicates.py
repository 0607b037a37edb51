"""Replicates: a trial evaluated on several folds and/or seeds (``evaluation``), each a job.

A trial of such a study (a configuration) runs no job itself: its replicates do, as trial rows
of their own (``parent_id``, ``replicate``) with their own attempts, leases, reports and
checkpoints, so retries, hand-backs, leases and checkpoints work for them as for any trial.
The trial is what the scheduler and the samplers see:

* a replicate's report at a resource level of the ladder stores its score there; once every
  replicate reached the level, their aggregate (mean or median, with its spread) is the
  trial's report at that level, and the engine decides it as any trial's: a rung entry, a
  stop, a pause, a promotion;
* before then, with ``racing``, the trial is tested against the study's incumbent at the
  level on the replicates both ran (:func:`tuneyard.scheduler.replicates.race`) and stopped
  when it is shown worse;
* the trial's target resource drives its replicates: a replicate runs up to it, and one
  paused below it (the trial was promoted) is queued again from its checkpoint. With
  ``parallel`` every replicate that can run is queued at once, for any worker; otherwise one
  at a time, in index order;
* the trial completes when every replicate completed (its value the aggregate of theirs),
  fails when one fails for good, and when it ends any other way its replicates are stopped:
  the queued and paused ones at once, the running ones at their next report.

Every step reads the trial's replicates only (at most ``folds x seeds`` rows) and, for racing,
the incumbent's row at the level by an index: nothing here grows with the study.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneyard.protocol import ReplicateInfo
from tuneyard.scheduler.decisions import Decision, fmt
from tuneyard.scheduler.replicates import Aggregate, ReplicateScores, aggregate, judge_level
from tuneyard.scheduler.schedulers import TrialView
from tuneyard.service import notifications
from tuneyard.service.context import StudyContext
from tuneyard.service.objectives import Measure
from tuneyard.service.transitions import move
from tuneyard.service.trials.suggestions import Suggestions
from tuneyard.spec.evaluation import EvaluationSpec, Replicate
from tuneyard.states import FINAL_TRIAL_STATES, DecisionKind, LogKind, TrialState
from tuneyard.store import counters
from tuneyard.store.board import SqlBoard
from tuneyard.store.models import Attempt, ReplicateLevel, ReplicateScore, Study, Trial

_EPS = 1e-9
_IN_FLIGHT = (TrialState.RUNNING, TrialState.QUEUED)


def replicate_label(ev: EvaluationSpec, index: int) -> str:
    """How a replicate is named in reasons and tables: ``fold 3/5``, ``seed 2/3``, or
    ``fold 3/5, seed 2/3`` (numbered from 1 for people; the objective sees 0-based values)."""
    r = ev.replicate_list()[index]
    parts = []
    if r.fold is not None:
        parts.append(f"fold {r.fold + 1}/{ev.folds}")
    if r.seed is not None:
        parts.append(f"seed {r.seed + 1}/{ev.seeds}")
    return ", ".join(parts)


def replicate_info(ev: EvaluationSpec, trial: Trial) -> ReplicateInfo:
    """What the worker hands the objective of a replicate's job."""
    assert trial.replicate is not None and trial.parent_id is not None
    r: Replicate = ev.replicate_list()[trial.replicate]
    return ReplicateInfo(
        index=r.index,
        of=ev.replicates,
        fold=r.fold,
        folds=ev.folds,
        seed=r.seed,
        parent_id=trial.parent_id,
    )


class Replicates(Suggestions):
    # -- a trial's replicates as jobs --------------------------------------------------------
    def _start_replicates(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        trial: Trial,
        worker: str | None,
        now: datetime,
        gpus: Sequence[dict[str, Any]],
    ) -> Trial | None:
        """A new trial of an evaluation study: it runs no job itself (no attempt, no lease,
        no slot); its replicates are queued and one of them is taken by ``worker`` now."""
        trial.attempts = 0
        trial.worker = None
        trial.lease_expires_at = None
        counters.add(s, study.id, active=-1)
        self._log(s, trial, LogKind.START, trial.reason or "", None, trial.resource_to)
        self._advance(s, ctx, study, board, trial)
        return self._take_replicate(s, study, trial, worker, now, gpus)

    def _take_replicate(
        self,
        s: Session,
        study: Study,
        trial: Trial,
        worker: str | None,
        now: datetime,
        gpus: Sequence[dict[str, Any]],
    ) -> Trial | None:
        """Start the first queued replicate of ``trial`` on ``worker``; None when none is
        queued (they run, or wait to pause)."""
        child = s.scalar(
            select(Trial)
            .where(Trial.parent_id == trial.id, Trial.state == TrialState.QUEUED)
            .order_by(Trial.replicate)
            .limit(1)
            .with_for_update()
        )
        if child is None:
            return None
        move(child, TrialState.RUNNING)
        child.worker = worker
        child.lease_expires_at = self._lease(now)
        self._start_attempt(s, child, worker, now, gpus)
        counters.add(s, study.id, active=1)
        return child

    def _advance(
        self, s: Session, ctx: StudyContext, study: Study, board: SqlBoard, trial: Trial
    ) -> None:
        """Bring ``trial``'s replicates in line with it (study and trial locked): stop the
        waiting ones of a trial that ended, complete a trial whose replicates all did, and
        queue the replicates that should run now up to the trial's target resource."""
        ev = ctx.spec.evaluation
        assert ev is not None
        now = self.kit.clock()
        # The rows are read again under their locks, which would drop changes not written yet.
        s.flush()
        children = {
            c.replicate: c
            for c in s.scalars(
                select(Trial)
                .where(Trial.parent_id == trial.id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        }
        if trial.state in FINAL_TRIAL_STATES:
            why = f"not run: the trial {trial.state}: {trial.reason}"
            for c in children.values():
                if c.state in (TrialState.QUEUED, TrialState.PAUSED):
                    move(c, TrialState.STOPPED)
                    c.reason = why
                    c.ended_at = now
                    self._sweep_later(c)
                    self._log(s, c, LogKind.STOP, why, c.rung)
            return
        if trial.state != TrialState.RUNNING:
            return  # paused: its replicates wait with it for a promotion
        if len(children) == ev.replicates and all(
            c.state == TrialState.COMPLETED for c in children.values()
        ):
            self._complete_trial(s, ctx, study, board, trial, list(children.values()))
            return
        target = trial.resource_to
        busy = any(c.state in _IN_FLIGHT for c in children.values())
        ready: list[int] = []
        for i in range(ev.replicates):
            have = children.get(i)
            # Not started yet, or paused below the trial's target (it was promoted).
            if have is None or (
                have.state == TrialState.PAUSED and have.resource_to < target - _EPS
            ):
                ready.append(i)
        # One after another: the next replicate is offered first to the worker that ran the
        # last one (as a retry is: ``next`` prefers a queued trial's own worker), so a trial's
        # replicates stay on one machine while it asks; another takes it rather than wait.
        last = max(
            (c for c in children.values() if c.worker),
            key=lambda c: (c.updated_at, c.id),
            default=None,
        )
        preferred = None if ev.parallel or last is None else last.worker
        if not ev.parallel:
            ready = [] if busy else ready[:1]
        for i in ready:
            waiting = children.get(i)
            if waiting is None:
                s.add(
                    Trial(
                        study_id=trial.study_id,
                        number=trial.number,
                        parent_id=trial.id,
                        replicate=i,
                        state=TrialState.QUEUED,
                        params=trial.params,
                        bracket=trial.bracket,
                        base_rung=trial.base_rung,
                        rung=-1,
                        resource_from=trial.resource_from,
                        resource_to=target,
                        score_sum=0.0,
                        score_count=0,
                        attempts=0,
                        worker=preferred,
                        reason=f"{replicate_label(ev, i)} of trial {trial.number}",
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                move(waiting, TrialState.QUEUED)
                waiting.worker = preferred or waiting.worker
                waiting.resource_from = waiting.resource_to
                waiting.resource_to = target
                waiting.reason = f"{replicate_label(ev, i)}: {trial.reason}"
        s.flush()

    def _complete_trial(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        trial: Trial,
        children: list[Trial],
    ) -> None:
        """Every replicate completed: the trial's value is the aggregate of their values."""
        ev = ctx.spec.evaluation
        assert ev is not None
        values = [float(c.value) for c in children if c.value is not None]
        if len(values) < len(children):
            self._end_trial(
                s,
                ctx,
                study,
                board,
                trial,
                TrialState.FAILED,
                "a replicate completed without a value",
                error="a replicate completed without reporting a value",
            )
            return
        agg = aggregate(values, ev.aggregate)
        trial.value, trial.value_std, trial.value_stderr = agg.value, agg.std, agg.stderr
        trial.resource = max(float(c.resource or c.resource_to) for c in children)
        score = ctx.sign * agg.value
        self._observe(s, ctx, trial, trial.resource, score, noise=agg.stderr**2)
        reason = (
            f"all {ev.replicates} {ev.plural} completed: {ev.aggregate} {fmt(agg.value)} "
            f"± {fmt(agg.stderr)} (std {fmt(agg.std)})"
        )
        self._end_trial(s, ctx, study, board, trial, TrialState.COMPLETED, reason)
        notifications.trial_completed(s, self.kit, ctx, study, trial)

    def _end_trial(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        trial: Trial,
        state: TrialState,
        reason: str,
        error: str | None = None,
    ) -> None:
        """End a trial of replicates (it holds no attempt and no slot), then its waiting
        replicates; a running one learns at its next report."""
        if trial.state in FINAL_TRIAL_STATES:
            return
        ctx.engine.job_ended(
            trial.bracket,
            trial.rung,
            trial.base_rung,
            trial.resource_to,
            state == TrialState.COMPLETED,
            board,
        )
        if trial.state == TrialState.PAUSED:
            board.set_waiting(trial.bracket, trial.rung, trial.id, False)
        move(trial, state)
        trial.reason = reason
        trial.pending = None
        trial.ended_at = self.kit.clock()
        if error is not None:
            trial.error = error
        self._log(s, trial, _END_LOG[state], reason, trial.rung)
        self._advance(s, ctx, study, board, trial)

    def _end_job(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        trial: Trial,
        state: TrialState,
        reason: str,
        error: str | None = None,
    ) -> None:
        """A replicate's job ended: its trial follows (completes once all did, fails with
        it, stops with it); a trial's own job ends as in :class:`TrialCore`."""
        super()._end_job(s, ctx, study, board, trial, state, reason, error)
        if trial.parent_id is None:
            return
        s.flush()  # the lock reads the trial again: what changed so far goes out first
        parent = self._trial(s, trial.parent_id, lock=True)
        if parent.state in FINAL_TRIAL_STATES:
            return
        ev = ctx.spec.evaluation
        assert ev is not None
        label = replicate_label(ev, trial.replicate or 0)
        if state == TrialState.FAILED:
            self._end_trial(
                s,
                ctx,
                study,
                board,
                parent,
                TrialState.FAILED,
                f"{label} failed: {reason}",
                error=error,
            )
        elif state == TrialState.STOPPED:
            self._end_trial(
                s, ctx, study, board, parent, TrialState.STOPPED, f"{label} stopped: {reason}"
            )
        else:
            self._advance(s, ctx, study, board, parent)

    def _replicate_paused(
        self, s: Session, ctx: StudyContext, study: Study, board: SqlBoard, child: Trial
    ) -> None:
        """A replicate saved its checkpoint at its rung: the next one runs (one at a time),
        or it runs on at once when its trial was promoted meanwhile."""
        assert child.parent_id is not None
        s.flush()  # the lock reads the trial again: what changed so far goes out first
        parent = self._trial(s, child.parent_id, lock=True)
        self._advance(s, ctx, study, board, parent)

    # -- a replicate's report ------------------------------------------------------------
    def _decide_replicate(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        child: Trial,
        step: float,
        measure: Measure,
        now: datetime,
    ) -> Decision:
        """A replicate's report (study and replicate locked): its scores at the levels it
        reached, its trial's report at the levels all replicates reached, racing, and the
        replicate's own answer."""
        ev = ctx.spec.evaluation
        assert ev is not None and child.parent_id is not None
        score = measure.score
        child.value = measure.value
        child.resource = step
        child.best_score = score if child.best_score is None else min(child.best_score, score)
        child.score_sum += score
        child.score_count += 1
        child.lease_expires_at = self._lease(now)
        s.flush()  # the lock reads the trial again: what changed so far goes out first
        parent = self._trial(s, child.parent_id, lock=True)
        sched = ctx.scheduler
        ended_before = parent.state in FINAL_TRIAL_STATES
        if not ended_before:
            for k in sched.ladder.crossed(max(child.rung, child.base_rung - 1), step):
                child.rung = k
                self._replicate_level(
                    s, ctx, study, board, parent, child, sched.resources[k], measure, now
                )
                if parent.state in FINAL_TRIAL_STATES:
                    break
        # A replicate whose last report ended its trial (raced out on it) has run in full.
        done = step >= sched.ladder.max_resource - _EPS and not ended_before
        if parent.state in FINAL_TRIAL_STATES and not done:
            reason = f"the trial {parent.state}: {parent.reason}"
            self._end_job(s, ctx, study, board, child, TrialState.STOPPED, reason)
            self._maybe_finish(s, ctx, study, board)
            return Decision(DecisionKind.STOP, reason)
        if done:
            reason = f"{replicate_label(ev, child.replicate or 0)} reached max_resource"
            self._end_job(s, ctx, study, board, child, TrialState.COMPLETED, reason)
            self._maybe_finish(s, ctx, study, board)
            return Decision(DecisionKind.COMPLETE, reason)
        if parent.state == TrialState.RUNNING and parent.resource_to > child.resource_to + _EPS:
            # The trial was promoted on the spot: this replicate runs on to its new target.
            child.resource_to = parent.resource_to
            s.execute(
                update(Attempt)
                .where(Attempt.trial_id == child.id, Attempt.number == child.attempts)
                .values(resource_to=child.resource_to)
            )
            child.reason = parent.reason
            return Decision(DecisionKind.CONTINUE, parent.reason or "promoted")
        if sched.pauses and step >= child.resource_to - _EPS:
            if parent.state == TrialState.PAUSED:
                reason = parent.reason or "paused with its trial"
            else:
                reason = f"waits at {fmt(step)} for the trial's other {ev.plural}"
            child.pending = DecisionKind.PAUSE
            child.reason = reason
            self._log(s, child, LogKind.PAUSE, reason, child.rung, step)
            return Decision(DecisionKind.PAUSE, reason, rung=child.rung)
        return Decision(DecisionKind.CONTINUE, "continue")

    def _replicate_level(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        parent: Trial,
        child: Trial,
        level: float,
        measure: Measure,
        now: datetime,
    ) -> None:
        """Store the replicate's score at ``level`` and the trial's aggregate there; when
        every replicate reached it, decide the trial's report there, else race it."""
        ev = ctx.spec.evaluation
        assert ev is not None and child.replicate is not None
        s.merge(
            ReplicateScore(
                parent_id=parent.id,
                resource=level,
                replicate=child.replicate,
                score=measure.score,
                value=measure.value,
                created_at=now,
            )
        )
        s.flush()
        scores = dict(
            s.execute(
                select(ReplicateScore.replicate, ReplicateScore.score).where(
                    ReplicateScore.parent_id == parent.id, ReplicateScore.resource == level
                )
            ).all()
        )
        racing = ev.racing if parent.state == TrialState.RUNNING else None
        looked: list[ReplicateScores | None] = []

        def incumbent() -> ReplicateScores | None:
            looked.append(self._incumbent(s, parent.study_id, level))
            return looked[-1]

        verdict = judge_level(
            parent.id,
            scores,
            ev.replicates,
            how=ev.aggregate,
            rule=racing,
            incumbent=incumbent,
            unit=ev.unit,
            sign=ctx.sign,
        )
        agg = verdict.aggregate
        # Mean and median commute with the sign that made the values minimised.
        value = ctx.sign * agg.value
        s.merge(
            ReplicateLevel(
                parent_id=parent.id,
                resource=level,
                study_id=parent.study_id,
                score=agg.value,
                value=value,
                std=agg.std,
                stderr=agg.stderr,
                n=agg.n,
                complete=verdict.complete,
            )
        )
        if verdict.complete:
            self._decide_level(s, ctx, study, board, parent, level, value, agg.std, agg.stderr)
        elif verdict.stop:
            assert verdict.race is not None and looked[-1] is not None
            best = s.get(Trial, looked[-1].trial)
            number = best.number if best is not None else looked[-1].trial
            why = f"{verdict.race.reason}; incumbent: trial {number} at resource {fmt(level)}"
            self._raced_out(s, ctx, study, board, parent, level, why, agg)

    def _decide_level(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        parent: Trial,
        level: float,
        value: float,
        std: float,
        stderr: float,
    ) -> None:
        """The trial's report at ``level``: its aggregate there, decided by the engine."""
        score = ctx.sign * value
        parent.value, parent.value_std, parent.value_stderr = value, std, stderr
        parent.resource = level
        parent.best_score = score if parent.best_score is None else min(parent.best_score, score)
        parent.score_sum += score
        parent.score_count += 1
        view = TrialView(
            trial_id=parent.id,
            number=parent.number,
            bracket=parent.bracket,
            rung=parent.rung,
            resource_to=parent.resource_to,
            best_score=parent.best_score,
            mean_score=parent.score_sum / parent.score_count,
            base=parent.base_rung,
        )
        outcome = ctx.engine.report(view, level, score, board)
        for rec in outcome.records:
            parent.rung = rec.rung
            self._observe(s, ctx, parent, ctx.scheduler.resources[rec.rung], score, noise=stderr**2)
        decision = outcome.decision
        if decision.kind == DecisionKind.CONTINUE and decision.promoted_from is not None:
            parent.resource_to = decision.resource_to or parent.resource_to
            parent.reason = decision.reason
            self._log(
                s, parent, LogKind.PROMOTE, decision.reason, decision.rung, parent.resource_to
            )
            self._advance(s, ctx, study, board, parent)
        elif decision.kind == DecisionKind.PAUSE:
            move(parent, TrialState.PAUSED)
            parent.reason = decision.reason
            self._log(s, parent, LogKind.PAUSE, decision.reason, decision.rung, level)
            board.set_waiting(parent.bracket, parent.rung, parent.id, True)
        elif decision.kind == DecisionKind.STOP:
            self._end_trial(s, ctx, study, board, parent, TrialState.STOPPED, decision.reason)

    @staticmethod
    def _incumbent(s: Session, study_id: int, level: float) -> ReplicateScores | None:
        """The study's incumbent at ``level``: its best trial there whose replicates all
        reached it (one probe of the incumbent index), with its scores there."""
        best = s.execute(
            select(ReplicateLevel.parent_id)
            .where(
                ReplicateLevel.study_id == study_id,
                ReplicateLevel.resource == level,
                ReplicateLevel.complete.is_(True),
            )
            .order_by(ReplicateLevel.score, ReplicateLevel.parent_id)
            .limit(1)
        ).scalar()
        if best is None:
            return None
        theirs = s.execute(
            select(ReplicateScore.replicate, ReplicateScore.score).where(
                ReplicateScore.parent_id == best, ReplicateScore.resource == level
            )
        ).all()
        return ReplicateScores(best, dict(theirs))

    def _raced_out(
        self,
        s: Session,
        ctx: StudyContext,
        study: Study,
        board: SqlBoard,
        parent: Trial,
        level: float,
        reason: str,
        mine: Aggregate,
    ) -> None:
        """Stop a trial the racing test showed worse than the incumbent at ``level``."""
        # The trial shows, and the samplers learn, its aggregate so far, as a trial stopped
        # early shows its last value.
        parent.value, parent.resource = ctx.sign * mine.value, level
        parent.value_std, parent.value_stderr = mine.std, mine.stderr
        self._observe(s, ctx, parent, level, mine.value, noise=mine.stderr**2)
        self._end_trial(s, ctx, study, board, parent, TrialState.STOPPED, reason)


_END_LOG = {
    TrialState.COMPLETED: LogKind.COMPLETE,
    TrialState.STOPPED: LogKind.STOP,
    TrialState.FAILED: LogKind.FAIL,
}
