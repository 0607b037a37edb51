"""A multi-fidelity Gaussian process: a trial's value as a function of its configuration and of
its resource, fitted on every rung result of every trial.

The ``gp`` sampler fits one row per trial, its score at the highest resource it reached, with
the resource as one more input. Under ASHA or Hyperband most trials stop at the first rung, so
what a trial showed at 1 and 3 epochs before it went on to 9 is thrown away, and the model
learns how low rungs relate to the top one only from trials that stopped at different rungs,
which are different configurations. This sampler keeps every rung result: a trial that reached
27 epochs is four rows of one curve, and the model learns from them how far each rung's
ranking is from the top's, per region of the space.

**The model.** With t the resource scaled to [0, 1] on a log scale over the resources seen
(1 = the highest), and phi(t) = (1 - t)^2, a trial's score at t is

    y(x, t) = a(x) + phi(t) (m + b(x)) + noise

- a(x) ~ GP(0, s_a k_a(x, x')): the value at the highest resource, what is optimised;
- b(x) ~ GP(0, s_b k_b(x, x')): how far this configuration's curve lies above (or below) its
  end at lower resources, which differs between configurations, so curves can cross;
- m ~ N(0, s_m): the part of that gap all configurations share (most curves fall as they
  train), a basis function with a Gaussian prior on its weight, integrated out (Rasmussen &
  Williams, "Gaussian Processes for Machine Learning", 2006, section 2.7);
- k_a and k_b are Matérn 5/2 with ARD lengthscales on the ``gp`` sampler's encoding, each
  with lengthscales of its own: how fast a configuration learns often depends on other
  parameters than where it ends (a learning rate sets the speed; the architecture, the end).
  With one set of lengthscales for both, the benchmark's results were no better on the
  held-in half (13 of 24 objective x method x worker cells went to the separate sets, 5 seeds)
  and worse on the held-out half (18 of 24 went to the separate sets), bench/quality/README.md.

So cov(y(x, t), y(x', t')) = s_a k_a(x, x') + phi(t) phi(t') (s_b k_b(x, x') + s_m). The
basis (1 - t)^2 is that of FABOLAS (Klein, Falkner, Bartels, Hennig & Hutter, "Fast Bayesian
Optimization of Machine Learning Hyperparameters on Large Datasets", AISTATS 2017,
https://arxiv.org/abs/1605.07079), which models the loss over the training-set fraction the
same way; here the fidelity is the rung's resource, as in the GP searcher of MOBSTER (Klein,
Tiao, Lienart, Archambeau & Seeger, "Model-based Asynchronous Hyperparameter and Neural
Architecture Search", 2020, https://arxiv.org/abs/2003.10865), which fits every rung result
of ASHA's trials. At t = 1 the gap vanishes: a rung result at 1 epoch tells the model about
a(x) through its correlation with the same trial's and its neighbours' later results, and the
hyperparameters (s_b, s_m against s_a) say how much a low rung is worth.

**Suggestions** are made at the top resource: expected improvement of a(x) over the lowest
posterior mean of a at a trial tried so far, maximised as the ``gp`` sampler does (candidates,
then a shrinking perturbation search, steps reflected at the faces). Running trials are
kriging believers at the top resource with the ``gp`` sampler's repulsion. Fitting (L-BFGS-B
on the log marginal likelihood with the ``gp`` sampler's priors, every variance with the
signal's prior; a warm start from the last fit, kept in the state), clipping of outlying
scores, the pessimistic prior mean (here the 0.9 quantile of each trial's latest result) and
``max_history`` (counted in trials: all rung results of each trial kept) are the ``gp``
sampler's. With every result at one resource (a study without rungs) the gap terms vanish and
it is the ``gp`` sampler at that resource.

**What it does not decide: promotions.** The model chooses new configurations; which paused
trial goes on is still the scheduler's rank rule within a rung. Ranking a rung by the model's
prediction at the top instead would score every entry of the rung at each decision, a pass
over the rung that the report and next paths do not make (their cost must not grow with the
study), and a fitted model that they do not hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuneyard.scheduler.samplers.base import Running
from tuneyard.scheduler.samplers.gp import (
    _SQRT5,
    GPModel,
    GPSampler,
    _Hyper,
    _matern52,
    _Objective,
    _Posterior,
    _resource_column,
    _sqdist,
)


def basis(t: np.ndarray) -> np.ndarray:
    """phi(t) = (1 - t)^2: the weight of a curve's gap at scaled resource t (0 at the top)."""
    return (1.0 - t) ** 2


class _CurveObjective(_Objective):
    """The ``gp`` sampler's objective for the curve kernel. The squared distances come twice,
    per group of a(x)'s inputs and then per group of b(x)'s (the same distances, their own
    lengthscales); the log hyperparameters are a's lengthscales, b's, then s_a, s_b, s_m and
    the noise."""

    def __init__(
        self,
        sq: np.ndarray,
        y: np.ndarray,
        ls_prior_mean: float,
        known: np.ndarray | None,
        phi: np.ndarray,
    ) -> None:
        super().__init__(sq, y, ls_prior_mean, known)
        self.pp = np.outer(phi, phi)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        g = self.n_groups
        half = g // 2
        h = _Hyper(theta, g)
        s_a, s_b, s_m = h.variances
        inv_ls2 = h.lengthscales**-2
        m, dm = [], []
        for part in (slice(0, half), slice(half, g)):
            r2 = np.tensordot(inv_ls2[part], self.sq[part], axes=1)
            r = np.sqrt(r2)
            e = np.exp(-_SQRT5 * r)
            m.append((1.0 + _SQRT5 * r + (5.0 / 3.0) * r2) * e)
            # -2 dM/d(r^2), as in the gp objective.
            dm.append((5.0 / 3.0) * (1.0 + _SQRT5 * r) * e)
        gap = self.pp * m[1]
        kf = s_a * m[0] + s_b * gap + s_m * self.pp
        solved = self.solve(kf, h.noise)
        if solved is None:
            return self.singular(theta)
        nll, w = solved
        grad = np.empty_like(theta)
        grad[:half] = 0.5 * inv_ls2[:half] * (self.flat[:half] @ (w * (s_a * dm[0])).ravel())
        grad[half:g] = (
            0.5 * inv_ls2[half:] * (self.flat[half:] @ (w * (s_b * self.pp * dm[1])).ravel())
        )
        grad[g] = 0.5 * s_a * float((w * m[0]).sum())
        grad[g + 1] = 0.5 * s_b * float((w * gap).sum())
        grad[g + 2] = 0.5 * s_m * float((w * self.pp).sum())
        grad[g + 3] = 0.5 * h.noise * float(np.trace(w))
        prior, prior_grad = self.prior(theta)
        return nll + prior, grad + prior_grad


class _CurvePosterior(_Posterior):
    """The posterior of the curve kernel. Features carry the scaled resource t as their last
    column (:meth:`GPModel.at_top` sets it to 1). The kernel's inputs are the other columns
    divided by a(x)'s lengthscales (``ls_cols``, which the repulsion from running trials
    reads too), the same divided by b(x)'s, and phi(t) last."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        hyper: _Hyper,
        ls_cols: np.ndarray,
        gap_ls_cols: np.ndarray,
        known: np.ndarray | None = None,
    ) -> None:
        self.gap_ls_cols = gap_ls_cols
        self.n_cols = len(gap_ls_cols)
        super().__init__(x, y, hyper, ls_cols, known)

    def inputs(self, x: np.ndarray) -> np.ndarray:
        f = x[:, :-1]
        return np.hstack([f / self.ls_cols[:-1], f / self.gap_ls_cols, basis(x[:, -1:])])

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        s_a, s_b, s_m = self.hyper.variances
        c = self.n_cols
        pp = np.outer(a[:, -1], b[:, -1])
        k = _matern52(_sqdist(a[:, c : 2 * c], b[:, c : 2 * c]))
        k *= s_b
        k += s_m
        k *= pp
        k += s_a * _matern52(_sqdist(a[:, :c], b[:, :c]))
        return k

    def prior_variance(self, a: np.ndarray) -> np.ndarray | float:
        s_a, s_b, s_m = self.hyper.variances
        return s_a + (s_b + s_m) * a[:, -1] ** 2


class MultiFidelityGPSampler(GPSampler):
    """The curve model over every rung result; see the module docstring."""

    kind = "mfgp"
    version = 1
    n_variances = 3  # s_a, s_b, s_m

    def objective(
        self, sq: np.ndarray, y: np.ndarray, ls_mean: float, known: np.ndarray | None, rows: Any
    ) -> _Objective:
        return _CurveObjective(sq, y, ls_mean, known, rows)

    def fit_set(self) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
        """Every rung result of the trials of :meth:`fit_trials`, a row each, a trial's rows
        in increasing resource: (trial number per row, unit points, resources, scores)."""
        history = self.history
        numbers: list[int] = []
        resources: list[float] = []
        scores: list[float] = []
        for n in self.fit_trials():
            observed = history.trials[n][1]
            for r in sorted(observed):
                numbers.append(n)
                resources.append(r)
                scores.append(observed[r])
        return (
            numbers,
            history.points(numbers),
            np.array(resources, dtype=float),
            np.array(scores, dtype=float),
        )

    def fit(self, running: Running | Sequence[Mapping[str, Any]] = ()) -> GPModel | None:
        """The curve GP fitted on every rung result, with ``running`` as kriging believers at
        the top resource; None when no score is finite. Updates the warm start."""
        numbers, x, resources, scores = self.fit_set()
        rows = np.asarray(numbers)
        # Each trial's latest row (its rows are in increasing resource).
        latest = np.flatnonzero(np.append(rows[1:] != rows[:-1], True))
        fitted = self.fit_targets(numbers, resources, scores, latest)
        if fitted is None:
            return None
        y, y_mean, y_sd, known = fitted
        enc = self.encoder
        _, f = enc.encode(x)
        t = _resource_column(resources)
        if t is None:  # one resource so far: every row is at the top
            t = np.ones(len(y))
        # a(x) and b(x) have lengthscales of their own: the features twice, b's groups after
        # a's.
        d = enc.d
        groups = np.concatenate([enc.groups, enc.groups + d])
        hyper = self.fit_hyper(np.hstack([f, f]), y, groups, known, basis(t))
        ls_cols = np.append(hyper.lengthscales[enc.groups], 1.0)
        gap_ls_cols = hyper.lengthscales[enc.groups + d]
        post = _CurvePosterior(np.hstack([f, t[:, None]]), y, hyper, ls_cols, gap_ls_cols, known)
        model = GPModel(enc, post, True, y_mean, y_sd)
        # Incumbent: the lowest posterior mean of a(x) at a trial tried so far.
        mean_top = post.mean(model.at_top(f[latest]))
        model.incumbent = float(mean_top.min())
        model.best_points = x[latest][np.argsort(mean_top, kind="stable")[: min(8, len(latest))]]
        busy = self.running(running)
        if len(busy):
            model.add_running(busy.points)
        return model

    @staticmethod
    def ls_prior_mean(n_groups: int) -> float:
        """The gp sampler's prior, for the dimension of the space: a's and b's lengthscales
        are ``n_groups`` together."""
        return GPSampler.ls_prior_mean(n_groups // 2)

    def _warm_start(self, n_groups: int, ls_mean: float) -> np.ndarray | None:
        """The previous fit, when it has this many lengthscales (the resource is not one)."""
        if self._theta is None or len(self._theta) != n_groups + self.n_variances + 1:
            return None
        return np.asarray(self._theta, dtype=float)
