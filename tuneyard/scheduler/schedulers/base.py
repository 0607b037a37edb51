"""What every multi-fidelity scheduler offers the service.

The service calls, under the study's lock:

* :meth:`Scheduler.place` for a new trial (which bracket, which first job range);
* :meth:`Scheduler.milestones` then, after writing those rung records,
  :meth:`Scheduler.decide` for a report;
* :meth:`Scheduler.next_promotion` when a worker asks for work, before starting a new trial.

Scores are "lower is better" (the service negates maximised metrics); ``direction`` is only
used to write reasons in the user's own units.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from tuneyard.scheduler.board import Board, BracketInfo, Vector
from tuneyard.scheduler.decisions import (
    Decision,
    DecisionKind,
    Placement,
    Promotion,
    RungRecord,
    fmt,
)
from tuneyard.scheduler.rungs import Ladder
from tuneyard.scheduler.schedulers.fronts import rank_rung
from tuneyard.spec import SchedulerSpec


@dataclass(frozen=True)
class TrialView:
    trial_id: int
    number: int
    bracket: int
    # Highest rung the trial has recorded, -1 before its first.
    rung: int
    resource_to: float
    # Running statistics of the trial's scores, including the report being decided.
    best_score: float
    mean_score: float
    # First rung of the trial's bracket.
    base: int = 0


class Scheduler(ABC):
    name: str = ""
    # Whether trials pause at rungs and are resumed later (promotion) or run on (stopping).
    pauses: bool = False

    def __init__(
        self, spec: SchedulerSpec, direction: str = "minimize", fronts: bool = False
    ) -> None:
        """``fronts``: rank rungs by non-dominated sorting of the entries' vectors (a study
        with several objectives or constraints); schedulers that rank no rung ignore it."""
        self.spec = spec
        self.eta = spec.reduction_factor
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.fronts = fronts
        self.ladder = self._ladder()

    @abstractmethod
    def _ladder(self) -> Ladder: ...

    @property
    def resources(self) -> tuple[float, ...]:
        return self.ladder.resources

    def value(self, score: float) -> str:
        """A score in the user's units, for reasons."""
        return fmt(self.sign * score)

    def rung_name(self, k: int) -> str:
        return f"rung {k} ({fmt(self.resources[k])})"

    # -- brackets ------------------------------------------------------------------------
    def initial_brackets(self) -> list[BracketInfo]:
        """Brackets that exist from the start (unbounded ones, as in ASHA)."""
        return [BracketInfo(index=0, base=0, size=None, admitted=0, closed=False)]

    def bracket_plan(self, index: int) -> BracketInfo:
        """The ``index``-th bracket of a scheduler that opens brackets one after another."""
        raise ValueError(f"{self.name} has a fixed set of brackets")

    def place(
        self, number: int, board: Board, next_index: int
    ) -> tuple[Placement, BracketInfo | None]:
        """Bracket and first range of trial ``number``; the second value is a bracket to open."""
        brackets = board.brackets()
        b = brackets[number % len(brackets)]
        return self._first_job(b), None

    def _first_job(self, b: BracketInfo) -> Placement:
        to = self.resources[b.base] if self.pauses else self.ladder.max_resource
        return Placement(
            bracket=b.index,
            resource_from=0.0,
            resource_to=to,
            reason=f"new trial in bracket {b.index}, first rung {fmt(self.resources[b.base])}",
        )

    # -- reports -------------------------------------------------------------------------
    def milestones(
        self, trial: TrialView, step: float, score: float, vector: Vector | None = None
    ) -> list[RungRecord]:
        """Rung records a report creates: one per rung its step reached for the first time."""
        after = max(trial.rung, trial.base - 1)
        return [
            RungRecord(trial.bracket, k, score, vector) for k in self.ladder.crossed(after, step)
        ]

    @abstractmethod
    def decide(
        self, trial: TrialView, step: float, score: float, records: list[RungRecord], board: Board
    ) -> Decision: ...

    def next_promotion(self, board: Board) -> Promotion | None:
        return None

    def final_promotion(self, board: Board) -> Promotion | None:
        """The promotion that lets a study end well, asked for only when the study can start
        no new trial and none of its jobs runs: None where the scheduler needs none."""
        return None

    def finished_brackets(self, board: Board) -> list[int]:
        """Brackets that can produce no more promotions (sync schedulers drop them)."""
        return []

    # -- helpers -------------------------------------------------------------------------
    def _complete(self, step: float) -> Decision:
        return Decision(
            DecisionKind.COMPLETE,
            f"reached max_resource {fmt(self.ladder.max_resource)}",
            resource_to=self.ladder.max_resource,
            rung=self.ladder.top,
        )

    def cutoff_rank(self, n: int) -> int:
        """Rank (0-based, best first) of the cut-off entry of a rung holding ``n`` entries."""
        return -1

    def _keep_in_top(self, rec: RungRecord, board: Board, trial_id: int) -> tuple[bool, str]:
        """Whether trial ``trial_id``'s entry ``rec``, just recorded, ranks within the
        rung's cut-off, and a reason."""
        b, k, score = rec.bracket, rec.rung, rec.score
        n = board.stats(b, k).entries
        quota = self.cutoff_rank(n) + 1
        if self.fronts:
            failed = rec.vector.failed if rec.vector is not None else ()
            return self._keep_in_fronts(b, k, n, quota, board, trial_id, failed)
        cut = board.cutoff(b, k)
        where = self.rung_name(k)
        if cut is not None and score <= cut.score:
            return True, (
                f"{where}: {self.value(score)} is within the top {quota} of {n} "
                f"(cut-off {self.value(cut.score)})"
            )
        cut_txt = f", cut-off {self.value(cut.score)}" if cut is not None else ""
        return False, f"{where}: {self.value(score)} is not in the top {quota} of {n}{cut_txt}"

    def _keep_in_fronts(
        self,
        b: int,
        k: int,
        n: int,
        quota: int,
        board: Board,
        trial_id: int,
        failed: tuple[str, ...],
    ) -> tuple[bool, str]:
        """The stopping test by fronts: whether trial ``trial_id``'s entry ranks within the
        first ``quota`` of the rung (or ties the last of them exactly), and a reason."""
        ranked = rank_rung(board, b, k, self.spec.ranking, upto=quota)
        where = self.rung_name(k)
        label = ranked.label(trial_id, failed)
        if ranked.within(trial_id, quota, keep_ties=True):
            return True, f"{where}: {label}, within the top {quota} of {n}"
        return False, f"{where}: {label}, only the top {quota} of {n} (1/{self.eta}) continue"


def ceil_div(n: int, eta: int) -> int:
    return math.ceil(n / eta)
