"""What a sampler offers, and the factory that picks one from the study definition.

A sampler maps a trial number to a configuration, deterministically in (study seed, trial
number). Nothing depends on which trials came before or on the order concurrent requests
arrive in, so two API replicas agree on trial n without sharing state, and a sampler needs no
persistence beyond the study's seed.
"""

from __future__ import annotations

from typing import Any, Protocol

from tuneyard.scheduler.samplers.grid import GridSampler
from tuneyard.scheduler.samplers.random import RandomSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec


class Sampler(Protocol):
    def suggest(self, number: int) -> dict[str, Any]:
        """The configuration of the trial with this (0-based) number."""
        ...

    def capacity(self) -> int | None:
        """How many distinct configurations it produces; None when unbounded."""
        ...


def make_sampler(spec: SamplerSpec, space: SearchSpace, seed: int) -> Sampler:
    """The sampler ``spec`` names, seeded with ``seed`` (the service draws one if spec has none)."""
    if spec.type == "grid":
        return GridSampler(space, seed)
    if spec.type == "random":
        return RandomSampler(space, seed)
    raise ValueError(f"sampler: unknown type {spec.type!r}")
