"""Samplers: which configuration a new trial tries."""

from __future__ import annotations

from tuneyard.scheduler.samplers.base import Sampler, make_sampler
from tuneyard.scheduler.samplers.grid import GridSampler
from tuneyard.scheduler.samplers.random import RandomSampler

__all__ = ["GridSampler", "RandomSampler", "Sampler", "make_sampler"]
