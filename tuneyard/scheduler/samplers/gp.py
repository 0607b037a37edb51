"""Gaussian-process Bayesian optimisation with expected improvement.

Snoek, Larochelle & Adams, "Practical Bayesian Optimization of Machine Learning Algorithms",
NeurIPS 2012, https://arxiv.org/abs/1206.2944 (Matérn 5/2 ARD kernel, EI); Ament et al.,
"Unexpected Improvements to Expected Improvement for Bayesian Optimization", NeurIPS 2023,
https://arxiv.org/abs/2310.20708 (log-EI, so the acquisition does not underflow to a flat 0);
Hvarfner, Hellsten & Nardi, "Vanilla Bayesian Optimization Performs Great in High
Dimensions", ICML 2024, https://arxiv.org/abs/2402.02229 (the lengthscale prior).

The model, per suggestion:

- **Inputs.** Each trial's point of the unit cube (:meth:`SearchSpace.to_unit`). Numeric
  parameters are one column each, discrete ones at their bin centres. A categorical with k
  choices is k one-hot columns that share one lengthscale (one per *parameter*, not per
  column, so a 1,000-choice categorical costs one hyperparameter and the fit stays cheap).
  An inactive parameter (its ``when`` fails) is 0.5 when numeric and all-zero when
  categorical, so every inactive configuration of a branch looks the same to the kernel.
- **Which observation of a trial.** One row per trial: its score at the highest resource it
  reached (:meth:`History.latest`), with that resource as one more input, log-scaled to
  [0, 1] over the resources in the fit set. An early-stopped trial thus still says "bad
  here", and the resource column learns how much scores drop with training. Predictions and
  the acquisition are made at the largest resource seen. With a single resource the column
  is left out.
- **Targets.** Scores (lower is better), non-finite ones replaced by the worst finite score,
  far-out bad values clipped at Q3 + 3 IQR (a diverged run should not flatten the rest of the
  surface), then standardised.
- **Kernel.** Matérn 5/2 with ARD lengthscales, a signal variance and a noise variance,
  fitted by maximising the log marginal likelihood plus log priors (log-normal lengthscale
  prior whose median grows with sqrt(dimension), as Hvarfner et al.; a log-normal prior on
  the signal variance; a Gamma prior on the noise variance that lets a deterministic
  objective be interpolated) with L-BFGS-B and analytic gradients. The first fit starts from
  the better of the prior's centre and short lengthscales; later fits start from the
  previous optimum, kept in the sampler state (so suggesting changes the state, and a
  replica that loads it continues exactly). The hyperparameters are fitted on at most
  :data:`HYPER_FIT_MAX` rows (the best quarter by score and rows evenly spaced in trial
  order); the posterior then uses every row of the fit set.
- **Fit set (max_history).** At most ``max_history`` trials (default 500): the best half as
  :meth:`History.ranked` orders them (further trained first, then by score) plus the most
  recent (highest numbers) of the others. Old, bad trials are what gets dropped.
- **Parallel workers.** Running configurations join the training set as noiseless
  pseudo-observations at the posterior mean (kriging believer, Ginsbourger, Le Riche &
  Carraro 2010, https://doi.org/10.1007/978-3-642-10701-6_6). The mean is unchanged, the
  variance there falls to about 0 and a believed value below the incumbent becomes the
  incumbent, so EI at a running trial is about 0. Where the model is very sure of the
  optimum that alone would still pack concurrent suggestions 1e-4 apart, so EI is also
  multiplied by 1 - exp(-d^2 / (2 * 0.01^2)), d the distance to a running point in
  lengthscales: a local penalty in the spirit of González et al. 2016,
  https://arxiv.org/abs/1505.08052.
- **Acquisition.** log-EI against the incumbent, the lowest posterior mean at a trained
  point. Maximised over ``n_candidates`` points (default 2048): half uniform, half Gaussian
  perturbations of the best trained points; the best few are then refined by a shrinking
  perturbation search. Candidates are snapped to the grid (discrete parameters at their bin
  centres, inactive ones at 0.5) before they are scored, so the model scores what
  :meth:`SearchSpace.from_unit` will decode.
- **Steps that leave the cube are reflected back, not clipped.** Clipping a Gaussian step at
  a face puts every step that crosses the face exactly on it: from a centre on a face, half
  the candidates of every round sit on that face, whatever the step size. Where the
  acquisition barely changes along a dimension (a long lengthscale: the model thinks the
  dimension hardly matters) the winner's coordinate there is whatever its candidate drew, so
  with clipping it stayed on the face, the next fit saw the best trials on the face, their
  perturbations stayed there in turn, and the face became absorbing: on the crossing
  benchmark (Hartmann-6 on learning curves, bench/quality) 88 % of the modelled suggestions
  had a coordinate within 1e-3 of a bound, and on a 6-dimensional quadratic with an interior
  optimum up to 98 %, stuck at regret 0.22. Reflection (a random walk reflected at the faces
  keeps the uniform density, so no point of the cube is favoured) leaves a face as reachable
  as the interior and no more: an optimum on a face is still found, as the refinement's small
  steps walk up to it, but a face is no longer a trap. That is the candidate search's share
  of the problem. The model's share remains: along a dimension with a long lengthscale the
  posterior mean is nearly linear, so EI still peaks on a face there (the boundary
  over-exploration of Siivola, Vehtari, Vanhatalo, González & Andersen, "Correcting boundary
  over-exploration deficiencies in Bayesian optimization with virtual derivative sign
  observations", IEEE MLSP 2018, https://arxiv.org/abs/1704.00963; Oh, Gavves & Welling,
  "BOCK: Bayesian Optimization with Cylindrical Kernels", ICML 2018,
  https://arxiv.org/abs/1806.01619, on why the faces draw EI: the variance is largest far
  from the data, and in d dimensions most of the cube is near a face). The next two items are
  the model's share.
- **Two basins of the likelihood, both tried.** The log marginal likelihood of a GP often has
  two local optima: short lengthscales with little noise (the data interpolated) and long
  lengthscales with much noise (the data a smooth trend plus noise); Rasmussen & Williams,
  "Gaussian Processes for Machine Learning", MIT Press 2006, section 5.4.1 and figure 5.5.
  With a few dozen points in 6 dimensions and the noise prior's mode at 0.037, the fit of a
  deterministic quadratic landed in the second one: lengthscales of 10-20 on half the
  dimensions, their curvature explained as noise, the mean nearly linear there, and so EI
  peaked on a face of each; on a 6-dimensional quadratic with its minimum inside, 62 % of the
  suggestions had a coordinate within 1 % of a bound and three seeds of ten stalled at
  regret 0.08-0.15. So every fit that ends with a noise variance above :data:`_NOISY` is run a
  second time from the interpolating basin (noise 1e-5, lengthscales at most the prior's
  median / e) and the one with the better penalised likelihood is kept, in the state too. A
  noisy objective keeps its noisy fit (the second start ends worse there; a test holds it),
  at the price of a second L-BFGS-B run per suggestion that ends noisy.
- **A pessimistic prior mean.** The GP's constant prior mean is the 0.9 quantile of the
  (clipped, standardised) targets, not their mean. Far from every observation the posterior
  returns to its prior mean; at the mean of the targets, an unexplored corner looks like an
  average trial with the largest variance in the cube, which for a minimiser is worth a lot
  of EI. At a high quantile it looks like a bad trial with a large variance: still worth a
  look where nothing else is promising, but no longer better than the surroundings of the
  incumbent. The mean near the data is unchanged (the data dominate there). This is the
  model's prior saying "most configurations are worse than the ones we picked", which the
  trials before it support.

  Neither change helps the multi-fidelity case (a resource column, acquisition at the top
  resource; bench/quality's crossing objective under ASHA promotion): about 90 % of its
  suggestions stay on a boundary. There the fits are already in the interpolating basin, and
  the acquisition at the top resource is nearly flat, with a slight rise towards the faces:
  the posterior variance is a little larger at a face, where data lie on one side only.
  Measured on crossing, at each such suggestion, log EI there was only 0.034 (median; 0.011
  to 0.17 between the quartiles) above that of the same point moved 3 % of the range inward,
  and the refinement's perturbation search, which keeps every step that raises EI at all,
  walks up those small differences to the face. The faces chosen lie along dimensions of
  every fitted lengthscale, short and long; neither a lengthscale cap nor a minimum gain per
  refinement step changed the share much (bench/quality/README.md).

  Measured over 30 modelled suggestions after 10 random ones, 10 seeds: share with a
  coordinate within 1 % of a bound on a 6-D quadratic (interior minimum) 62 % -> 35 %, all
  seeds at regret below 1.4e-4 (before, three of ten above 0.08); on Hartmann-6 57 % -> 44 %,
  median best 0.47 -> 0.12; on a 2-D quadratic 8 % -> 6 %. A lengthscale cap at the prior's
  median (alone, or with the two changes above) was tried and not kept: it did not lower
  the share on Hartmann-6. ``tests/unit/test_gp_boundary.py`` holds the bounds;
  bench/quality/README.md the benchmark's figures.

Before ``n_startup`` trials (default 10) have results, suggestions are random. Randomness comes
only from ``self.rng(number)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.linalg import lapack, solve_triangular
from scipy.optimize import minimize
from scipy.special import erfcx, ndtr

from tuneyard.scheduler.samplers.base import ModelSampler, Running
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import CategoricalParam, FloatParam, IntParam, SamplerSpec

N_STARTUP = 10
N_CANDIDATES = 2048
MAX_HISTORY = 500
# Rows the kernel hyperparameters are fitted on: the fit costs O(n^3) per L-BFGS-B step, the
# posterior only once, so the fit gets a subset and the posterior the whole fit set.
HYPER_FIT_MAX = 128
# L-BFGS-B iterations from a warm start (the previous fit) and from scratch.
_WARM_ITERATIONS = 15
_COLD_ITERATIONS = 60

_SQRT5 = math.sqrt(5.0)
_JITTER = 1e-8
# Bounds of the log hyperparameters (inputs in [0, 1], standardised targets).
_LOG_LS_BOUNDS = (math.log(1e-2), math.log(1e3))
_LOG_SIGNAL_BOUNDS = (math.log(1e-2), math.log(1e2))
_LOG_NOISE_BOUNDS = (math.log(1e-6), math.log(1.0))
# Priors. Lengthscales and signal variance log-normal: (mean, sd) of the log; the signal
# variance around 1 (standardised targets). The noise variance Gamma(shape, rate), as Optuna's
# GP sampler: mean 0.04, but a tail towards 0 that costs only 1.1 nats an e-fold, so a
# deterministic objective is interpolated while a noisy one is smoothed. (A log-normal
# noise prior pinned the noise near its centre and blurred deterministic objectives.)
_LS_PRIOR_SD = math.sqrt(3.0)
_SIGNAL_PRIOR = (0.0, 1.0)
_NOISE_SHAPE, _NOISE_RATE = 1.1, 30.0
_NOISE_START = math.log(1e-2)
# The second start of every fit that ends noisy (noise variance above _NOISY): noise 1e-5 and
# lengthscales at most the prior's median / e, the interpolating basin of the likelihood.
_NOISY = 1e-3
_INTERPOLATING_NOISE = math.log(1e-5)
_INTERPOLATING_LS_SHIFT = 1.0
# The prior mean of the GP: this quantile of the observed (clipped, standardised) targets.
_PRIOR_MEAN_QUANTILE = 0.9
# Running trials are believed (nearly) without noise, so EI vanishes at them.
_BELIEVER_NOISE = 1e-6
# Around a running trial, EI is multiplied by 1 - exp(-d^2 / (2 rho^2)), d the distance in
# lengthscales: concurrent suggestions stay about rho lengthscales apart even where the model
# is so sure of the optimum that the believer alone would pack them 1e-4 apart.
_REPULSION = 0.01


# -- encoding ------------------------------------------------------------------------------------


class _Encoder:
    """The unit cube as the model sees it: snapping to the grid, activity, one-hot features.

    Mirrors :mod:`tuneyard.scheduler.space`'s encoding, vectorised over many points, so the
    acquisition can score thousands of candidates without decoding each one.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.names = list(space.names)
        self.d = len(self.names)
        index = {n: i for i, n in enumerate(self.names)}
        # Per dimension: ("cat", k) | ("bins", n) | ("logint", lo, hi, low, high) | ("const",)
        # | ("cont",)
        self.kinds: list[tuple[Any, ...]] = []
        self.categorical = np.zeros(self.d, dtype=bool)
        # Per dimension: its conditions as (parent dimension, allowed choice indices).
        self.conditions: list[list[tuple[int, np.ndarray]]] = []
        cols = 0
        self.col_start: list[int] = []
        groups: list[int] = []
        for i, name in enumerate(self.names):
            p = space.params[name]
            self.col_start.append(cols)
            if isinstance(p, CategoricalParam):
                k = len(p.choices)
                self.kinds.append(("cat", k))
                self.categorical[i] = True
                groups += [i] * k
                cols += k
            else:
                self.kinds.append(self._numeric_kind(p))
                groups.append(i)
                cols += 1
            conds = []
            for parent, values in p.when_values().items():
                choices = space.params[parent]
                if not isinstance(choices, CategoricalParam):  # SearchSpace refuses these
                    raise ValueError(f"{name}: condition parent {parent!r} is not categorical")
                keys = {(type(v), v) for v in values}  # True is not 1; a lookup, not a scan
                allowed = [j for j, c in enumerate(choices.choices) if (type(c), c) in keys]
                conds.append((index[parent], np.asarray(allowed, dtype=np.int64)))
            self.conditions.append(conds)
        self.n_cols = cols
        self.groups = np.asarray(groups, dtype=np.int64)

    @staticmethod
    def _numeric_kind(p: FloatParam | IntParam) -> tuple[Any, ...]:
        if isinstance(p, IntParam):
            if p.log:
                return ("logint", math.log(p.low - 0.5), math.log(p.high + 0.5), p.low, p.high)
            return ("bins", p.grid_size())
        if p.step is not None:
            return ("bins", p.grid_size())
        if p.low == p.high:
            return ("const",)
        return ("cont",)

    def _bins(self, u: np.ndarray, n: int) -> np.ndarray:
        return np.clip(np.floor(u * n), 0, n - 1).astype(np.int64)

    def canonical(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points clipped to the cube, snapped to their grid values' codes, inactive
        dimensions at 0.5; and the (m, d) mask of active dimensions."""
        u = np.clip(np.asarray(points, dtype=float), 0.0, 1.0)
        m = u.shape[0]
        active = np.ones((m, self.d), dtype=bool)
        bin_index: dict[int, np.ndarray] = {}
        for i, kind in enumerate(self.kinds):
            for parent, allowed in self.conditions[i]:
                active[:, i] &= active[:, parent] & np.isin(bin_index[parent], allowed)
            col = u[:, i]
            if kind[0] == "cat":
                b = self._bins(col, kind[1])
                bin_index[i] = b
                col = (b + 0.5) / kind[1]
            elif kind[0] == "bins":
                col = (self._bins(col, kind[1]) + 0.5) / kind[1]
            elif kind[0] == "logint":
                lo, hi, low, high = kind[1:]
                v = np.clip(np.floor(np.exp(lo + col * (hi - lo)) + 0.5), low, high)
                col = np.clip((np.log(v) - lo) / (hi - lo), 0.0, 1.0)
            elif kind[0] == "const":
                col = np.full(m, 0.5)
            u[:, i] = np.where(active[:, i], col, 0.5)
        return u, active

    def features(self, u: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Canonical points as model inputs: categoricals one-hot (all zero when inactive)."""
        m = u.shape[0]
        f = np.zeros((m, self.n_cols))
        rows = np.arange(m)
        for i, kind in enumerate(self.kinds):
            c = self.col_start[i]
            if kind[0] == "cat":
                b = self._bins(u[:, i], kind[1])
                on = active[:, i]
                f[rows[on], c + b[on]] = 1.0
            else:
                f[:, c] = u[:, i]
        return f

    def encode(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(canonical points, features)."""
        u, active = self.canonical(points)
        return u, self.features(u, active)


# -- the Gaussian process ------------------------------------------------------------------------


def _matern52(r2: np.ndarray) -> np.ndarray:
    """(1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r) of squared distances, overwriting ``r2``."""
    s = np.sqrt(r2)
    s *= _SQRT5  # sqrt5 r
    e = np.exp(-s)
    r2 *= 5.0 / 3.0
    r2 += s
    r2 += 1.0
    r2 *= e
    return r2


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of a and b."""
    d = a @ b.T
    d *= -2.0
    d += (a * a).sum(1)[:, None]
    d += (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0, out=d)


def _cholesky(k: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor, adding jitter until it succeeds."""
    jitter = 0.0
    eye = np.eye(k.shape[0])
    for _ in range(8):
        chol, info = lapack.dpotrf(k + jitter * eye, lower=1, clean=1)
        if info == 0:
            return np.asarray(chol)
        jitter = 1e-6 if jitter == 0.0 else jitter * 10.0
    raise np.linalg.LinAlgError("kernel matrix is not positive definite")


class _Hyper:
    """Kernel hyperparameters, as logs: the lengthscales per group, then the kernel's
    variances (the GP's: the signal; a richer kernel has more), then the noise variance."""

    def __init__(self, theta: np.ndarray, n_groups: int) -> None:
        self.theta = np.asarray(theta, dtype=float)
        self.lengthscales = np.exp(self.theta[:n_groups])
        self.variances = np.exp(self.theta[n_groups:-1])
        self.signal = float(self.variances[0])
        self.noise = float(np.exp(self.theta[-1]))


class _Objective:
    """Negative log marginal likelihood plus negative log prior, with its gradient, of the
    hyperparameters given (n, n) per-group squared distances and standardised targets."""

    def __init__(
        self,
        sq: np.ndarray,
        y: np.ndarray,
        ls_prior_mean: float,
        known: np.ndarray | None = None,
    ) -> None:
        self.sq = sq  # (groups, n, n)
        self.flat = sq.reshape(sq.shape[0], -1)
        self.y = y
        # Each target's own known noise variance (heteroscedastic), on top of the fitted one.
        self.known = known
        self.n_groups = sq.shape[0]
        self.ls_prior_mean = ls_prior_mean

    def prior(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Negative log prior density of the log hyperparameters, and its gradient. Every
        variance of the kernel has the signal's prior."""
        g, v = self.n_groups, len(theta) - self.n_groups - 1
        mean = np.concatenate([np.full(g, self.ls_prior_mean), np.full(v, _SIGNAL_PRIOR[0])])
        sd = np.concatenate([np.full(g, _LS_PRIOR_SD), np.full(v, _SIGNAL_PRIOR[1])])
        z = (theta[:-1] - mean) / sd
        # Gamma on the noise variance v, as a density of log v: v^shape exp(-rate v).
        noise = math.exp(theta[-1])
        value = 0.5 * float((z * z).sum()) - _NOISE_SHAPE * theta[-1] + _NOISE_RATE * noise
        grad = np.concatenate([z / sd, [-_NOISE_SHAPE + _NOISE_RATE * noise]])
        return value, grad

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        g = self.n_groups
        h = _Hyper(theta, g)
        inv_ls2 = h.lengthscales**-2
        r2 = np.tensordot(inv_ls2, self.sq, axes=1)
        r = np.sqrt(r2)
        e = np.exp(-_SQRT5 * r)
        kf = h.signal * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r2) * e
        solved = self.solve(kf, h.noise)
        if solved is None:
            return self.singular(theta)
        nll, w = solved
        # dK/d(log l_g) = -2 dK/d(r^2) * sq_g / l_g^2, and -2 dK/d(r^2) is this:
        dk = h.signal * (5.0 / 3.0) * (1.0 + _SQRT5 * r) * e
        grad = np.empty_like(theta)
        grad[:g] = 0.5 * inv_ls2 * (self.flat @ (w * dk).ravel())
        grad[g] = 0.5 * float((w * kf).sum())
        grad[g + 1] = 0.5 * h.noise * float(np.trace(w))
        prior, prior_grad = self.prior(theta)
        return nll + prior, grad + prior_grad

    def solve(self, kf: np.ndarray, noise: float) -> tuple[float, np.ndarray] | None:
        """The negative log marginal likelihood of the targets under the noise-free kernel
        matrix ``kf`` plus noise, and W = K^-1 - alpha alpha^T (the gradient with respect to
        a log hyperparameter p is tr(W dK/dp) / 2); None when K is numerically singular."""
        n, y = len(self.y), self.y
        k = kf.copy()
        k[np.diag_indices(n)] += noise + _JITTER
        if self.known is not None:
            k[np.diag_indices(n)] += self.known
        chol, info = lapack.dpotrf(k, lower=1, clean=1)
        if info != 0:
            return None
        alpha, _ = lapack.dpotrs(chol, y, lower=1)
        nll = 0.5 * float(y @ alpha) + float(np.log(np.diag(chol)).sum())
        nll += 0.5 * n * math.log(2 * math.pi)
        kinv, _ = lapack.dpotri(chol, lower=1)
        kinv = np.tril(kinv) + np.tril(kinv, -1).T
        return nll, kinv - np.outer(alpha, alpha)

    @staticmethod
    def singular(theta: np.ndarray) -> tuple[float, np.ndarray]:
        """What a numerically singular kernel matrix returns: a large value, and a gradient
        that steers the optimiser towards more noise."""
        grad = np.zeros_like(theta)
        grad[-1] = -1.0
        return 1e10, grad


class _Posterior:
    """The GP posterior on standardised targets for fixed hyperparameters."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        hyper: _Hyper,
        ls_cols: np.ndarray,
        known: np.ndarray | None = None,
    ) -> None:
        self.hyper = hyper
        self.ls_cols = ls_cols
        self.xs = self.inputs(x)
        self.y = y
        k = self.kernel(self.xs, self.xs)
        k[np.diag_indices(len(y))] += hyper.noise + _JITTER
        if known is not None:
            k[np.diag_indices(len(y))] += known
        self.chol = _cholesky(k)
        self.alpha = lapack.dpotrs(self.chol, y, lower=1)[0]

    # The kernel, in three parts a subclass with another kernel replaces.
    def inputs(self, x: np.ndarray) -> np.ndarray:
        """Features as the kernel reads them: divided by their lengthscales."""
        return x / self.ls_cols

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The kernel matrix between two sets of :meth:`inputs`."""
        return self.hyper.signal * _matern52(_sqdist(a, b))

    def prior_variance(self, a: np.ndarray) -> np.ndarray | float:
        """The kernel's variance at each of these inputs (before any observation)."""
        return self.hyper.signal

    def _cross(self, xq: np.ndarray) -> np.ndarray:
        return self.kernel(self.inputs(xq), self.xs)

    def mean(self, xq: np.ndarray) -> np.ndarray:
        return self._cross(xq) @ self.alpha

    def predict(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance (of the latent function) at the rows of ``xq``."""
        q = self.inputs(xq)
        kq = self.kernel(q, self.xs)
        mean = kq @ self.alpha
        v = solve_triangular(self.chol, kq.T, lower=True, check_finite=False)
        var = self.prior_variance(q) - (v * v).sum(0)
        return mean, np.maximum(var, 1e-12 * self.hyper.signal)

    def extend(self, xr: np.ndarray, yr: np.ndarray, noise: float) -> None:
        """Add observations with this noise variance, updating the Cholesky factor by blocks
        (O(n^2 m), not O(n^3))."""
        kxr = self._cross(xr)  # (m, n)
        b = solve_triangular(self.chol, kxr.T, lower=True, check_finite=False)  # (n, m)
        xrs = self.inputs(xr)
        krr = self.kernel(xrs, xrs)
        krr[np.diag_indices(len(yr))] += noise + _JITTER
        c = _cholesky(krr - b.T @ b)
        n, m = len(self.y), len(yr)
        chol = np.zeros((n + m, n + m))
        chol[:n, :n] = self.chol
        chol[n:, :n] = b.T
        chol[n:, n:] = c
        self.chol = chol
        self.xs = np.vstack([self.xs, xrs])
        self.y = np.concatenate([self.y, yr])
        self.alpha = lapack.dpotrs(self.chol, self.y, lower=1)[0]


_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_HALF_LOG_PI_2 = 0.5 * math.log(math.pi / 2)
_INV_SQRT_EPS = 1.0 / math.sqrt(np.finfo(float).eps)


def _log1mexp(a: np.ndarray) -> np.ndarray:
    """log(1 - exp(a)) for a < 0, accurate at both ends."""
    return np.where(a > -math.log(2), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def _log_h(z: np.ndarray) -> np.ndarray:
    """log(z Phi(z) + phi(z)), finite for every finite z (Ament et al. 2023, eq. 9)."""
    out = np.empty_like(z)
    hi = z > -1.0
    zh = z[hi]
    out[hi] = np.log(zh * ndtr(zh) + np.exp(-0.5 * zh * zh - _LOG_SQRT_2PI))
    mid = (~hi) & (z > -_INV_SQRT_EPS)
    zm = z[mid]
    out[mid] = (
        -0.5 * zm * zm
        - _LOG_SQRT_2PI
        + _log1mexp(np.log(erfcx(-zm / math.sqrt(2)) * -zm) + _HALF_LOG_PI_2)
    )
    lo = z <= -_INV_SQRT_EPS
    zl = z[lo]
    out[lo] = -0.5 * zl * zl - _LOG_SQRT_2PI - 2.0 * np.log(-zl)
    return out


def log_expected_improvement(mean: np.ndarray, var: np.ndarray, best: float) -> np.ndarray:
    """log E[max(best - f, 0)] for f ~ N(mean, var), minimising."""
    sd = np.sqrt(var)
    return np.log(sd) + _log_h((best - mean) / sd)


def _resource_column(resources: np.ndarray) -> np.ndarray | None:
    """Each row's resource scaled to [0, 1] (log scale when all are positive); None when all
    rows share one resource."""
    lo, hi = float(resources.min()), float(resources.max())
    if hi <= lo:
        return None
    if lo > 0:
        return (np.log(resources) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (resources - lo) / (hi - lo)


class GPModel:
    """A fitted GP, queried at the highest resource: what :meth:`GPSampler.suggest`
    maximises over, and what the tests inspect. Points are rows of unit-cube coordinates."""

    def __init__(
        self,
        encoder: _Encoder,
        posterior: _Posterior,
        has_resource: bool,
        y_mean: float,
        y_sd: float,
    ) -> None:
        self.encoder = encoder
        self.posterior = posterior
        self.has_resource = has_resource
        self.y_mean, self.y_sd = y_mean, y_sd
        self.incumbent = 0.0  # standardised; set by GPSampler.fit
        self.best_points = np.zeros((0, encoder.d))
        # Running points, as features divided by the lengthscales.
        self.running = np.zeros((0, len(posterior.ls_cols)))

    def at_top(self, feat: np.ndarray) -> np.ndarray:
        """Features with the resource column (when there is one) at the highest resource."""
        if not self.has_resource:
            return feat
        return np.hstack([feat, np.ones((feat.shape[0], 1))])

    def predict(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance at the points, standardised."""
        return self.posterior.predict(self.at_top(self.encoder.encode(points)[1]))

    def predict_scores(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation at the points, in score units."""
        mean, var = self.predict(points)
        return self.y_mean + self.y_sd * mean, self.y_sd * np.sqrt(var)

    def log_ei(self, points: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """The points snapped to the grid, and log EI there, penalised near running points
        (-inf at a running point and where undefined)."""
        u, feat = self.encoder.encode(points)
        out = np.empty(len(u))
        for i in range(0, len(u), chunk):
            f = self.at_top(feat[i : i + chunk])
            mean, var = self.posterior.predict(f)
            out[i : i + chunk] = log_expected_improvement(mean, var, self.incumbent)
            if len(self.running):
                d2 = _sqdist(f / self.posterior.ls_cols, self.running)
                with np.errstate(divide="ignore"):
                    penalty = np.log(-np.expm1(-0.5 * d2 / _REPULSION**2))
                out[i : i + chunk] += penalty.sum(1)
        return u, np.nan_to_num(out, nan=-np.inf, posinf=-np.inf, neginf=-np.inf)

    def add_running(self, points: np.ndarray) -> None:
        """Kriging believer: observe the points at their posterior mean, without noise. The
        mean stays as it was, the variance there falls to about 0, the incumbent takes the
        believed values into account, and so EI at a running point is about 0. EI is also
        penalised within a few hundredths of a lengthscale of each (see _REPULSION)."""
        feat = self.at_top(self.encoder.encode(points)[1])
        self.running = np.vstack([self.running, feat / self.posterior.ls_cols])
        noise = _BELIEVER_NOISE * self.posterior.hyper.signal
        mean = self.posterior.mean(feat)
        self.posterior.extend(feat, mean, noise)
        # A believed result below the incumbent is the new incumbent, as an observed one would.
        self.incumbent = min(self.incumbent, float(mean.min()))


# -- the sampler ---------------------------------------------------------------------------------


def _reflect(points: np.ndarray) -> np.ndarray:
    """Points folded back into the unit cube by reflection at its faces (a step 0.1 past a
    face lands 0.1 inside it), so that no face gets the point mass clipping gives it; see the
    module docstring."""
    folded = np.mod(points, 2.0)
    return np.where(folded > 1.0, 2.0 - folded, folded)


class GPSampler(ModelSampler):
    kind = "gp"
    version = 1
    # Each suggestion refits the kernel from the previous fit and keeps the result in the
    # state, so a replica that loads the state suggests exactly what this one would.
    changes_on_suggest = True

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        super().__init__(space, seed, spec)
        self.n_startup = int(spec.option("n_startup", N_STARTUP))
        self.n_candidates = int(spec.option("n_candidates", N_CANDIDATES))
        self.max_history = int(spec.option("max_history", MAX_HISTORY))
        self.encoder = _Encoder(space)
        # The last fitted log hyperparameters, the next fit's starting point.
        self._theta: list[float] | None = None

    # -- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {} if self._theta is None else {"theta": list(self._theta)}

    def load_extra_state(self, data: Mapping[str, Any]) -> None:
        theta = data.get("theta")
        self._theta = [float(v) for v in theta] if isinstance(theta, list) else None

    # -- the fit set -------------------------------------------------------------------------
    def fit_trials(self) -> list[int]:
        """The numbers of the trials the GP is fitted on, in increasing order.

        All trials when there are at most ``max_history``; otherwise the best half as
        :meth:`History.ranked` orders them (further trained first, then by score) and, for the
        rest, the most recent (highest trial numbers) of the others. In trial-number order,
        whatever order the observations came in (a sampler restored from its state holds its
        trials in that order, and must fit exactly what the original fits)."""
        history = self.history
        if len(history) > self.max_history:
            half = self.max_history // 2
            best, rest = history.best_and_rest(half, self.max_history - half)
            return sorted(best + rest)
        return history.numbers()

    def fit_set(self) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """The rows the GP is fitted on, one per trial of :meth:`fit_trials` at the highest
        resource it reached: (numbers, unit points, resources, scores)."""
        history = self.history
        numbers = self.fit_trials()
        top = [max(history.trials[n][1]) for n in numbers]
        r = np.array(top, dtype=float)
        s = np.array([history.trials[n][1][t] for n, t in zip(numbers, top, strict=True)], float)
        return numbers, history.points(numbers), r, s

    @staticmethod
    def targets(scores: np.ndarray) -> tuple[np.ndarray, float, float] | None:
        """Standardised targets and the (mean, sd) that standardised them; None when no score
        is finite. NaN and +inf count as the worst finite score, -inf as the best; scores
        worse than Q3 + 3 IQR are clipped there."""
        finite = np.isfinite(scores)
        if not finite.any():
            return None
        lowest, highest = scores[finite].min(), scores[finite].max()
        y = np.where(finite, scores, np.where(scores == -np.inf, lowest, highest))
        q1, q3 = np.percentile(y, [25, 75])
        if q3 > q1:
            y = np.minimum(y, q3 + 3.0 * (q3 - q1))
        mean, sd = float(y.mean()), float(y.std())
        if not sd > 1e-12 * abs(mean):  # all equal, up to rounding: nothing to learn
            sd = 1.0
        return (y - mean) / sd, mean, sd

    def fit_targets(
        self,
        numbers: Sequence[int],
        resources: np.ndarray,
        scores: np.ndarray,
        prior_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float, float, np.ndarray | None] | None:
        """The rows' targets as the GP fits them, (y, mean, sd, known noise variances), or
        None when there are none or none is finite. The targets are :meth:`targets` less a
        pessimistic prior mean (see the module docstring): the GP models their departure from
        a high quantile of those of ``prior_rows`` (default: all rows), and the score offset
        moves with it."""
        if not len(scores):
            return None
        targets = self.targets(scores)
        if targets is None:
            return None
        y, y_mean, y_sd = targets
        prior = y if prior_rows is None else y[prior_rows]
        prior_mean = float(np.quantile(prior, _PRIOR_MEAN_QUANTILE))
        # A score that is a mean over folds or seeds carries its squared standard error:
        # heteroscedastic noise the GP adds to that point's own variance (standardised).
        noise = self.history.noise_of(numbers, resources.tolist())
        known = None if noise is None else noise / (y_sd * y_sd)
        return y - prior_mean, y_mean + prior_mean * y_sd, y_sd, known

    # -- fitting -----------------------------------------------------------------------------
    # The kernel's variances in the log hyperparameters, between the lengthscales and the
    # noise: the GP's signal. A subclass with a richer kernel has more (and its objective).
    n_variances = 1

    def objective(
        self, sq: np.ndarray, y: np.ndarray, ls_mean: float, known: np.ndarray | None, rows: Any
    ) -> _Objective:
        """The fit's objective on these rows' squared distances (``rows`` is the subclass's
        own per-row data, subset as the rows were)."""
        return _Objective(sq, y, ls_mean, known)

    @staticmethod
    def ls_prior_mean(n_groups: int) -> float:
        """The centre of the log-lengthscale prior for ``n_groups`` input groups: it grows with
        the square root of the dimension (Hvarfner et al.)."""
        return math.sqrt(2.0) + 0.5 * math.log(n_groups)

    def fit_hyper(
        self,
        f: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        known: np.ndarray | None = None,
        rows: np.ndarray | None = None,
    ) -> _Hyper:
        """Fit the kernel hyperparameters on at most HYPER_FIT_MAX rows: the best quarter by
        target and, of the rest, rows evenly spaced in trial-number order (a fixed subset, so a
        warm start from the previous fit converges in a few steps). Remembers the result as
        the next fit's starting point."""
        n = len(y)
        if n > HYPER_FIT_MAX:
            quarter = HYPER_FIT_MAX // 4
            order = np.argsort(y, kind="stable")
            rest = np.sort(order[quarter:])
            pick = np.linspace(0, len(rest) - 1, HYPER_FIT_MAX - quarter).round().astype(int)
            keep = np.sort(np.concatenate([order[:quarter], rest[pick]]))
            f, y = f[keep], y[keep]
            known = None if known is None else known[keep]
            rows = None if rows is None else rows[keep]
        n_groups = int(groups.max()) + 1
        sq = np.zeros((n_groups, len(y), len(y)))
        for c in range(f.shape[1]):
            diff = f[:, c][:, None] - f[:, c][None, :]
            sq[groups[c]] += diff * diff
        ls_mean = self.ls_prior_mean(n_groups)
        objective = self.objective(sq, y, ls_mean, known, rows)
        bounds = (
            [_LOG_LS_BOUNDS] * n_groups
            + [_LOG_SIGNAL_BOUNDS] * self.n_variances
            + [_LOG_NOISE_BOUNDS]
        )
        lower, upper = np.array(bounds).T
        warm = self._warm_start(n_groups, ls_mean)
        if warm is not None:
            x0 = warm
            maxiter = _WARM_ITERATIONS
        else:
            # Cold: the better of the prior's centre and short lengthscales.
            starts = [
                np.concatenate([np.full(n_groups, ls), np.zeros(self.n_variances), [_NOISE_START]])
                for ls in (ls_mean, math.log(0.2))
            ]
            x0 = min(starts, key=lambda t: objective(np.clip(t, lower, upper))[0])
            maxiter = _COLD_ITERATIONS
        x0 = np.clip(x0, lower, upper)
        options = {"maxiter": maxiter}
        res = minimize(objective, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        theta = np.asarray(res.x, dtype=float)
        if not np.all(np.isfinite(theta)):
            theta, value = x0, objective(x0)[0]
        else:
            value = float(res.fun)
        if math.exp(theta[-1]) > _NOISY:
            # The likelihood has a second basin (see the module docstring): start there too and
            # keep the better of the two.
            x1 = theta.copy()
            x1[-1] = _INTERPOLATING_NOISE
            x1[:n_groups] = np.minimum(x1[:n_groups], ls_mean - _INTERPOLATING_LS_SHIFT)
            x1 = np.clip(x1, lower, upper)
            res1 = minimize(
                objective, x1, jac=True, method="L-BFGS-B", bounds=bounds, options=options
            )
            if float(res1.fun) < value and np.all(np.isfinite(res1.x)):
                theta = np.asarray(res1.x, dtype=float)
        self._theta = [float(v) for v in theta]
        return _Hyper(theta, n_groups)

    def fit(self, running: Running | Sequence[Mapping[str, Any]] = ()) -> GPModel | None:
        """The GP fitted on the fit set, with ``running`` as kriging-believer
        pseudo-observations; None when no score is finite. Updates the warm start."""
        numbers, x, resources, scores = self.fit_set()
        fitted = self.fit_targets(numbers, resources, scores)
        if fitted is None:
            return None
        y, y_mean, y_sd, known = fitted
        enc = self.encoder
        _, f = enc.encode(x)
        groups = enc.groups
        res_col = _resource_column(resources)
        if res_col is not None:
            f = np.hstack([f, res_col[:, None]])
            groups = np.append(groups, enc.d)
        hyper = self.fit_hyper(f, y, groups, known)
        post = _Posterior(f, y, hyper, hyper.lengthscales[groups], known)
        model = GPModel(enc, post, res_col is not None, y_mean, y_sd)
        # Incumbent: the lowest posterior mean at a trained point, at the top resource.
        mean_train = post.mean(model.at_top(f[:, : enc.n_cols]))
        model.incumbent = float(mean_train.min())
        model.best_points = x[np.argsort(mean_train, kind="stable")[: min(8, len(y))]]
        busy = self.running(running)
        if len(busy):
            model.add_running(busy.points)
        return model

    def _warm_start(self, n_groups: int, ls_mean: float) -> np.ndarray | None:
        """The previous fit as a starting point for ``n_groups`` lengthscales, or None. The
        resource's lengthscale (group d, after the parameters') comes and goes as the fit
        set's resources do: it starts at the prior's centre, or is dropped."""
        if self._theta is None:
            return None
        theta = np.asarray(self._theta, dtype=float)
        d = self.encoder.d
        if len(theta) == n_groups + 2:
            return theta
        if n_groups == d + 1 and len(theta) == d + 2:
            return np.insert(theta, d, ls_mean)
        if n_groups == d and len(theta) == d + 3:
            return np.delete(theta, d)
        return None

    # -- suggesting --------------------------------------------------------------------------
    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        rng = self.rng(number)
        busy = self.running(running)
        model = None
        if len(self.history) >= self.n_startup:
            try:
                model = self.fit(busy)
            except np.linalg.LinAlgError:  # not even heavy jitter made the kernel usable
                model = None
        if model is None:
            return self.ensure_new(self.space.sample(rng), busy, rng)
        best = self._maximise(model, rng)
        return self.ensure_new(self.space.from_unit(best), busy, rng)

    def _perturb(
        self, centres: np.ndarray, scale: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Gaussian steps of the given scale per row on the ordered dimensions; each
        categorical redrawn with probability 1/d instead (its choices have no order, so a
        small step to the neighbouring bin would mean nothing)."""
        m, d = centres.shape
        cat = self.encoder.categorical
        out = centres + rng.normal(size=(m, d)) * scale[:, None] * ~cat
        if cat.any():
            flip = (rng.random((m, d)) < 1.0 / d) & cat
            out = np.where(flip, rng.random((m, d)), out)
        return _reflect(out)

    def _maximise(self, model: GPModel, rng: np.random.Generator) -> np.ndarray:
        """The best point found: uniform and near-incumbent candidates, then a shrinking
        perturbation search from the best few."""
        d = self.encoder.d
        n_local = self.n_candidates // 2
        n_uniform = max(1, self.n_candidates - n_local)
        cands = [rng.random((n_uniform, d))]
        if n_local:
            top = model.best_points
            centres = top[rng.integers(len(top), size=n_local)]
            scales = rng.choice(np.array([0.01, 0.03, 0.1, 0.3]), size=n_local)
            cands.append(self._perturb(centres, scales, rng))
        u, values = model.log_ei(np.vstack(cands))
        # Start from the best few distinct candidates.
        order = np.argsort(-values, kind="stable")
        starts: list[int] = []
        seen: set[bytes] = set()
        for i in order:
            key = u[i].tobytes()
            if key not in seen:
                seen.add(key)
                starts.append(int(i))
            if len(starts) == 4:
                break
        xs, vs = u[starts], values[starts]
        per = 32
        for step in (0.1, 0.04, 0.015, 0.005):
            centres = np.repeat(xs, per, axis=0)
            trial, tv = model.log_ei(self._perturb(centres, np.full(len(centres), step), rng))
            tv = tv.reshape(len(xs), per)
            j = tv.argmax(1)
            better = tv[np.arange(len(xs)), j] > vs
            rows = np.arange(len(xs)) * per + j
            xs = np.where(better[:, None], trial[rows], xs)
            vs = np.where(better, tv[np.arange(len(xs)), j], vs)
        return np.asarray(xs[int(np.argmax(vs))])
