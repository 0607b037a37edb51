"""A discrete-event simulator: any scheduler, W parallel workers, a fake clock.

It plays the service's part in memory: it drives the same :class:`Engine` as the service
(admission to a bracket, report → rung records → decision, the next promotion, the end of a
job) over a :class:`MemoryBoard`, with training time taken from a function of the
configuration, and keeps no scheduling rule of its own. A whole
ASHA run is thus a deterministic unit test, and the same loop drives the benchmarks.

Callers that keep per-trial state (a model that a promoted trial resumes) pass
``trial_curve(trial, step)`` instead of ``curve(params, step)``, free that state in
``on_end(trial)``, and may end the run on a ``budget`` of resource trained.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tuneyard.scheduler.board import MemoryBoard
from tuneyard.scheduler.decisions import Decision, Promotion
from tuneyard.scheduler.engine import Engine
from tuneyard.scheduler.samplers.base import ModelSampler, Observation
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView
from tuneyard.states import DecisionKind, LogKind, TrialState

Params = dict[str, Any]


@dataclass
class SimTrial:
    trial_id: int
    number: int
    params: Params
    bracket: int
    base: int
    state: TrialState = TrialState.RUNNING
    rung: int = -1
    resource_from: float = 0.0
    resource_to: float = 0.0
    best_score: float = math.inf
    score_sum: float = 0.0
    score_count: int = 0
    trained: float = 0.0
    # Attempts that failed (each ran the job again while retries were left).
    failed: int = 0
    history: list[tuple[float, float]] = field(default_factory=list)
    decisions: list[tuple[float, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Event:
    """Something the simulated service did, with the fake time it happened at."""

    time: float
    kind: str  # start, promote, pause, stop, complete, continue
    trial_id: int
    rung: int | None
    detail: str
    # For promotions: the rung's entries (trial id -> score) at that moment, best first.
    snapshot: tuple[tuple[int, float], ...] = ()


@dataclass
class SimResult:
    trials: list[SimTrial]
    events: list[Event]
    elapsed: float
    resource_used: float
    # True when the run ended because ``budget`` was spent, not because the work ran out.
    exhausted: bool = False

    def best(self) -> SimTrial | None:
        done = [t for t in self.trials if t.state == TrialState.COMPLETED and t.history]
        return min(done, key=lambda t: t.history[-1][1]) if done else None


class Simulator:
    def __init__(
        self,
        scheduler: Scheduler,
        suggest: Callable[[int], Params],
        curve: Callable[[Params, float], float] | None,
        max_trials: int,
        workers: int,
        step_time: Callable[[Params], float] = lambda p: 1.0,
        step: float = 1.0,
        snapshots: bool = False,
        sampler: ModelSampler | None = None,
        trial_curve: Callable[[SimTrial, float], float] | None = None,
        on_end: Callable[[SimTrial], None] | None = None,
        budget: float | None = None,
        fails: Callable[[SimTrial, float], bool] | None = None,
        max_retries: int = 0,
        hands_back: Callable[[SimTrial, float], bool] | None = None,
    ) -> None:
        """``suggest`` gives trial n's configuration; with a model-based ``sampler`` it is
        ignored and the sampler is used as the service uses it: told the running
        configurations, fed an observation at each rung a trial reaches and where it ends.

        The score of a step comes from ``curve(params, step)`` or, for callers that keep
        state per trial, ``trial_curve(trial, step)``: exactly one of the two is given. Each
        trial's steps are asked for in increasing order, a resumed trial continuing from its
        last one. ``on_end(trial)`` is called once per trial, when it reaches its final state
        (stopped or completed, including at the end of the run).

        ``budget`` ends the run once the resource trained (``SimTrial.trained`` summed)
        reaches it: no step starts after the step that spends it, and the steps then in
        flight are cut, neither reported nor charged, so ``resource_used`` ends below
        ``budget + step``. Trials still running are stopped ("the budget is spent").

        ``fails(trial, step)`` says whether the attempt crashes while training that step (its
        report never comes): as in the service, the trial is queued to run the same job again
        from where the job started while ``max_retries`` last, before any promotion or new
        trial, and fails for good after that; the re-run's reports replace the failed
        attempt's. ``hands_back(trial, step)`` says whether the worker stops after reporting
        that step (a shutdown): the trial is handed back with its checkpoint, queued like a
        retry, and resumes from that step elsewhere, using none of its retries."""
        if (curve is None) == (trial_curve is None):
            raise ValueError("give exactly one of curve and trial_curve")
        if budget is not None and budget <= 0:
            raise ValueError(f"budget must be positive, got {budget}")
        self.sched = scheduler
        self.suggest = suggest
        self.sampler = sampler
        self.curve = curve
        self.trial_curve = trial_curve
        self._score: Callable[[SimTrial, float], float]
        if trial_curve is not None:
            self._score = trial_curve
        elif curve is not None:
            self._score = lambda t, step: curve(t.params, step)
        self.on_end = on_end
        self.budget = budget
        self.max_trials = max_trials
        self.workers = workers
        self.step_time = step_time
        self.step = step
        self.snapshots = snapshots
        self.fails = fails
        self.max_retries = max_retries
        self.hands_back = hands_back
        self.queued: list[SimTrial] = []
        self.engine = Engine(scheduler, max_trials)
        self.board = MemoryBoard(scheduler.cutoff_rank)
        self.brackets_opened = self.engine.open(self.board)
        self.trials: list[SimTrial] = []
        self.events: list[Event] = []
        self.now = 0.0

    # -- the service's part --------------------------------------------------------------
    def _log(
        self, kind: LogKind, t: SimTrial, rung: int | None, detail: str, snap: Any = ()
    ) -> None:
        self.events.append(Event(self.now, kind, t.trial_id, rung, detail, snap))
        t.decisions.append((self.now, kind, detail))

    def _snapshot(self, bracket: int, rung: int) -> tuple[tuple[int, float], ...]:
        if not self.snapshots:
            return ()
        n = self.board.stats(bracket, rung).entries
        return tuple((e.trial_id, e.score) for e in self.board.top(bracket, rung, n))

    def _take_queued(self) -> SimTrial | None:
        if not self.queued:
            return None
        self.queued.sort(key=lambda x: x.number)
        return self.queued.pop(0)

    def _next_job(self) -> SimTrial | None:
        work = self.engine.next_work(self._take_queued, self.board)
        if isinstance(work, SimTrial):
            work.state = TrialState.RUNNING
            return work
        promo: Promotion | None = work
        if promo is not None:
            t = self.trials[promo.trial_id]
            snap = self._snapshot(promo.bracket, promo.from_rung)
            t.state = TrialState.RUNNING
            t.resource_from, t.resource_to = promo.resource_from, promo.resource_to
            self._log(LogKind.PROMOTE, t, promo.from_rung, promo.reason, snap)
            return t
        if len(self.trials) >= self.max_trials:
            return None
        number = len(self.trials)
        admission = self.engine.admit(number, self.board, self.brackets_opened)
        placement = admission.placement
        if admission.opened is not None:
            self.brackets_opened += 1
        if self.sampler is not None:
            running = [x.params for x in self.trials if x.state == TrialState.RUNNING]
            params = self.sampler.suggest(number, running)
        else:
            params = self.suggest(number)
        t = SimTrial(
            trial_id=number,
            number=number,
            params=params,
            bracket=placement.bracket,
            base=admission.base,
            resource_from=placement.resource_from,
            resource_to=placement.resource_to,
        )
        self.trials.append(t)
        self._log(LogKind.START, t, None, placement.reason)
        return t

    def _end(self, t: SimTrial, kind: DecisionKind, rung: int | None, detail: str) -> None:
        """Move ``t`` to its final state (``kind`` is stop or complete) and tell the caller."""
        if t.state == TrialState.RUNNING:
            self.engine.job_ended(
                t.bracket, t.rung, t.base, t.resource_to, kind == DecisionKind.COMPLETE, self.board
            )
        t.state = TrialState.STOPPED if kind == DecisionKind.STOP else TrialState.COMPLETED
        self._log(LogKind(kind), t, rung, detail)
        if self.on_end is not None:
            self.on_end(t)

    def _fail(self, t: SimTrial, step: float) -> None:
        """The running attempt of ``t`` crashed while training ``step``."""
        reason = f"the objective crashed at step {step:g}"
        again = self.engine.retry(t.failed, self.max_retries, reason)
        t.failed += 1
        if again is not None:
            t.state = TrialState.QUEUED
            # The re-run starts where the job started, and its reports replace these.
            t.history = [(s, v) for s, v in t.history if s <= t.resource_from + 1e-9]
            self.queued.append(t)
            self._log(LogKind.RETRY, t, t.rung if t.rung >= 0 else None, again)
            return
        self.engine.job_ended(t.bracket, t.rung, t.base, t.resource_to, False, self.board)
        t.state = TrialState.FAILED
        self._log(LogKind.FAIL, t, t.rung if t.rung >= 0 else None, reason)
        if self.on_end is not None:
            self.on_end(t)

    def _observe(self, t: SimTrial, resource: float, score: float) -> None:
        if self.sampler is not None and math.isfinite(score):
            self.sampler.observe([Observation(t.number, t.params, resource, score)])

    def _report(self, t: SimTrial, step: float) -> Decision:
        score = self._score(t, step)
        t.history.append((step, score))
        t.best_score = min(t.best_score, score)
        t.score_sum += score
        t.score_count += 1
        view = TrialView(
            trial_id=t.trial_id,
            number=t.number,
            bracket=t.bracket,
            rung=t.rung,
            resource_to=t.resource_to,
            best_score=t.best_score,
            mean_score=t.score_sum / t.score_count,
            base=t.base,
        )
        outcome = self.engine.report(view, step, score, self.board)
        for rec in outcome.records:
            t.rung = rec.rung
            self._observe(t, self.sched.resources[rec.rung], score)
        d = outcome.decision
        if d.kind in (DecisionKind.STOP, DecisionKind.COMPLETE):
            self._observe(t, step, score)
        if d.kind == DecisionKind.CONTINUE and d.promoted_from is not None:
            snap = self._snapshot(t.bracket, d.promoted_from)
            t.resource_to = d.resource_to or t.resource_to
            self._log(LogKind.PROMOTE, t, d.promoted_from, d.reason, snap)
        elif d.kind == DecisionKind.PAUSE:
            t.state = TrialState.PAUSED
            self.board.set_waiting(t.bracket, t.rung, t.trial_id, True)
            self._log(LogKind.PAUSE, t, d.rung, d.reason)
        elif d.kind in (DecisionKind.STOP, DecisionKind.COMPLETE):
            self._end(t, d.kind, d.rung, d.reason)
        return d

    # -- the event loop ------------------------------------------------------------------
    def run(self) -> SimResult:
        heap: list[tuple[float, int, int]] = []  # (time, seq, trial id) of a finished step
        seq = 0
        idle = self.workers
        spent = 0.0  # resource trained so far, kept as it grows: no rescan per step
        exhausted = False

        def start_step(t: SimTrial) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (self.now + self.step_time(t.params), seq, t.trial_id))

        def fill() -> None:
            nonlocal idle
            while idle > 0:
                job = self._next_job()
                if job is None:
                    return
                idle -= 1
                start_step(job)

        fill()
        while heap:
            self.now, _, tid = heapq.heappop(heap)
            t = self.trials[tid]
            last = t.history[-1][0] if t.history else t.resource_from
            step = min(t.resource_to, last + self.step)
            t.trained += self.step
            spent += self.step
            if self.fails is not None and self.fails(t, step):
                self._fail(t, step)
                if self.budget is not None and spent >= self.budget - 1e-9:
                    exhausted = True
                    break
                idle += 1
                fill()
                continue
            d = self._report(t, step)
            more = d.kind == DecisionKind.CONTINUE and step < t.resource_to - 1e-9
            if d.kind == DecisionKind.CONTINUE and not more:
                # The job reached its end without a terminal decision (FIFO without rungs).
                self._observe(t, step, t.history[-1][1])
                self._end(t, DecisionKind.COMPLETE, None, "job finished")
            if self.budget is not None and spent >= self.budget - 1e-9:
                # Spent: nothing more starts, and the steps in flight are cut.
                exhausted = True
                break
            if more and self.hands_back is not None and self.hands_back(t, step):
                # The worker stops: the job's checkpoint at this step goes back with the trial.
                t.state = TrialState.QUEUED
                t.resource_from = step
                self.queued.append(t)
                self._log(LogKind.RELEASE, t, t.rung if t.rung >= 0 else None, "handed back")
                idle += 1
                fill()
                continue
            if more:
                start_step(t)
                continue
            idle += 1
            fill()
        # What never got promoted is stopped when the study ends, and so is what the budget cut.
        for t in self.trials:
            if t.state == TrialState.PAUSED:
                self._end(t, DecisionKind.STOP, t.rung, "not promoted: the study finished")
            elif t.state in (TrialState.RUNNING, TrialState.QUEUED) and exhausted:
                self._end(
                    t, DecisionKind.STOP, t.rung if t.rung >= 0 else None, "the budget is spent"
                )
        used = sum(t.trained for t in self.trials)
        return SimResult(self.trials, self.events, self.now, used, exhausted)
