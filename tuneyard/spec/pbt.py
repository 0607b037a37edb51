"""Population-based training: the scheduler definition the service will accept.

``scheduler: {type: pbt, population: 16, interval: 4, max_resource: 100, quantile: 0.25,
explore: {resample_probability: 0.25, perturb: [0.8, 1.2]}}`` trains 16 members side by side;
every ``interval`` resource units a member in the bottom ``quantile`` of the population clones
a member of the top quantile (its checkpoint and parameters) and explores from there: each
mutable parameter is redrawn from the space with ``resample_probability``, else scaled by one
of the two ``perturb`` factors. ``type: pb2`` chooses the new float and int parameters by a
GP bandit instead (Parker-Holder et al. 2020). The rule itself is
:mod:`tuneyard.scheduler.pbt`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tuneyard.spec.params import StrictModel

MAX_POPULATION = 10_000

PopulationType = Literal["pbt", "pb2"]


class ExploreSpec(StrictModel):
    """How an exploiting member moves away from its donor's parameters."""

    resample_probability: float = Field(default=0.25, ge=0.0, le=1.0)
    # The two factors a float or int parameter is scaled by, one of them drawn at random (the
    # PBT paper's 0.8 and 1.2); a categorical moves to the neighbouring choice below or above.
    perturb: tuple[float, float] = (0.8, 1.2)

    @field_validator("perturb")
    @classmethod
    def _check_perturb(cls, v: tuple[float, float]) -> tuple[float, float]:
        low, high = v
        if low <= 0:
            raise ValueError(f"perturb: the factors must be positive, got {low!r}")
        if not low < 1.0 < high:
            # Both on one side of 1 would push every parameter the same way at every explore.
            raise ValueError(
                f"perturb: [{low!r}, {high!r}] must straddle 1 (low < 1 < high), "
                "or explore would only ever shrink or only ever grow a parameter"
            )
        return v


class PBTSpec(StrictModel):
    """A population trained with exploit and explore every ``interval`` resource units."""

    type: PopulationType
    population: int = Field(ge=2, le=MAX_POPULATION)
    interval: float = Field(gt=0)
    max_resource: float = Field(gt=0)
    # The fraction of the population that exploits (the bottom) and that donors come from
    # (the top); at most a half, so no member is both.
    quantile: float = Field(default=0.25, gt=0.0, le=0.5)
    explore: ExploreSpec = ExploreSpec()

    @model_validator(mode="after")
    def _check(self) -> PBTSpec:
        if self.interval >= self.max_resource:
            raise ValueError(
                f"interval: {self.interval!r} must be smaller than max_resource "
                f"({self.max_resource!r}), or no member would ever reach an exploit point"
            )
        return self
