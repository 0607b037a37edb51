"""Carrying earlier results into a new study.

``warm_start: {studies: [12, 15]}`` feeds the observations of earlier studies (their trials'
scores at every rung they reached and at their end) to the new study's model-based sampler,
as if they were its own history, before its first suggestion. Only observations whose
parameters fit the new space are used: the names the new space has, with values inside its
bounds and choices (a parameter the new space adds must be inactive in that configuration).
They are priors: not trials of the new study, not counted in its budget. The service checks
the studies named when the new one is created (:mod:`tuneyard.service.warm_start`).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from tuneyard.spec.params import StrictModel

MAX_SOURCES = 20
# Observations read per source study, its latest first: enough for any model, and a bound
# on the one-off read at the first suggestion.
MAX_PRIORS_PER_STUDY = 5_000


class WarmStartSpec(StrictModel):
    studies: list[int] = Field(min_length=1, max_length=MAX_SOURCES)

    @field_validator("studies")
    @classmethod
    def _check(cls, v: list[int]) -> list[int]:
        for i, sid in enumerate(v):
            if sid < 1:
                raise ValueError(f"studies[{i}]: {sid} is not a study id")
            if sid in v[:i]:
                raise ValueError(f"studies[{i}]: study {sid} is named twice")
        return v
