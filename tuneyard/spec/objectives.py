"""What a study optimises: one metric or several (``objectives``), the bounds a trial must keep
(``constraints``), and for several objectives the point hypervolume is measured against.

One objective is the special case: ``metric``/``direction`` stay the way to write it, and a
study with ``objectives`` also carries its first objective there, so everything that shows
"the" value of a trial (sorting, the best trial, the demo's table) reads the first objective.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tuneyard.spec.params import StrictModel

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$"
MAX_OBJECTIVES = 8
MAX_CONSTRAINTS = 16


class ObjectiveSpec(StrictModel):
    metric: str = Field(pattern=NAME_PATTERN)
    direction: Literal["minimize", "maximize"] = "minimize"

    @property
    def sign(self) -> float:
        """+1 when minimising, -1 when maximising: schedulers minimise ``sign * value``."""
        return 1.0 if self.direction == "minimize" else -1.0


class ConstraintSpec(StrictModel):
    """A bound on a reported metric: feasible while ``min <= value <= max``."""

    metric: str = Field(pattern=NAME_PATTERN)
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ConstraintSpec:
        if self.max is None and self.min is None:
            raise ValueError(f"the constraint on {self.metric} needs 'max' or 'min'")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"the constraint on {self.metric}: 'min' is above 'max'")
        return self

    def as_mapping(self) -> dict[str, object]:
        """The form :func:`tuneyard.scheduler.multi.parse_constraints` reads."""
        return {"metric": self.metric, "max": self.max, "min": self.min}


class ScalarizationSpec(StrictModel):
    """How the median stopping rule sees several objectives: one weighted sum of the
    minimised objectives (maximised ones negated), in the objectives' order."""

    weights: list[float] = Field(min_length=1, max_length=MAX_OBJECTIVES)

    @model_validator(mode="after")
    def _check(self) -> ScalarizationSpec:
        if any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
            raise ValueError("weights must be >= 0 with at least one > 0")
        return self


RankingMethod = Literal["nsga2", "epsnet"]
