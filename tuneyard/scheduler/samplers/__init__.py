"""Samplers: which configuration a new trial tries."""

from __future__ import annotations

from tuneyard.scheduler.samplers.base import Sampler
from tuneyard.scheduler.samplers.grid import GridSampler
from tuneyard.scheduler.samplers.random import RandomSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec

__all__ = ["GridSampler", "RandomSampler", "Sampler", "make_sampler"]


def make_sampler(spec: SamplerSpec, space: SearchSpace, seed: int) -> Sampler:
    if spec.type == "grid":
        return GridSampler(space, seed)
    return RandomSampler(space, seed)
