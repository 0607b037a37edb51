"""FIFO: every trial trains to ``max_resource``; nothing is stopped early."""

from __future__ import annotations

from tuneyard.scheduler.board import Board
from tuneyard.scheduler.decisions import Decision, RungRecord
from tuneyard.scheduler.rungs import Ladder
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView


class FIFO(Scheduler):
    name = "fifo"

    def _ladder(self) -> Ladder:
        return Ladder((float(self.spec.max_resource),))

    def decide(
        self, trial: TrialView, step: float, score: float, records: list[RungRecord], board: Board
    ) -> Decision:
        if records:
            return self._complete(step)
        return Decision.go_on(resource_to=trial.resource_to)
