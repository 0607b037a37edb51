"""Population-based training's schedule: every member pauses at each interval boundary, and
each paused member resumes at once, for the next interval.

The exploit-or-keep step itself (:mod:`tuneyard.scheduler.pbt`) runs where the member's
checkpoint at the boundary is known, when its pause is acknowledged; this scheduler only gives
the engine the boundaries as rungs (``interval``, ``2 * interval``, ..., ``max_resource``), a
pause at each, and a resume for every paused member. Nobody waits for a generation: a member
resumes as soon as a worker is free, the members furthest behind first, so the population stays
close together and a member at a boundary finds others there to rank against and clone.
"""

from __future__ import annotations

from tuneyard.scheduler.board import Board
from tuneyard.scheduler.decisions import Decision, DecisionKind, Promotion, RungRecord, fmt
from tuneyard.scheduler.rungs import Ladder, linear_rungs
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView


class PopulationScheduler(Scheduler):
    name = "pbt"
    pauses = True

    def _ladder(self) -> Ladder:
        pop = self.spec.population_spec()
        return Ladder(linear_rungs(pop.interval, pop.interval, pop.max_resource))

    def rung_name(self, k: int) -> str:
        return fmt(self.resources[k])

    def decide(
        self, trial: TrialView, step: float, score: float, records: list[RungRecord], board: Board
    ) -> Decision:
        if not records:
            return Decision.go_on(resource_to=trial.resource_to)
        k = records[-1].rung
        if k >= self.ladder.top:
            return self._complete(step)
        return Decision(
            DecisionKind.PAUSE,
            f"pause at {fmt(self.resources[k])} for the population step (every "
            f"{fmt(self.spec.population_spec().interval)}): {self.value(score)}",
            rung=k,
        )

    def next_promotion(self, board: Board) -> Promotion | None:
        found = board.lowest_waiting(0)
        if found is not None and found[0] < self.ladder.top:
            k, e = found
            return Promotion(
                trial_id=e.trial_id,
                bracket=0,
                from_rung=k,
                to_rung=k + 1,
                resource_from=self.resources[k],
                resource_to=self.resources[k + 1],
                reason=f"resumed at {fmt(self.resources[k])} for the next interval, to "
                f"{fmt(self.resources[k + 1])}",
            )
        return None
