"""Grid search: every point of the grid exactly once, in a seeded shuffled order.

Trial n gets grid point ``(a*n + b) mod N``, where N is the grid size, ``gcd(a, N) = 1``, and
a and b are drawn from the study's seed. That affine map is a bijection of [0, N), so the
sampler hands out each point once with no memory of earlier trials. Each suggestion costs one
:meth:`SearchSpace.grid_point` decode, never a materialised grid.

The order is shuffled so that a study stopped early (max_trials below N) still spreads over
the grid rather than sweeping its first parameter's first value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import MAX_GRID_POINTS

# Mixed into the seed so the grid's permutation is not the stream of trial 0 of a random sampler.
_STREAM = 0x67726964  # "grid"


class GridSampler:
    def __init__(self, space: SearchSpace, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"sampler: seed must be >= 0, got {seed}")
        size = space.grid_size()
        if size > MAX_GRID_POINTS:
            raise ValueError(
                f"sampler: the grid has more than {MAX_GRID_POINTS:,} points; "
                "add steps or narrow the space"
            )
        self.space = space
        self.size = size
        rng = np.random.default_rng([seed, _STREAM])
        a = 1
        if size > 2:
            a = int(rng.integers(1, size))
            while math.gcd(a, size) != 1:  # at least ~1 in 5 draws is coprime for N <= 1e6
                a = int(rng.integers(1, size))
        self.a = a
        self.b = int(rng.integers(size))

    def suggest(self, number: int) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        if number >= self.size:
            raise ValueError(
                f"grid exhausted: all {self.size} grid points are taken, trial {number} asked"
            )
        return self.space.grid_point((self.a * number + self.b) % self.size)

    def capacity(self) -> int | None:
        return self.size
