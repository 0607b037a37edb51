"""Random search (Bergstra & Bengio 2012, https://jmlr.org/papers/v13/bergstra12a.html).

Each trial's configuration is drawn from ``numpy.random.default_rng([seed, number])``: it
depends on the study's seed and the trial number only, never on global state or on the order
in which concurrent requests arrive.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneyard.scheduler.space import SearchSpace


class RandomSampler:
    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.seed = seed

    def suggest(self, number: int) -> dict[str, Any]:
        return self.space.sample(np.random.default_rng([self.seed, number]))

    def capacity(self) -> int | None:
        return None
