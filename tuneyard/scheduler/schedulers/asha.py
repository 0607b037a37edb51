"""Asynchronous successive halving (ASHA), Li et al. 2020, https://arxiv.org/abs/1810.05934.

Promotion mode is the paper's Algorithm 2: trials pause at each rung and are resumed later
when they rank in the top ``1/eta`` of it. Stopping mode is the variant most libraries ship
(Ray Tune's ASHA, Optuna's SuccessiveHalvingPruner): a trial runs to ``max_resource`` unless,
at a rung, it falls out of the top ``ceil(n/eta)`` seen there so far.

``brackets: n`` gives asynchronous Hyperband: bracket b's trials start at rung b, and new
trials are dealt to brackets round-robin, so the assignment depends only on the trial number.
"""

from __future__ import annotations

from tuneyard.scheduler.board import Board, BracketInfo
from tuneyard.scheduler.decisions import Decision, DecisionKind, Promotion, RungRecord
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
