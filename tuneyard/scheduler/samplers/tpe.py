"""Tree-structured Parzen Estimator (TPE), multivariate.

Bergstra, Bardenet, Bengio, Kégl, "Algorithms for Hyper-Parameter Optimization", NeurIPS 2011,
https://papers.nips.cc/paper/2011/hash/86e8f7ab32cfd12577bc2619bc635690-Abstract.html.
The observed trials are split into the best ``gamma`` fraction and the rest; a Parzen density is
fitted to each, l(x) to the good and g(x) to the bad ones; candidates drawn from l are scored by
l(x)/g(x), which is monotone in expected improvement, and the best one is tried. As in BOHB
(Falkner et al. 2018) and Optuna's ``multivariate=True``, each density is a mixture of *product*
kernels over all dimensions, so it models how parameters interact instead of each one alone.
Watanabe, "Tree-Structured Parzen Estimator: Understanding Its Algorithm Components",
https://arxiv.org/abs/2304.11127, discusses the choices below.

Which trials are good: the first ``gamma`` of :meth:`History.ranked`, which puts further-trained
trials first and then orders by score, as Optuna ranks pruned trials below complete ones. A
trial the scheduler stopped early thus counts as worse than one it let go on, whatever their
scores: the model trusts the scheduler's verdicts.

Everything happens in the unit cube of :class:`~tuneyard.scheduler.space.SearchSpace`, so log
scales need nothing special. Each dimension gets the kernel its parameter calls for:

- continuous floats and log ints: a Gaussian truncated to [0, 1];
- ints and stepped floats (equal bins): the same Gaussian's mass on the candidate's bin, so a
  neighbouring value counts as close;
- categoricals: an Aitchison-Aitken kernel. A component keeps its own choice with probability
  1 - flip and spreads ``flip`` evenly over the others, so no choice is nearer than another.
  ``flip = (c - 1) / (m + c)`` for m observations and c choices: a smoothed histogram.

Bandwidths follow Scott's rule, 1.06 · std · m^(-1/(d+4)), over the observations where the
dimension is active, floored at ``1 / min(100, m + 1)`` as Optuna does, so that a few
observations do not collapse the density onto points. Each density also holds a uniform prior
component with the weight of one observation: g never vanishes, so l/g stays finite, and l
keeps exploring.

Conditional parameters. A point of the unit cube carries 0.5 in a dimension that is inactive
in its configuration, a placeholder with no meaning, so it must not shape the density there:

- a component whose trial had the dimension inactive gets a flat kernel in it (the uniform
  density, or 1/bins for discrete ones), and samples that coordinate uniformly;
- a candidate whose own configuration leaves the dimension inactive is scored without it: its
  kernels all integrate to one, so dropping the factor is the exact marginal.

Activity is recomputed from the points themselves (the parents' bins), in numpy.

Parallel workers (constant liar, Optuna's ``constant_liar``): the configurations of running
trials join the bad set as if they had failed, so the next worker is steered away from them.

A bounded model (``max_history``, default 1,000). The good set is always the best ``gamma``
of every trial, at most 25 by default. The bad set is every other trial while there are at
most ``max_history`` of them, and otherwise the ``max_history`` most recent (highest-numbered)
of them; the running trials come on top. Past the cap the oldest bad trials thus stop shaping
g(x). Candidates are drawn from l(x), fitted on the best of the whole history, so they seldom
land where only old bad trials lie, and a search that has moved on is modelled by where it
is now. Optuna's TPE also discounts old trials,
by weight rather than by a cut-off: in a set of m > 25 trials its default weights fall
linearly from 1 for the 25 most recent to 1/m for the oldest. Below the cap the model is the
uncapped one, suggestion for suggestion.

Cost per suggestion, for n trials, C candidates, d dimensions, k good trials and
b = min(n, k + max_history) modelled points: the kernels are (C, b) numpy matrices, one
dimension at a time, so O(C · b · d) time and O(C · b) memory, and no step grows with n past
the cap. The history keeps its trials ranked and their points in a numpy array as
observations come in (:class:`~tuneyard.scheduler.samplers.base.History`), so choosing the
good and the bad set costs O(b + log n); the running configurations are converted to the
unit cube once per suggestion, without validating them again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from tuneyard.scheduler.samplers.base import ModelSampler, Running
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import CategoricalParam, FloatParam, IntParam, SamplerSpec

CONTINUOUS, ORDINAL, CATEGORICAL = 0, 1, 2
MAX_HISTORY = 1000
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_TINY = 1e-300


@dataclass(frozen=True)
class UnitLayout:
    """What each dimension of a space's unit cube holds, and which conditions gate it."""

    kinds: tuple[int, ...]  # CONTINUOUS, ORDINAL or CATEGORICAL per dimension
    bins: tuple[int, ...]  # number of equal bins of a discrete dimension, 0 for continuous
    # per conditional dimension: (its index, ((parent index, allowed bins of the parent), ...))
    conditions: tuple[tuple[int, tuple[tuple[int, np.ndarray], ...]], ...]

    @classmethod
    def of(cls, space: SearchSpace) -> UnitLayout:
        index = {name: j for j, name in enumerate(space.names)}
        kinds: list[int] = []
        bins: list[int] = []
        conditions = []
        for j, name in enumerate(space.names):
            p = space.params[name]
            if isinstance(p, CategoricalParam):
                kinds.append(CATEGORICAL)
                bins.append(len(p.choices))
            elif (isinstance(p, IntParam) and not p.log) or (
                isinstance(p, FloatParam) and p.step is not None
            ):
                # Equal bins, value k at (k + 0.5) / n. Log ints own unequal stretches of the
                # interval and are treated as continuous.
                kinds.append(ORDINAL)
                bins.append(int(p.grid_size() or 1))
            else:
                kinds.append(CONTINUOUS)
                bins.append(0)
            when = p.when_values()
            if when:
                gates = []
                for parent, values in when.items():
                    pp = space.params[parent]
                    if not isinstance(pp, CategoricalParam):  # SearchSpace refuses these
                        raise ValueError(f"{name}: condition parent {parent!r} not categorical")
                    # As the space matches conditions (True is not 1), by lookup: a parent's
                    # thousand choices against a thousand listed values is no million steps.
                    keys = {(type(v), v) for v in values}
                    allowed = np.array([(type(c), c) in keys for c in pp.choices])
                    gates.append((index[parent], allowed))
                conditions.append((j, tuple(gates)))
        return cls(tuple(kinds), tuple(bins), tuple(conditions))

    @property
    def dims(self) -> int:
        return len(self.kinds)

    def bin_of(self, x: np.ndarray, j: int) -> np.ndarray:
        """The bin index of column j (a discrete dimension) of points x."""
        n = self.bins[j]
        return np.clip(np.floor(x[:, j] * n).astype(np.int64), 0, n - 1)

    def active(self, x: np.ndarray) -> np.ndarray:
        """(n, d) bool: which coordinates of the points x are active in their configuration.
        Conditions are in topological order, so a parent's activity is known before its
        children's."""
        act = np.ones(x.shape, dtype=bool)
        for j, gates in self.conditions:
            for parent, allowed in gates:
                act[:, j] &= act[:, parent] & allowed[self.bin_of(x, parent)]
        return act

    def snap(self, x: np.ndarray, act: np.ndarray) -> np.ndarray:
        """Points as the encoding writes them: discrete coordinates at their bin centres,
        inactive ones at 0.5."""
        out = x.copy()
        for j, n in enumerate(self.bins):
            if n:
                out[:, j] = (self.bin_of(x, j) + 0.5) / n
        out[~act] = 0.5
        return out


@dataclass(frozen=True)
class Parzen:
    """A mixture of product kernels: one component per observation, the last one uniform."""

    layout: UnitLayout
    centres: np.ndarray  # (m + 1, d); the prior's row is a placeholder
    on: np.ndarray  # (m + 1, d) bool: the kernel is flat where False (all of the prior's row)
    log_weights: np.ndarray  # (m + 1,)
    sigma: np.ndarray  # (d,) Gaussian bandwidth of continuous and ordinal dimensions
    flip: np.ndarray  # (d,) categorical mass moved off a component's own choice

    @classmethod
    def fit(
        cls,
        layout: UnitLayout,
        x: np.ndarray,
        min_bandwidth: float | None = None,
        prior_weight: float = 1.0,
    ) -> Parzen:
        """The density of the points x (m, d). Bandwidths are floored at ``min_bandwidth``, or,
        when it is None, at 1 / min(100, m + 1) for the m points active in a dimension."""
        m, d = x.shape
        on = layout.active(x)
        sigma = np.ones(d)
        flip = np.zeros(d)
        for j, kind in enumerate(layout.kinds):
            values = x[on[:, j], j]
            count = len(values)
            if kind == CATEGORICAL:
                c = layout.bins[j]
                flip[j] = (c - 1) / (count + c)
                continue
            floor = 1.0 / min(100, count + 1) if min_bandwidth is None else min_bandwidth
            spread = float(values.std()) if count > 1 else 0.0
            scott = 1.06 * spread * max(count, 1) ** (-1.0 / (d + 4))
            sigma[j] = min(1.0, max(floor, scott))
        centres = np.vstack([x, np.full((1, d), 0.5)])
        on = np.vstack([on, np.zeros((1, d), dtype=bool)])
        weights = np.append(np.ones(m), prior_weight)
        return cls(layout, centres, on, np.log(weights / weights.sum()), sigma, flip)

    def widened(self, factor: float) -> Parzen:
        """The same mixture with every bandwidth times ``factor`` (BOHB samples from this)."""
        most = np.array([(c - 1) / c if c else 0.0 for c in self.layout.bins])
        return replace(self, sigma=self.sigma * factor, flip=np.minimum(most, self.flip * factor))

    # -- density ---------------------------------------------------------------------------
    def log_pdf(self, x: np.ndarray, act: np.ndarray) -> np.ndarray:
        """Log density at the points x (C, d), over the dimensions ``act`` marks active in
        each (the others are marginalised out)."""
        acc = np.broadcast_to(self.log_weights, (len(x), len(self.log_weights))).copy()
        for j, kind in enumerate(self.layout.kinds):
            use = act[:, j]
            if not use.any():
                continue
            if kind == CATEGORICAL:
                lk, flat = self._categorical(x, j)
            elif kind == ORDINAL:
                lk, flat = self._ordinal(x, j)
            else:
                lk, flat = self._continuous(x, j)
            lk = np.where(self.on[:, j], lk, flat)
            acc += np.where(use[:, None], lk, 0.0)
        top = acc.max(axis=1)  # finite: the prior component is
        return top + np.log(np.exp(acc - top[:, None]).sum(axis=1))

    def _log_mass_inside(self, j: int) -> np.ndarray:
        """Log of each component's Gaussian mass on [0, 1] in dimension j."""
        mu, s = self.centres[:, j], self.sigma[j]
        return np.log(np.maximum(_mass(-mu / s, (1 - mu) / s), _TINY))

    def _continuous(self, x: np.ndarray, j: int) -> tuple[np.ndarray, float]:
        s = self.sigma[j]
        z = (x[:, j, None] - self.centres[None, :, j]) / s
        lk = -0.5 * z**2 - math.log(s) - _LOG_SQRT_2PI - self._log_mass_inside(j)
        return lk, 0.0

    def _ordinal(self, x: np.ndarray, j: int) -> tuple[np.ndarray, float]:
        n, s = self.layout.bins[j], self.sigma[j]
        # Candidates share bins: the Gaussian masses of each bin that occurs, then a lookup.
        used, row = np.unique(self.layout.bin_of(x, j), return_inverse=True)
        mu = self.centres[None, :, j]
        mass = _mass((used[:, None] / n - mu) / s, ((used[:, None] + 1) / n - mu) / s)
        log_mass = np.log(np.maximum(mass, _TINY)) - self._log_mass_inside(j)
        return log_mass[row], -math.log(n)

    def _categorical(self, x: np.ndarray, j: int) -> tuple[np.ndarray, float]:
        c, flip = self.layout.bins[j], self.flip[j]
        if c == 1:
            return np.zeros((len(x), len(self.centres))), 0.0
        same = self.layout.bin_of(x, j)[:, None] == self.layout.bin_of(self.centres, j)[None]
        with np.errstate(divide="ignore"):  # flip 0 only when widened() is given factor 0
            lk = np.where(same, math.log1p(-flip), math.log(flip / (c - 1)))
        return lk, -math.log(c)

    # -- sampling --------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """``count`` points drawn from the mixture (not yet snapped)."""
        comp = rng.choice(len(self.log_weights), size=count, p=np.exp(self.log_weights))
        centres = self.centres[comp]
        out = rng.random((count, self.layout.dims))  # the flat kernels' draws
        for j, kind in enumerate(self.layout.kinds):
            mu = centres[:, j]
            if kind == CATEGORICAL:
                c = self.layout.bins[j]
                own = self.layout.bin_of(centres, j)
                other = rng.integers(max(c - 1, 1), size=count)
                other += other >= own  # any choice but its own, evenly
                keep = rng.random(count) >= self.flip[j]
                drawn = (np.where(keep | (c == 1), own, other) + 0.5) / c
            else:  # a truncated Gaussian by inverting its CDF
                s = self.sigma[j]
                lo, hi = ndtr(-mu / s), ndtr((1 - mu) / s)
                u = lo + rng.random(count) * (hi - lo)
                drawn = np.clip(mu + s * ndtri(u), 0.0, 1.0)
            out[:, j] = np.where(self.on[comp, j], drawn, out[:, j])
        return out


def _mass(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Standard normal mass between a and b (a <= b), accurate in the upper tail too."""
    # Above the mean, 1 - ndtr loses the digits that ndtr(-z) keeps: mirror the interval.
    upper = a > 0
    return ndtr(np.where(upper, -a, b)) - ndtr(np.where(upper, -b, a))


def points(rows: Sequence[tuple[int, np.ndarray, float]], dims: int) -> np.ndarray:
    """The unit-cube points of (number, point, score) rows as an (n, d) matrix."""
    if not rows:
        return np.empty((0, dims))
    return np.array([row[1] for row in rows], dtype=float)


def best_candidates(
    layout: UnitLayout,
    good: Parzen,
    bad: Parzen,
    rng: np.random.Generator,
    n_candidates: int,
    proposal: Parzen | None = None,
) -> np.ndarray:
    """Candidates drawn from ``proposal`` (default: ``good``), snapped, best l/g first."""
    raw = (good if proposal is None else proposal).sample(rng, n_candidates)
    act = layout.active(raw)
    cands = layout.snap(raw, act)
    score = good.log_pdf(cands, act) - bad.log_pdf(cands, act)
    return cands[np.argsort(-score, kind="stable")]


class ParzenSampler(ModelSampler):
    """What TPE and BOHB share: the space's layout, and picking among ranked candidates."""

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        super().__init__(space, seed, spec)
        self.layout = UnitLayout.of(space)
        # Only a space without continuous floats repeats configurations in practice.
        self.discrete = all(
            not isinstance(p, FloatParam) or p.step is not None or p.low == p.high
            for p in space.params.values()
        )

    def pick(
        self, ranked_candidates: np.ndarray, running: Running | Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The best candidate that is not running now, nor, in a discrete space, tried before.

        Taking the runner-up beats :meth:`ensure_new`'s random draw, which stays the guard
        for when every candidate is taken. A space with a continuous float all but never
        repeats a past trial, so there only the running trials are looked up."""
        busy = self.running(running).keys
        tried = self.history.keys if self.discrete else set()
        if busy or tried:
            for x in ranked_candidates:
                p = self.space.from_unit(x)
                key = self._key(self.space.to_unit(p, check=False))
                if key not in busy and key not in tried:
                    return p
        return self.space.from_unit(ranked_candidates[0])


class TPESampler(ParzenSampler):
    """Multivariate TPE with a constant liar; see the module docstring."""

    kind = "tpe"
    version = 1

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        super().__init__(space, seed, spec)
        self.n_startup = int(spec.option("n_startup", 10))
        self.gamma: float | None = spec.option("gamma", None)
        self.n_candidates = int(spec.option("n_candidates", 24))
        self.constant_liar = bool(spec.option("constant_liar", True))
        self.max_history = int(spec.option("max_history", MAX_HISTORY))

    def n_good(self, n: int) -> int:
        """How many of n trials model l(x): ceil(gamma * n), or Optuna's default
        min(ceil(0.1 * n), 25); at least one."""
        k = math.ceil(self.gamma * n) if self.gamma is not None else min(math.ceil(0.1 * n), 25)
        return min(max(k, 1), n)

    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        rng = self.rng(number)
        busy = self.running(running)
        if len(self.history) < self.n_startup:
            return self.ensure_new(self.space.sample(rng), busy, rng)
        good_kde, bad_kde = self.model(busy)
        cands = best_candidates(self.layout, good_kde, bad_kde, rng, self.n_candidates)
        return self.ensure_new(self.pick(cands, busy), busy, rng)

    def model(self, running: Running) -> tuple[Parzen, Parzen]:
        """l(x) and g(x): the best ``n_good`` trials, and a bounded rest (see the module
        docstring) with, under the constant liar, the running configurations."""
        good, bad = self.history.best_and_rest(self.n_good(len(self.history)), self.max_history)
        bad_points = self.history.points(bad)
        if self.constant_liar and len(running):
            bad_points = np.vstack([bad_points, running.points])
        return (
            Parzen.fit(self.layout, self.history.points(good)),
            Parzen.fit(self.layout, bad_points),
        )
