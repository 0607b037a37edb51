"""The scheduling engine: the one place that turns a study's events into board changes and
decisions, for the service (over the SQL board, inside its transaction) and the simulator
(over a memory board, on a fake clock) alike.

A scheduler answers questions (where does trial n start, what does this report decide, which
paused trial is promoted next); the engine asks them in the right order and writes what
follows from the answers to the board:

* a new trial is placed in a bracket, the bracket that admits it counted and closed when full,
  every bracket closed once the study has placed its last trial (:meth:`Engine.admit`);
* a report's rung records are written *before* the scheduler decides, since the decision
  ranks the trial within the rung it just reached; a promotion on the spot is marked
  (:meth:`Engine.report`);
* a worker asking for work runs a queued trial first (a retry, a hand-back), then resumes
  the best promotable trial, then starts a new trial while the study has room; when it has
  none and nothing runs, a final promotion lets the study end with a trial trained to the
  top (:meth:`Engine.next_work`);
* the study is over when nothing runs, nothing is queued, no trial can start and nothing
  can be promoted (:meth:`Engine.finished`);
* a failed attempt runs its job again while the study's retries last (:meth:`Engine.retry`);
* a job that ends before the rung it was heading to (a failure, a stop, a hand-back that
  never comes back) is counted as dropped there, so a synchronous rung stops waiting for it
  (:meth:`Engine.job_ended`).

What is persisted beyond the board (trial rows, decision logs, observations) is the caller's;
the engine knows no clock, no database and no trial beyond a :class:`TrialView`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tuneyard.scheduler.board import Board, BracketInfo, Vector
from tuneyard.scheduler.decisions import (
    Decision,
    DecisionKind,
    Placement,
    Promotion,
    RungRecord,
)
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView

Q = TypeVar("Q")


class WritableBoard(Board, Protocol):
    """A board the engine writes to: the store's SqlBoard and the simulator's MemoryBoard."""

    def open_bracket(self, info: BracketInfo) -> object: ...

    def admit(self, index: int) -> BracketInfo:
        """Count one more trial admitted to the bracket (closing it when full); the bracket
        as it is now."""
        ...

    def close_all(self) -> None: ...

    def mark_done(self, indexes: Sequence[int]) -> None: ...

    def record(
        self, bracket: int, rung: int, trial_id: int, score: float, vector: Vector | None = None
    ) -> object: ...

    def mark_promoted(self, bracket: int, rung: int, trial_id: int) -> None: ...

    def mark_dropped(self, bracket: int, rung: int) -> None: ...


@dataclass(frozen=True)
class Admission:
    """Where a new trial starts: its first job and the first rung of its bracket."""

    placement: Placement
    base: int
    # A bracket the placement opened, if any.
    opened: BracketInfo | None


@dataclass(frozen=True)
class Outcome:
    """What a report did: the rung records it wrote (already on the board) and the decision."""

    records: tuple[RungRecord, ...]
    decision: Decision


@dataclass(frozen=True)
class NewTrial:
    """The answer of :meth:`Engine.next_work` that says: place a new trial."""


NEW_TRIAL = NewTrial()


class Engine:
    """``capacity`` is the number of trials the study may place (``max_trials``, or a grid's
    size when smaller)."""

    def __init__(self, scheduler: Scheduler, capacity: int) -> None:
        self.scheduler = scheduler
        self.capacity = capacity

    def open(self, board: WritableBoard) -> int:
        """Open the brackets that exist from the start; returns how many were opened."""
        brackets = self.scheduler.initial_brackets()
        for b in brackets:
            board.open_bracket(b)
        return len(brackets)

    def admit(self, number: int, board: WritableBoard, brackets_opened: int) -> Admission:
        """Place trial ``number`` (the study has ``brackets_opened`` brackets so far)."""
        placement, opened = self.scheduler.place(number, board, brackets_opened)
        if opened is not None:
            board.open_bracket(opened)
        bracket = board.admit(placement.bracket)
        if number + 1 >= self.capacity:
            board.close_all()  # the last trial is placed: no bracket admits another
        return Admission(placement, bracket.base, opened)

    def report(
        self,
        trial: TrialView,
        step: float,
        score: float,
        board: WritableBoard,
        vector: Vector | None = None,
    ) -> Outcome:
        """Decide a report of ``trial`` at ``step`` (``trial`` counts this score in its
        statistics; ``vector``: its objectives and constraints, in a study that has several
        or any). Rungs the step reached are recorded first; a promotion on the spot is marked
        on the rung it leaves."""
        sched = self.scheduler
        records = tuple(sched.milestones(trial, step, score, vector))
        for rec in records:
            board.record(rec.bracket, rec.rung, trial.trial_id, rec.score, rec.vector)
        decision = sched.decide(trial, step, score, list(records), board)
        if decision.kind == DecisionKind.CONTINUE and decision.promoted_from is not None:
            board.mark_promoted(trial.bracket, decision.promoted_from, trial.trial_id)
        return Outcome(records, decision)

    def plain(self, trial: TrialView, step: float, score: float, board: Board) -> Decision | None:
        """The decision of a report that reaches no rung and is a plain ``continue``, which
        writes nothing to the board (the report path's common case, decided without the
        study's lock); None when the report needs :meth:`report`."""
        if self.scheduler.milestones(trial, step, score):
            return None
        decision = self.scheduler.decide(trial, step, score, [], board)
        if decision.kind != DecisionKind.CONTINUE or decision.promoted_from is not None:
            return None
        return decision

    def next_work(
        self,
        take_queued: Callable[[], Q | None],
        board: WritableBoard,
        *,
        may_start_new: bool,
        running: int,
    ) -> Q | Promotion | NewTrial | None:
        """What a free worker runs next, in this order: a trial queued to run its job again
        (a retry or a hand-back; ``take_queued`` takes the one the caller prefers), the best
        promotion, a new trial while ``may_start_new`` (the study has trials and budget
        left), else, when none of the study's ``running`` jobs runs, the final promotion that
        lets the study end well. None: nothing to do now (the study may be over: ask
        :meth:`finished`)."""
        queued = take_queued()
        if queued is not None:
            return queued
        promo = self.next_promotion(board)
        if promo is not None:
            return promo
        if may_start_new:
            return NEW_TRIAL
        if running == 0:
            final = self.scheduler.final_promotion(board)
            if final is not None:
                board.mark_promoted(final.bracket, final.from_rung, final.trial_id)
                return final
        return None

    def finished(self, board: Board, *, running: int, queued: bool, may_start_new: bool) -> bool:
        """Whether the study is over: no job runs, none is queued to run again, no new trial
        may start and no trial can be promoted, by its rung's quota or as the study ends.
        Reads the board only."""
        if running > 0 or queued or may_start_new:
            return False
        sched = self.scheduler
        return sched.next_promotion(board) is None and sched.final_promotion(board) is None

    def next_promotion(self, board: WritableBoard) -> Promotion | None:
        """The paused trial to resume now, marked promoted; else None, after dropping the
        brackets that can promote nothing more (so later calls skip them)."""
        promo = self.scheduler.next_promotion(board)
        if promo is not None:
            board.mark_promoted(promo.bracket, promo.from_rung, promo.trial_id)
            return promo
        if self.scheduler.pauses:
            done = self.scheduler.finished_brackets(board)
            if done:
                board.mark_done(done)
        return None

    @staticmethod
    def retry(failed: int, max_retries: int, reason: str) -> str | None:
        """After an attempt failed (``failed`` attempts have, before this one): the reason to
        run the same job again while retries are left, or None when the trial fails. A
        retried trial keeps its place in its rung: nothing is dropped."""
        if failed >= max_retries:
            return None
        return f"retry {failed + 1} of {max_retries}: {reason}"

    def target_rung(self, rung: int, base: int, resource_to: float) -> int | None:
        """The rung a trial's current job is heading to, if its range ends on one."""
        res = self.scheduler.resources
        for k in range(max(rung, base - 1) + 1, len(res)):
            if abs(res[k] - resource_to) < 1e-9:
                return k
        return None

    def job_ended(
        self,
        bracket: int,
        rung: int,
        base: int,
        resource_to: float,
        completed: bool,
        board: WritableBoard,
    ) -> None:
        """A running trial's job ended for good (``completed``: it reached the top). A
        synchronous rung waits for every trial sent to it; one that will not arrive is
        counted as dropped there."""
        if completed and rung >= self.scheduler.ladder.top:
            return
        k = self.target_rung(rung, base, resource_to)
        if k is not None and self.scheduler.pauses:
            board.mark_dropped(bracket, k)
