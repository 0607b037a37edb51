"""Random search: each parameter drawn independently from its range or choices.

Bergstra & Bengio, "Random Search for Hyper-Parameter Optimization", JMLR 13 (2012),
https://jmlr.org/papers/v13/bergstra12a.html: when only a few parameters matter, random
search covers each of them far more densely than a grid of the same size.

Trial n draws from ``numpy.random.default_rng([seed, n])``. It depends on the study's seed and
the trial number only, never on global state or on the order concurrent requests arrive in.

``capacity()`` is None even when every parameter is discrete. Draws are with replacement, so
the first k trials of a k-point space would not cover it, and capping the study at k trials
would only cut it short. Use the grid sampler to visit every point once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tuneyard.scheduler.space import SearchSpace


class RandomSampler:
    def __init__(self, space: SearchSpace, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"sampler: seed must be >= 0, got {seed}")
        self.space = space
        self.seed = seed

    def suggest(self, number: int) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        return self.space.sample(np.random.default_rng([self.seed, number]))

    def capacity(self) -> int | None:
        return None
