"""Grid search: every point of the grid exactly once, in a seeded shuffled order.

The order is the affine bijection ``i -> (a*i + b) mod N`` with ``gcd(a, N) = 1``, so trial
number n maps to its grid point in O(1) without materialising the grid or remembering which
points were handed out; a shuffled order makes a partial grid an even sample of the space.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tuneyard.scheduler.space import SearchSpace


class GridSampler:
    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.size = space.grid_size()
        rng = np.random.default_rng([seed, 0x6772696421])
        n = self.size
        a = int(rng.integers(1, max(2, n))) if n > 1 else 1
        while math.gcd(a, n) != 1:
            a = a % n + 1
        self.a = a
        self.b = int(rng.integers(n)) if n > 1 else 0

    def suggest(self, number: int) -> dict[str, Any]:
        if not 0 <= number < self.size:
            raise ValueError(f"grid exhausted: it has {self.size} points, trial {number} asked")
        return self.space.grid_point((self.a * number + self.b) % self.size)

    def capacity(self) -> int | None:
        return self.size
