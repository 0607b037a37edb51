"""ParEGO: the Gaussian-process sampler on a fresh random scalarization per suggestion.

Knowles, "ParEGO: A Hybrid Algorithm With On-Line Landscape Approximation for Expensive
Multiobjective Optimization Problems", IEEE TEVC 10(1), 2006,
https://doi.org/10.1109/TEVC.2005.851274.

Each suggestion draws weights uniformly from the simplex (from the generator of (seed,
trial number, 1), so suggestion n always draws the same weights), turns every observation's
objectives into one score, ``max_j(w_j f_j) + 0.05 * sum_j w_j f_j`` on objectives normalised
to [0, 1] by the range observed so far (:func:`tuneyard.scheduler.multi.parego`), and asks
:class:`~tuneyard.scheduler.samplers.gp.GPSampler` for its expected-improvement choice on
those scores. Every observation is scalarized, at every resource, so the GP learns from rung
results exactly as it does with one objective. A different direction each time spreads the
suggestions along the front, concave parts included (a weighted sum would miss those).

Constraints: an infeasible observation scores above every feasible one, ``1.05 + v / (1 + v)``
for a total violation v (a feasible score is at most 1.05), so the GP learns both to avoid
infeasible regions and, among infeasible points, which violate least. Objectives that are not
finite make the score NaN, which the GP treats as the worst.

Composition, not a copy: the GP sampler is kept inside, its history rebuilt from the
scalarized observations at each suggestion (a JSON load, linear in the observations), and its
warm start of the kernel fit kept in this sampler's state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuneyard.scheduler.multi import CHEBYSHEV_RHO, augmented_chebyshev, random_weights
from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.samplers.gp import GPSampler
from tuneyard.scheduler.samplers.objectives import MultiObjective
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec

# Where infeasible scores start: above every feasible augmented Chebyshev value.
INFEASIBLE = 1.0 + CHEBYSHEV_RHO


class ParEGOSampler(MultiObjective, ModelSampler):
    """A GP on random augmented-Chebyshev scalarizations; see the module docstring."""

    kind = "parego"
    version = 1
    changes_on_suggest = True  # the GP's warm start moves on with each fit

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        super().__init__(space, seed, spec)
        self.gp = GPSampler(space, seed, spec)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "gp": self.gp.extra_state()}

    def load_extra_state(self, data: Mapping[str, Any]) -> None:
        super().load_extra_state(data)
        self.gp.load_extra_state(data.get("gp", {}))

    def weights(self, number: int) -> np.ndarray:
        """The weights of suggestion ``number``."""
        return random_weights(np.random.default_rng([self.seed, number, 1]), self.objectives())

    def objectives(self) -> int:
        return self.record.n_objectives or 1

    def scalarized(self, weights: np.ndarray) -> dict[str, Any]:
        """Every observation's scalarized score, as the GP's history in JSON."""
        entries = [(n, r, y, v) for n, rs in self.record.trials.items() for r, (y, v) in rs.items()]
        if not entries:
            return {"trials": []}
        y = np.array([e[2] for e in entries], dtype=float)
        v = np.array([e[3] for e in entries], dtype=float)
        ok = np.all(np.isfinite(y), axis=1)
        lo = y[ok].min(axis=0) if ok.any() else np.zeros(y.shape[1])
        hi = y[ok].max(axis=0) if ok.any() else np.ones(y.shape[1])
        span = hi - lo
        scale = np.divide(1.0, span, out=np.zeros_like(span), where=span > 0)
        s = np.full(len(entries), np.nan)
        s[ok] = augmented_chebyshev((y[ok] - lo) * scale, weights)
        bad = v > 0
        s[bad & ok] = INFEASIBLE + 1.0 - 1.0 / (1.0 + v[bad & ok])  # v / (1 + v), 1 at inf
        s[bad & ~ok] = np.nan
        per_trial: dict[int, list[list[float]]] = {}
        for (n, r, _, _), value in zip(entries, s.tolist(), strict=True):
            per_trial.setdefault(n, []).append([r, value])
        trials = self.history.trials
        return {"trials": [[n, trials[n][0], rs] for n, rs in sorted(per_trial.items())]}

    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        self.gp.history.load_json(self.scalarized(self.weights(number)))
        return self.gp.suggest(number, running)
