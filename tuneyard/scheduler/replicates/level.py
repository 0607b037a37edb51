"""A trial's replicates at one resource level: their aggregate, whether every replicate is in,
and, while some are missing, the racing verdict against the incumbent.

The one rule the service (:mod:`tuneyard.service.trials.replicates`, after each replicate's
report at a level) and the benchmark's loop (``bench/racing.py``) both apply, so a race is
decided the same way wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tuneyard.scheduler.replicates.aggregate import Aggregate, How, aggregate
from tuneyard.scheduler.replicates.racing import RaceDecision, ReplicateScores, race
from tuneyard.spec.evaluation import RacingSpec


@dataclass(frozen=True)
class LevelVerdict:
    """``aggregate`` of the scores in (lower is better); ``complete`` once every replicate
    reached the level, when the trial's report there is the aggregate; ``race`` the racing
    test's decision while it is not (None: complete, no racing, or no incumbent yet)."""

    aggregate: Aggregate
    complete: bool
    race: RaceDecision | None = None

    @property
    def stop(self) -> bool:
        return self.race is not None and self.race.stop


def judge_level(
    trial: int,
    scores: Mapping[int, float],
    total: int,
    *,
    how: How = "mean",
    rule: RacingSpec | None = None,
    incumbent: Callable[[], ReplicateScores | None] = lambda: None,
    unit: str = "fold",
    sign: float = 1.0,
) -> LevelVerdict:
    """Judge trial ``trial``'s ``scores`` (by replicate index) at one level, of ``total``
    replicates. ``incumbent`` is asked only when a race is run: the study's best trial at the
    level among those whose replicates are all in (the caller's lookup, an index probe in the
    service)."""
    agg = aggregate(scores.values(), how)
    if len(scores) >= total:
        return LevelVerdict(agg, True)
    if rule is None:
        return LevelVerdict(agg, False)
    best = incumbent()
    if best is None or best.trial == trial:
        return LevelVerdict(agg, False)
    decision = race(ReplicateScores(trial, scores), best, rule, total=total, unit=unit, sign=sign)
    return LevelVerdict(agg, False, decision)
