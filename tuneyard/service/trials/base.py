"""What every use case of a trial shares: the study's and the trial's row locks, the fence
on a call's attempt, the decision log, attempts and leases, and the end of a job (a final
state, a retry, the study's completion). Each public method of the services built on it is
one transaction.

Locks, in the only order any transaction takes them (so no two can wait on each other):

1. the study's row (``_lock_study``): ``next``, a job's end by complete, fail or release, a
   report that ends its job or fails it, a replicate's or a population member's pause, a
   study's state changes; it orders new trials, promotions out of ``next`` and the study's end;
2. trial rows (``_trial(lock=True)``; a promotion locks the promoted trial's row before its
   rung's, :meth:`SqlBoard.mark_promoted`), and with a trial its own rung entries;
3. rung rows, by (bracket, rung) (:meth:`SqlBoard._rung_for_write`): every write to a rung,
   and so every rung decision. A report that reaches a rung takes only 2 and 3 (and 4, 5)
   whatever it decides (pause, continue, a promotion in place, stop, complete): reports at
   different rungs, and ``next`` meanwhile, do not wait for one another. Only a completion in
   a study that tells of a new best (kept on the study's row) takes 1 first
   (:class:`NeedsStudyLock`). A trial's own pause takes only 2 (and 4). A path without 1
   that ends its study's last running job asks whether the study is over afterwards, under 1
   (:meth:`TrialCore._finish_drained`);
4. the study's counters row (the slot count and usage, tuneyard/store/counters.py), changed by
   increments applied just before the commit;
5. the study's observations (an advisory lock, tuneyard/store/observations.py), taken last.

A report that reaches no rung locks only its trial's row on SQLite, and none on PostgreSQL,
where it writes with a compare-and-set on that row instead (reports.py,
tuneyard/store/fast_paths.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, aliased

from tuneyard.errors import (
    Conflict,
    NotFound,
    StaleAttempt,
)
from tuneyard.service import joblog, notifications
from tuneyard.service import metrics as meter
from tuneyard.service.budget import Barrier, attempt_usage, new_trial_barrier
from tuneyard.service.context import StudyContext, Toolkit
from tuneyard.service.transitions import move, move_study
from tuneyard.states import AttemptState, LogKind, StudyState, TrialState
from tuneyard.store import counters
from tuneyard.store.board import SqlBoard
from tuneyard.store.models import (
    Attempt,
    DecisionLog,
    RungEntry,
    Study,
    Trial,
    UTCDateTime,
)
from tuneyard.store.sql import seconds_between

# The study whose row lock a session holds (set by TrialCore._lock_study).
STUDY_LOCKED = "tuneyard.trials.study_locked"


class NeedsStudyLock(Exception):
    """A report decided without the study's lock turned out to complete its trial in a study
    that tells of a new best, which it keeps on the study's row: the transaction is rolled
    back, and the report decided again with the study's lock taken first."""


class TrialCore:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    # -- shared helpers --------------------------------------------------------------------
    def _lock_study(self, s: Session, study_id: int) -> Study:
        """The study's row lock (the first lock of any path that takes it). ``FOR NO KEY
        UPDATE`` on PostgreSQL: writers exclude each other as with ``FOR UPDATE``, but the
        rows that reference the study (rung entries, trials, logs) are inserted meanwhile by
        the paths that do not take it, whose foreign key checks ``FOR KEY SHARE`` would
        otherwise wait for it."""
        study = s.scalar(
            select(Study)
            .where(Study.id == study_id)
            .with_for_update(key_share=True)
            .execution_options(populate_existing=True)
        )
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        s.info[STUDY_LOCKED] = study_id
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
        if trial.state == TrialState.QUEUED:
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
        kind: LogKind,
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

    def _end_attempt(
        self, s: Session, trial: Trial, state: AttemptState, error: str | None = None
    ) -> None:
        """End the trial's live attempt, storing its wall time, and add what it used to its
        study's counters (as the transaction commits)."""
        now = self.kit.clock()
        ended = s.execute(
            update(Attempt)
            .where(
                Attempt.trial_id == trial.id,
                Attempt.number == trial.attempts,
                Attempt.ended_at.is_(None),
            )
            .values(
                state=state,
                error=error,
                ended_at=now,
                wall_seconds=seconds_between(
                    Attempt.started_at, bindparam("ended", now, type_=UTCDateTime)
                ),
            )
            .returning(Attempt.started_at, Attempt.wall_seconds, Attempt.gpu_count)
        ).first()
        if ended is not None:  # the attempt was running: it ends here
            began, wall, gpu_count = ended
            joblog.ended(s, trial.id, trial.study_id, trial.attempts, state, began, now)
            used = attempt_usage(float(wall or 0.0), int(gpu_count or 0))
            counters.add(
                s, trial.study_id, gpu_seconds=used.gpu_seconds, worker_seconds=used.worker_seconds
            )

    @staticmethod
    def _ended_as(s: Session, trial: Trial, attempt: int, state: AttemptState) -> bool:
        """Whether ``attempt``, the trial's last, has ended in ``state``: a repeated fail or
        release of it then gets the stored answer. Read only when the trial no longer runs
        (its live attempt has not ended), so the first call of a running trial costs nothing."""
        if attempt != trial.attempts or trial.state == TrialState.RUNNING:
            return False
        ended = s.scalar(
            select(Attempt.state).where(
                Attempt.trial_id == trial.id,
                Attempt.number == attempt,
                Attempt.ended_at.is_not(None),
            )
        )
        return ended == state

    def _start_attempt(
        self,
        s: Session,
        trial: Trial,
        worker: str | None,
        now: datetime,
        gpus: Sequence[dict[str, Any]] = (),
    ) -> None:
        trial.attempts += 1
        s.add(self._attempt(trial, worker, now, gpus))
        what = f"resource {trial.resource_from:g}..{trial.resource_to:g}"
        joblog.started(s, trial.id, trial.study_id, trial.attempts, worker, what)

    @staticmethod
    def _attempt(
        trial: Trial, worker: str | None, now: datetime, gpus: Sequence[dict[str, Any]] = ()
    ) -> Attempt:
        """The row of the trial's attempt number ``trial.attempts``, starting now on
        ``gpus`` (none: a CPU slot)."""
        return Attempt(
            trial_id=trial.id,
            number=trial.attempts,
            resource_from=trial.resource_from,
            resource_to=trial.resource_to,
            state=AttemptState.RUNNING,
            worker=worker,
            gpus=list(gpus),
            gpu_count=len(gpus),
            started_at=now,
        )

    def _lease(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.kit.settings.lease_seconds)

    def _sweep_later(self, trial: Trial, delay: float | None = None) -> None:
        """Have the checkpoint sweep (service/retention.py) look at this trial's stored
        checkpoints after ``delay`` seconds (the retention period by default), or earlier if
        it is due sooner already. An attribute of the trial: no statement of its own."""
        secs = self.kit.settings.checkpoint_retention if delay is None else delay
        at = self.kit.clock() + timedelta(seconds=secs)
        if trial.sweep_at is None or at < trial.sweep_at:
            trial.sweep_at = at

    def _set_checkpoint(self, trial: Trial, location: str | None) -> None:
        """Make ``location`` the trial's checkpoint; the one it replaces (superseded) is
        deleted by the sweep once the retention period has passed."""
        if trial.checkpoint is not None and trial.checkpoint != location:
            self._sweep_later(trial)
        trial.checkpoint = location

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
        """Move a running trial to a final state and free its slot (as the transaction
        commits: the study's lock need not be held, ``study`` is read only for its id)."""
        if trial.state != TrialState.RUNNING:
            raise Conflict(f"trial {trial.id} is {trial.state}, not running")
        if trial.parent_id is None:
            # A replicate is not on the board: its trial is, and ends there by itself.
            ctx.engine.job_ended(
                trial.bracket,
                trial.rung,
                trial.base_rung,
                trial.resource_to,
                state == TrialState.COMPLETED,
                board,
            )
        now = self.kit.clock()
        move(trial, state)
        trial.reason = reason
        trial.pending = None
        trial.lease_expires_at = None
        trial.ended_at = now
        if state == TrialState.COMPLETED:
            # Its checkpoint is now its model: the sweep keeps the study's best few.
            self._sweep_later(trial, 0.0)
        else:
            # Its checkpoints can no longer be resumed: deleted after the retention period.
            self._sweep_later(trial)
        if error is not None:
            trial.error = error
        elif state in (TrialState.COMPLETED, TrialState.STOPPED):
            # Ended well: an earlier attempt's error stays in that attempt's row only.
            trial.error = None
        counters.add(s, study.id, active=-1)
        self._end_attempt(s, trial, AttemptState(state), error)
        self._log(s, trial, _END_LOG.get(state, LogKind.FAIL), reason)

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
            .where(Attempt.trial_id == trial.id, Attempt.state == AttemptState.FAILED)
        )
        again = ctx.engine.retry(int(failed or 0), retries, reason)
        if again is None:
            self._end_job(s, ctx, study, board, trial, TrialState.FAILED, reason, error=error)
            return
        move(trial, TrialState.QUEUED)
        # A pause its attempt was told of goes with it: the retry runs the job again.
        trial.pending = None
        trial.reason = again
        trial.error = error
        trial.lease_expires_at = None
        counters.add(s, study.id, active=-1)
        self._end_attempt(s, trial, AttemptState.FAILED, error)
        self._log(s, trial, LogKind.RETRY, trial.reason, trial.rung, trial.resource_from)

    def _may_start_new(
        self, s: Session, study: Study, ctx: StudyContext, now: datetime | None = None
    ) -> bool:
        """Whether the study may place another trial (now: the clock's time when not given):
        the one place that says so. Its trials, its GPU-hours and its wall time decide (see
        :func:`tuneyard.service.budget.new_trial_barrier`)."""
        return self._new_trial_barrier(s, study, ctx, now) is None

    def _new_trial_barrier(
        self, s: Session, study: Study, ctx: StudyContext, now: datetime | None = None
    ) -> Barrier | None:
        """Why the study may place no other trial (every trial started, a budget spent), or
        None when it may."""
        when = now if now is not None else self.kit.clock()
        return new_trial_barrier(
            study, lambda: counters.read(s, study.id), ctx.spec.limits, ctx.capacity, when
        )

    def _finish_drained(self, study_ids: list[int]) -> bool:
        """End the studies whose last running job a transaction without their lock ended,
        when they are over (each under its lock, in a transaction of its own). Whether one
        ended."""
        ended = False
        for study_id in study_ids:
            with self.kit.transaction() as s:
                study = self._lock_study(s, study_id)
                ctx = self.kit.context(study)
                ended |= self._maybe_finish(s, ctx, study, ctx.board(s, study.id))
        return ended

    def _maybe_finish(self, s: Session, ctx: StudyContext, study: Study, board: SqlBoard) -> bool:
        """End the study when the engine says it is over: nothing runs, is queued or can be
        promoted, and no new trial may start (all its trials started, or a budget spent,
        which its reason then names). The queued-trial query runs only once nothing runs and
        nothing can start: at the end of a study, not on every job's end."""
        if study.state != StudyState.RUNNING:
            return False
        running = counters.read(s, study.id).active
        if running > 0:
            return False
        barrier = self._new_trial_barrier(s, study, ctx)
        if barrier is None:
            return False
        queued = s.scalar(
            select(Trial.id)
            .where(Trial.study_id == study.id, Trial.state == TrialState.QUEUED)
            .limit(1)
        )
        over = ctx.engine.finished(
            board, running=running, queued=queued is not None, may_start_new=False
        )
        if not over:
            return False
        state, reason = self._final_state(s, study)
        self._finish(s, study, state, barrier.ending if state == StudyState.COMPLETED else reason)
        return True

    @staticmethod
    def _final_state(s: Session, study: Study) -> tuple[StudyState, str]:
        """The end of a study that is over, and why: completed when a trial completed; else
        exhausted when its budget went to trials stopped early (or paused, never promoted),
        else failed: every trial failed. Two EXISTS probes of the trials' (study, state)
        index, so the cost does not grow with the study."""

        # The trial that just ended may not be written yet (the report path holds autoflush
        # back): the probes must see it.
        s.flush()

        def some(*states: TrialState) -> bool:
            probe = select(Trial.id).where(Trial.study_id == study.id, Trial.state.in_(states))
            return bool(s.scalar(select(probe.exists())))

        if some(TrialState.COMPLETED):
            return StudyState.COMPLETED, "all trials finished"
        n = study.trials_started
        if some(TrialState.STOPPED, TrialState.PAUSED):
            return StudyState.EXHAUSTED, (
                f"no trial completed: all {n} trials of the budget were started and each "
                "stopped early or failed"
            )
        last = f"; the last error: {study.last_error}" if study.last_error else ""
        return StudyState.FAILED, f"no trial completed: all {n} trials failed{last}"

    def _finish(self, s: Session, study: Study, state: StudyState, reason: str) -> None:
        now = self.kit.clock()
        move_study(study, state)
        study.reason = reason
        study.finished_at = now
        ended = "was stopped" if state == StudyState.STOPPED else "finished"
        why = f"not promoted: the study {ended}"
        leftovers = s.scalars(
            select(Trial).where(
                Trial.study_id == study.id,
                Trial.state.in_((TrialState.PAUSED, TrialState.QUEUED)),
            )
        ).all()
        # A trial of replicates runs no job (no lease): it ends with the study unless one of
        # its replicates still runs, whose stop at its next report then ends it.
        child = aliased(Trial)
        idle = s.scalars(
            select(Trial).where(
                Trial.study_id == study.id,
                Trial.state == TrialState.RUNNING,
                Trial.parent_id.is_(None),
                Trial.lease_expires_at.is_(None),
                ~select(child.id)
                .where(child.parent_id == Trial.id, child.state == TrialState.RUNNING)
                .exists(),
            )
        ).all()
        for t in [*leftovers, *idle]:
            move(t, TrialState.STOPPED)
            t.reason = why
            t.ended_at = now
            self._sweep_later(t)
            self._log(s, t, LogKind.STOP, why, rung=t.rung)
        s.execute(
            update(RungEntry)
            .where(RungEntry.study_id == study.id, RungEntry.waiting.is_(True))
            .values(waiting=False)
        )
        notifications.study_finished(s, self.kit, study)


# The decision log's kind for the end of a job in each final state.
_END_LOG = {TrialState.COMPLETED: LogKind.COMPLETE, TrialState.STOPPED: LogKind.STOP}
