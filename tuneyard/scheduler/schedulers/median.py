"""The median stopping rule (Golovin et al. 2017, Google Vizier, https://research.google/pubs/pub46180/).

At each evaluation point s (``min_resource``, then every ``interval``), a trial is stopped when
its best score so far is strictly worse than the median of the running averages that trials
recorded at s, once at least ``min_trials`` have. Unlike Vizier, the reference set includes
trials still running (all that reached s), so the rule acts early in a study, and the median
of an even number of values is the lower of the two middle ones: it is the rung's cut-off
entry, kept up to date by the store, never a scan of all trials.
"""

from __future__ import annotations

from tuneyard.scheduler.board import Board, Vector
from tuneyard.scheduler.decisions import Decision, DecisionKind, RungRecord
from tuneyard.scheduler.rungs import Ladder, linear_rungs
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView


class MedianStopping(Scheduler):
    name = "median"

    def _ladder(self) -> Ladder:
        s = self.spec
        interval = s.interval or s.min_resource
        return Ladder(linear_rungs(s.min_resource, interval, s.max_resource))

    def cutoff_rank(self, n: int) -> int:
        return (n - 1) // 2

    def milestones(
        self, trial: TrialView, step: float, score: float, vector: Vector | None = None
    ) -> list[RungRecord]:
        # Several objectives reach the rule as one scalarized score (the definition's
        # weights): the rule ranks no vector.
        return [
            RungRecord(trial.bracket, k, trial.mean_score)
            for k in self.ladder.crossed(trial.rung, step)
        ]

    def decide(
        self, trial: TrialView, step: float, score: float, records: list[RungRecord], board: Board
    ) -> Decision:
        for rec in records:
            if rec.rung >= self.ladder.top:
                return self._complete(step)
            n = board.stats(rec.bracket, rec.rung).entries
            if n < self.spec.min_trials:
                continue
            cut = board.cutoff(rec.bracket, rec.rung)
            if cut is None:
                continue
            median = cut.score
            if trial.best_score > median:
                return Decision(
                    DecisionKind.STOP,
                    f"stopped at {self.rung_name(rec.rung)}: best {self.value(trial.best_score)} "
                    f"is worse than the median {self.value(median)} of {n} running averages",
                    rung=rec.rung,
                )
        return Decision.go_on(resource_to=trial.resource_to)
