"""BOHB's model: TPE fitted on the highest resource that has enough observations.

Falkner, Klein, Hutter, "BOHB: Robust and Efficient Hyperparameter Optimization at Scale",
ICML 2018, https://proceedings.mlr.press/v80/falkner18a.html. Hyperband (here: the study's
scheduler) decides how long each trial trains; this sampler replaces its random draws:

- the model is fitted on the scores at the highest resource (rung) where at least
  ``n_startup`` trials were observed (default d + 2 for d dimensions): results at a higher
  resource are more faithful, results at a lower one more plentiful, and a lower rung serves
  until a higher one has enough;
- as in the paper, the best N_l = max(N_min, ceil(gamma N)) of that rung's N trials fit l(x)
  and the worst N_g = max(N_min, N - N_l) fit g(x), with N_min = n_startup - 1 (d + 1): the two
  sets overlap while N < 2 N_min, since fewer points cannot shape a KDE in d dimensions. The
  trials running now join g (constant liar). Kernels, conditions and categoricals are those
  of :mod:`tuneyard.scheduler.samplers.tpe`;
- ``n_candidates`` (64) are drawn from l with every bandwidth times ``bandwidth_factor`` (3),
  to explore around the good points, and scored by l/g under the fitted bandwidths;
- ``random_fraction`` (1/3) of the suggestions are random, which keeps BOHB's worst case
  within a constant factor of Hyperband's.

Bandwidths follow Scott's rule. The paper floors them at ``min_bandwidth`` = 1e-3 alone. With
that floor the good points, each proposed next to the last ones, shrink their own spread and
the search freezes on the first good region: on a 2-d bowl (the contract suite's), the best
five of 60 sequential trials averaged 0.46 over 20 seeds, against 0.06 with the floor below
(3.1 against 0.035 without the random fraction). So when ``min_bandwidth`` is not given the
floor is TPE's, 1 / min(100, m + 1) for m points; a given ``min_bandwidth`` is the paper's
fixed floor.

Suggestion n draws its coin and everything else from the generator of (seed, n).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuneyard.scheduler.samplers.tpe import Parzen, ParzenSampler, best_candidates
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec


class BOHBSampler(ParzenSampler):
    """The BOHB model over the study's rungs; see the module docstring."""

    kind = "bohb"
    version = 1

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        super().__init__(space, seed, spec)
        self.n_startup = int(spec.option("n_startup", self.layout.dims + 2))
        self.gamma = float(spec.option("gamma", 0.15))
        self.n_candidates = int(spec.option("n_candidates", 64))
        self.random_fraction = float(spec.option("random_fraction", 1 / 3))
        self.bandwidth_factor = float(spec.option("bandwidth_factor", 3.0))
        given = spec.option("min_bandwidth", None)
        self.min_bandwidth: float | None = None if given is None else float(given)

    def model_resource(self) -> float | None:
        """The highest resource with at least ``n_startup`` observations, if any."""
        enough = [r for r, count in self.history.resources().items() if count >= self.n_startup]
        return max(enough) if enough else None

    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        rng = self.rng(number)
        explore = rng.random() < self.random_fraction
        busy = self.running(running)
        resource = self.model_resource()
        if explore or resource is None:
            return self.ensure_new(self.space.sample(rng), busy, rng)
        numbers, x, scores = self.history.resource_table(resource)
        ranked = x[np.lexsort((numbers, scores))]  # best first, ties by trial number
        n = len(ranked)
        # The paper's N_l = max(N_min, q N) best and N_g = max(N_min, N - N_l) worst, which
        # overlap while N < 2 N_min: few points cannot fit a KDE in d dimensions.
        n_min = max(1, self.n_startup - 1)
        k = min(n, max(n_min, math.ceil(self.gamma * n)))
        bad = ranked[n - min(n, max(n_min, n - k)) :]
        if len(busy):
            bad = np.vstack([bad, busy.points])
        good_kde = Parzen.fit(self.layout, ranked[:k], self.min_bandwidth)
        bad_kde = Parzen.fit(self.layout, bad, self.min_bandwidth)
        cands = best_candidates(
            self.layout,
            good_kde,
            bad_kde,
            rng,
            self.n_candidates,
            proposal=good_kde.widened(self.bandwidth_factor),
        )
        return self.ensure_new(self.pick(cands, busy), busy, rng)
