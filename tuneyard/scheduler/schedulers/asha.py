"""Asynchronous successive halving (ASHA), Li et al. 2020, https://arxiv.org/abs/1810.05934.

Promotion mode is the paper's Algorithm 2: trials pause at each rung and are resumed later
when they rank in the top ``1/eta`` of it. Stopping mode is the variant most libraries ship
(Ray Tune's ASHA, Optuna's SuccessiveHalvingPruner): a trial runs to ``max_resource`` unless,
at a rung, it falls out of the top ``ceil(n/eta)`` seen there so far.

``brackets: n`` gives asynchronous Hyperband (Li et al. 2020): bracket b's trials start at rung
b. Which bracket a new trial joins is decided with the busy workers in mind (``bracket_choice:
budget``, the default in promotion mode): Hyperband gives every bracket the same budget (Li et
al. 2018, https://arxiv.org/abs/1603.06560), so the trial goes to the bracket that has
*committed* the least resource, ties to the lowest bracket. A bracket's commitment is every job
it has started, counted in full: the first jobs of its trials (``admitted * r_base``) and each
promotion's step to the next rung (``promoted(k) * (r_{k+1} - r_k)``), so the jobs its busy
workers are still running count already. Counting only finished work would send every new trial
to a bracket whose many jobs are still running (they have not reported yet) and overfill it
while many workers are busy; dealing trials round-robin (``bracket_choice: round_robin``, what
tuneyard did before) gives each bracket the same number of trials, so the bracket that starts
at ``max_resource`` gets ``r_top / r_0`` times the first bracket's resource per trial (with
rungs 1/3/9/27, 27 of every 40 epochs of first jobs). Syne Tune draws the bracket at random
with probabilities proportional to synchronous Hyperband's bracket sizes, which equalises the
budgets only in expectation and only as far as promotions go as planned; the commitment is read
from the rung counters the board keeps (``O(brackets x rungs)``), so the choice is
deterministic and follows the promotions actually made. The stopping mode keeps round-robin:
its jobs run to ``max_resource`` unless stopped, which the counters do not tell.
"""

from __future__ import annotations

from dataclasses import replace

from tuneyard.scheduler.board import Board, BracketInfo
from tuneyard.scheduler.decisions import (
    Decision,
    DecisionKind,
    Placement,
    Promotion,
    RungRecord,
    fmt,
)
from tuneyard.scheduler.schedulers.base import TrialView, ceil_div
from tuneyard.scheduler.schedulers.halving import HalvingScheduler


class ASHA(HalvingScheduler):
    name = "asha"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pauses = self.spec.mode == "promotion"

    def cutoff_rank(self, n: int) -> int:
        if self.pauses:
            return super().cutoff_rank(n)
        return ceil_div(n, self.eta) - 1

    def initial_brackets(self) -> list[BracketInfo]:
        n = min(self.spec.brackets, self.ladder.top + 1)
        return [BracketInfo(index=b, base=b, size=None, admitted=0, closed=False) for b in range(n)]

    def place(
        self, number: int, board: Board, next_index: int
    ) -> tuple[Placement, BracketInfo | None]:
        brackets = board.brackets()
        if len(brackets) < 2 or not self.pauses or self.spec.bracket_choice == "round_robin":
            return super().place(number, board, next_index)
        loads = [(self.committed(b, board), b) for b in brackets]
        load, chosen = min(loads, key=lambda x: (x[0], x[1].index))
        placement = self._first_job(chosen)
        others = ", ".join(
            f"{fmt(c)} in bracket {b.index} ({self.in_flight(b, board)} running)"
            for c, b in loads
            if b is not chosen
        )
        reason = (
            f"{placement.reason}: the bracket that has committed the least resource, "
            f"{fmt(load)} ({self.in_flight(chosen, board)} running; {others})"
        )
        return replace(placement, reason=reason), None

    def committed(self, b: BracketInfo, board: Board) -> float:
        """Resource bracket ``b``'s jobs were started for, the running ones counted in full:
        every admitted trial's first job to the bracket's first rung, every promotion's step
        from its rung to the next."""
        res = self.resources
        total = b.admitted * res[b.base]
        for k in range(b.base, self.ladder.top):
            total += board.stats(b.index, k).promoted * (res[k + 1] - res[k])
        return total

    def in_flight(self, b: BracketInfo, board: Board) -> int:
        """Jobs of bracket ``b`` still heading to a rung: sent there (admitted to the first
        rung, promoted to the others) and neither arrived nor dropped (running, or queued to
        run again)."""
        sent = b.admitted
        running = 0
        for k in range(b.base, self.ladder.top + 1):
            st = board.stats(b.index, k)
            running += sent - st.entries - st.dropped
            sent = st.promoted
        return running

    def next_promotion(self, board: Board) -> Promotion | None:
        if not self.pauses:
            return None
        return super().next_promotion(board)

    def final_promotion(self, board: Board) -> Promotion | None:
        if not self.pauses:
            return None
        return super().final_promotion(board)

    def decide(
        self, trial: TrialView, step: float, score: float, records: list[RungRecord], board: Board
    ) -> Decision:
        if self.pauses:
            return super().decide(trial, step, score, records, board)
        for rec in records:
            if rec.rung >= self.ladder.top:
                return self._complete(step)
            keep, why = self._keep_in_top(rec, board, trial.trial_id)
            if not keep:
                return Decision(DecisionKind.STOP, f"stopped at {why}", rung=rec.rung)
        if records:
            return Decision.go_on(f"continues past {why}", resource_to=trial.resource_to)
        return Decision.go_on(resource_to=trial.resource_to)
