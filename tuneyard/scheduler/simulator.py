"""A discrete-event simulator: any scheduler, W parallel workers, a fake clock.

It plays the service's part in memory: it drives the same :class:`Engine` as the service
(admission to a bracket, report → rung records → decision, the next piece of work, retries,
the end of a job, the end of the study) over a :class:`MemoryBoard`, with training time taken
from a function of the configuration and the worker's speed, and keeps no scheduling rule of
its own. Attempts crash, workers hand trials back or freeze past their lease (the trial is
reaped and runs again; the frozen attempt's late report is refused, as the service's attempt
fence refuses it). A whole ASHA run is thus a deterministic unit test, and the same loop
drives the benchmarks.

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

from tuneyard.scheduler.board import MemoryBoard, Vector
from tuneyard.scheduler.decisions import Decision, Promotion
from tuneyard.scheduler.engine import NEW_TRIAL, Engine
from tuneyard.scheduler.samplers.base import ModelSampler, Observation
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView
from tuneyard.states import DecisionKind, LogKind, TrialState

Params = dict[str, Any]
# What a curve gives for a step: one score, or a study's objectives and constraints.
Score = float | Vector


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
    # The live attempt: every job the trial starts is a new one.
    attempt: int = 0
    history: list[tuple[float, float]] = field(default_factory=list)
    # Several objectives or constraints: the vector of each step, as ``history`` its score.
    vectors: list[tuple[float, Vector]] = field(default_factory=list)
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
    # A promotion made as the study ends, outside the rung's quota.
    final: bool = False


@dataclass
class SimResult:
    trials: list[SimTrial]
    events: list[Event]
    elapsed: float
    resource_used: float
    # True when the run ended because ``budget`` was spent, not because the work ran out.
    exhausted: bool = False
    # Whether the engine said the study was over when the work ran out.
    finished: bool = False
    # Reports of attempts that had been reaped, refused as the service refuses them.
    stale_reports: int = 0

    def best(self) -> SimTrial | None:
        done = [t for t in self.trials if t.state == TrialState.COMPLETED and t.history]
        return min(done, key=lambda t: t.history[-1][1]) if done else None


class Simulator:
    def __init__(
        self,
        scheduler: Scheduler,
        suggest: Callable[[int], Params],
        curve: Callable[[Params, float], Score] | None,
        max_trials: int,
        workers: int,
        step_time: Callable[[Params], float] = lambda p: 1.0,
        step: float = 1.0,
        snapshots: bool = False,
        sampler: ModelSampler | None = None,
        trial_curve: Callable[[SimTrial, float], Score] | None = None,
        on_end: Callable[[SimTrial], None] | None = None,
        budget: float | None = None,
        fails: Callable[[SimTrial, float], bool] | None = None,
        max_retries: int = 0,
        hands_back: Callable[[SimTrial, float], bool] | None = None,
        speeds: list[float] | None = None,
        stalls: Callable[[SimTrial, float], bool] | None = None,
        lease: float = 5.0,
        scalarize: Callable[[Vector], float] | None = None,
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
        retry, and resumes from that step elsewhere, using none of its retries.

        ``speeds`` gives each worker's speed (``workers`` of them; a step takes
        ``step_time(params) / speed``); a free worker takes the next job, the lowest-numbered
        first. ``stalls(trial, step)`` says whether the attempt freezes while training that
        step: after ``lease`` of silence the trial is reaped (a failed attempt, retried as a
        crash is) and the frozen worker, waking at three leases, sends a report that is
        refused (``SimResult.stale_reports``) before it takes other work.

        A study with several objectives or constraints has its curve return a
        :class:`Vector` (every objective minimised, the total violation, the failed
        constraints); give the scheduler ``fronts=True`` to rank rungs by them. A step's
        score, which ``history`` keeps and single-objective rules read, is then
        ``scalarize(vector)`` (default: the first objective), as the service computes it."""
        if (curve is None) == (trial_curve is None):
            raise ValueError("give exactly one of curve and trial_curve")
        if budget is not None and budget <= 0:
            raise ValueError(f"budget must be positive, got {budget}")
        self.sched = scheduler
        self.suggest = suggest
        self.sampler = sampler
        self.curve = curve
        self.trial_curve = trial_curve
        self._score: Callable[[SimTrial, float], Score]
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
        if speeds is not None and (len(speeds) != workers or min(speeds) <= 0):
            raise ValueError("speeds: one positive speed per worker")
        self.speeds = speeds or [1.0] * workers
        self.stalls = stalls
        self.lease = lease
        self.scalarize = scalarize or (lambda v: v.scores[0])
        self.running = 0
        self.queued: list[SimTrial] = []
        self.engine = Engine(scheduler, max_trials)
        self.board = MemoryBoard(scheduler.cutoff_rank)
        self.brackets_opened = self.engine.open(self.board)
        self.trials: list[SimTrial] = []
        self.events: list[Event] = []
        self.now = 0.0

    # -- the service's part --------------------------------------------------------------
    def _log(
        self,
        kind: LogKind,
        t: SimTrial,
        rung: int | None,
        detail: str,
        snap: Any = (),
        final: bool = False,
    ) -> None:
        self.events.append(Event(self.now, kind, t.trial_id, rung, detail, snap, final))
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
        work = self.engine.next_work(
            self._take_queued,
            self.board,
            may_start_new=len(self.trials) < self.max_trials,
            running=self.running,
        )
        if isinstance(work, SimTrial):
            work.state = TrialState.RUNNING
            return work
        if isinstance(work, Promotion):
            promo = work
            t = self.trials[promo.trial_id]
            snap = self._snapshot(promo.bracket, promo.from_rung)
            t.state = TrialState.RUNNING
            t.resource_from, t.resource_to = promo.resource_from, promo.resource_to
            self._log(LogKind.PROMOTE, t, promo.from_rung, promo.reason, snap, promo.final)
            return t
        if work is not NEW_TRIAL:
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

    def _fail(self, t: SimTrial, reason: str) -> None:
        """The running attempt of ``t`` failed (it crashed, or its lease ran out)."""
        again = self.engine.retry(t.failed, self.max_retries, reason)
        t.failed += 1
        if again is not None:
            t.state = TrialState.QUEUED
            # The re-run starts where the job started, and its reports replace these.
            t.history = [(s, v) for s, v in t.history if s <= t.resource_from + 1e-9]
            t.vectors = [(s, v) for s, v in t.vectors if s <= t.resource_from + 1e-9]
            self.queued.append(t)
            self._log(LogKind.RETRY, t, t.rung if t.rung >= 0 else None, again)
            return
        self.engine.job_ended(t.bracket, t.rung, t.base, t.resource_to, False, self.board)
        t.state = TrialState.FAILED
        self._log(LogKind.FAIL, t, t.rung if t.rung >= 0 else None, reason)
        if self.on_end is not None:
            self.on_end(t)

    def _observe(
        self, t: SimTrial, resource: float, score: float, vector: Vector | None = None
    ) -> None:
        if self.sampler is not None and math.isfinite(score):
            if vector is None:
                seen = Observation(t.number, t.params, resource, score)
            else:
                seen = Observation(
                    t.number, t.params, resource, score, vector.scores, vector.violation
                )
            self.sampler.observe([seen])

    def _report(self, t: SimTrial, step: float) -> Decision:
        result = self._score(t, step)
        vector = result if isinstance(result, Vector) else None
        score = self.scalarize(result) if isinstance(result, Vector) else float(result)
        t.history.append((step, score))
        if vector is not None:
            t.vectors.append((step, vector))
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
        outcome = self.engine.report(view, step, score, self.board, vector)
        for rec in outcome.records:
            t.rung = rec.rung
            self._observe(t, self.sched.resources[rec.rung], score, vector)
        d = outcome.decision
        if d.kind in (DecisionKind.STOP, DecisionKind.COMPLETE):
            self._observe(t, step, score, vector)
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
        # (time, seq, what, trial id, attempt, worker): a step trained ("step"), a lease that
        # ran out ("reap"), a frozen worker waking ("wake").
        heap: list[tuple[float, int, str, int, int, int]] = []
        seq = 0
        free = list(range(self.workers))  # idle workers, the lowest-numbered taken first
        spent = 0.0  # resource trained so far, kept as it grows: no rescan per step
        exhausted = False
        stale = 0

        def push(at: float, what: str, t: SimTrial, w: int) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (at, seq, what, t.trial_id, t.attempt, w))

        def start_step(t: SimTrial, w: int) -> None:
            push(self.now + self.step_time(t.params) / self.speeds[w], "step", t, w)

        def fill() -> None:
            """Every free worker takes work while there is some."""
            while free:
                job = self._next_job()
                if job is None:
                    return
                job.attempt += 1
                self.running += 1
                start_step(job, free.pop(0))

        def release(w: int) -> None:
            free.append(w)
            free.sort()
            fill()

        def job_over() -> None:
            self.running -= 1

        fill()
        while heap:
            self.now, _, what, tid, attempt, w = heapq.heappop(heap)
            t = self.trials[tid]
            live = attempt == t.attempt and t.state == TrialState.RUNNING
            if what == "reap":
                if live:
                    secs = f"{self.lease:g}"
                    job_over()
                    self._fail(t, f"lease expired: no report or heartbeat for {secs} s")
                    fill()  # the frozen worker keeps its slot until it wakes
                continue
            if what == "wake":
                # The frozen attempt's report comes late and is refused; its worker is free.
                stale += 1
                release(w)
                continue
            assert live, "a step of an attempt that is over"
            last = t.history[-1][0] if t.history else t.resource_from
            step = min(t.resource_to, last + self.step)
            t.trained += self.step
            spent += self.step
            if self.stalls is not None and self.stalls(t, step):
                push(self.now + self.lease, "reap", t, w)
                push(self.now + 3 * self.lease, "wake", t, w)
                continue
            if self.fails is not None and self.fails(t, step):
                job_over()
                self._fail(t, f"the objective crashed at step {step:g}")
                if self.budget is not None and spent >= self.budget - 1e-9:
                    exhausted = True
                    break
                release(w)
                continue
            d = self._report(t, step)
            more = d.kind == DecisionKind.CONTINUE and step < t.resource_to - 1e-9
            if d.kind == DecisionKind.CONTINUE and not more:
                # The job reached its end without a terminal decision (FIFO without rungs).
                self._observe(t, step, t.history[-1][1], t.vectors[-1][1] if t.vectors else None)
                self._end(t, DecisionKind.COMPLETE, None, "job finished")
            if self.budget is not None and spent >= self.budget - 1e-9:
                # Spent: nothing more starts, and the steps in flight are cut.
                exhausted = True
                break
            if more and self.hands_back is not None and self.hands_back(t, step):
                # The worker stops: the job's checkpoint at this step goes back with the trial.
                job_over()
                t.state = TrialState.QUEUED
                t.resource_from = step
                self.queued.append(t)
                self._log(LogKind.RELEASE, t, t.rung if t.rung >= 0 else None, "handed back")
                release(w)
                continue
            if more:
                start_step(t, w)
                continue
            job_over()
            release(w)
        finished = not exhausted and self.engine.finished(
            self.board,
            running=self.running,
            queued=bool(self.queued),
            may_start_new=len(self.trials) < self.max_trials,
        )
        # What never got promoted is stopped when the study ends, and so is what the budget cut.
        for t in self.trials:
            if t.state == TrialState.PAUSED:
                self._end(t, DecisionKind.STOP, t.rung, "not promoted: the study finished")
            elif t.state in (TrialState.RUNNING, TrialState.QUEUED) and exhausted:
                self._end(
                    t, DecisionKind.STOP, t.rung if t.rung >= 0 else None, "the budget is spent"
                )
        used = sum(t.trained for t in self.trials)
        return SimResult(
            self.trials, self.events, self.now, used, exhausted, finished, stale_reports=stale
        )
