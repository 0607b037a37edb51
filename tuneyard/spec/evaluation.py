"""How each trial is evaluated: on several replicates (cross-validation folds, seeds, or the grid
of both) whose aggregate is the trial's value, and whether a clearly worse trial is raced out
before all its replicates ran.

``evaluation: {folds: 5}`` evaluates every configuration on 5 folds; ``{seeds: 3}`` on 3 seeds;
``{folds: 5, seeds: 3}`` on the 15 (fold, seed) pairs. The objective receives ``trial.fold``
and ``trial.seed``; a trial's value at a resource level is the ``aggregate`` (mean or median)
of its replicates there. ``racing`` stops a trial whose replicates so far show, with the given
confidence, that it is worse than the study's incumbent on the same replicates (the test is
:func:`tuneyard.scheduler.replicates.race`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from tuneyard.spec.params import StrictModel

MAX_FOLDS = 100
MAX_SEEDS = 100
MAX_REPLICATES = 1_000

Aggregation = Literal["mean", "median"]

# What a replicated job's trial handle (and a command's placeholders) call the replicate: no
# parameter of an evaluation study may take these names.
REPLICATE_NAMES = frozenset({"fold", "folds", "seed", "replicate", "replicates", "parent_id"})


@dataclass(frozen=True)
class Replicate:
    """One evaluation of a trial: its position in the fixed order, its fold and its seed.

    ``fold`` is None without folds, ``seed`` None without seeds. Seeds are numbered 0..seeds-1:
    the objective derives its own random state from the number (and the study's seed).
    """

    index: int
    fold: int | None
    seed: int | None


class RacingSpec(StrictModel):
    """Stop a trial early when a paired test on the replicates it shares with the incumbent
    says, at ``confidence``, that it is worse; never with fewer than ``min_replicates`` shared.
    """

    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    # A paired test needs two differences to estimate their spread.
    min_replicates: int = Field(default=2, ge=2, le=MAX_REPLICATES)

    @property
    def alpha(self) -> float:
        """The test's level: a trial is stopped when its p-value is below ``1 - confidence``."""
        return 1.0 - self.confidence


class EvaluationSpec(StrictModel):
    folds: int | None = Field(default=None, ge=2, le=MAX_FOLDS)
    seeds: int | None = Field(default=None, ge=1, le=MAX_SEEDS)
    aggregate: Aggregation = "mean"
    # True: a trial's replicates run at the same time on different workers; false: one after
    # another on one worker.
    parallel: bool = False
    racing: RacingSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> EvaluationSpec:
        if self.folds is None and self.seeds is None:
            raise ValueError("evaluation: give 'folds', 'seeds' or both")
        n = self.replicates
        if n > MAX_REPLICATES:
            raise ValueError(
                f"evaluation: folds x seeds = {n} replicates, at most {MAX_REPLICATES} are allowed"
            )
        if self.racing is not None and self.racing.min_replicates >= n:
            # Racing saves the replicates after the test; after the last there are none.
            raise ValueError(
                f"evaluation.racing.min_replicates: {self.racing.min_replicates} must be fewer "
                f"than the {n} {self.plural} of a trial, or racing could never stop one"
            )
        return self

    @property
    def replicates(self) -> int:
        """How many times each trial is evaluated: folds x seeds."""
        return (self.folds or 1) * (self.seeds or 1)

    @property
    def unit(self) -> str:
        """What a replicate is called in reasons and tables: fold, seed, or replicate for both."""
        if self.folds is not None and self.seeds is not None:
            return "replicate"
        return "fold" if self.folds is not None else "seed"

    @property
    def plural(self) -> str:
        return self.unit + "s"

    def replicate_list(self) -> list[Replicate]:
        """Every replicate of a trial, in the fixed order of their indices: seed-major, as
        repeated cross-validation runs, so the first ``folds`` replicates are one complete
        cross-validation under seed 0, the next ones the same folds under seed 1, and so on.
        With folds alone or seeds alone the index is the fold or the seed.
        """
        folds: list[int | None] = list(range(self.folds)) if self.folds else [None]
        seeds: list[int | None] = list(range(self.seeds)) if self.seeds else [None]
        pairs = [(fold, seed) for seed in seeds for fold in folds]
        return [Replicate(i, fold, seed) for i, (fold, seed) in enumerate(pairs)]
