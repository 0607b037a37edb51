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

- a(x) ~ GP(0, s_a k(x, x')): the value at the highest resource, what is optimised;
- b(x) ~ GP(0, s_b k(x, x')): how far this configuration's curve lies above (or below) its
  end at lower resources, which differs between configurations, so curves can cross;
- m ~ N(0, s_m): the part of that gap all configurations share (most curves fall as they
  train), a basis function with a Gaussian prior on its weight, integrated out (Rasmussen &
  Williams, "Gaussian Processes for Machine Learning", 2006, section 2.7);
- k is Matérn 5/2 with ARD lengthscales, the ``gp`` sampler's kernel and encoding, shared by
  a and b.

So cov(y(x, t), y(x', t')) = k(x, x') (s_a + s_b phi(t) phi(t')) + s_m phi(t) phi(t'). The
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
sampler's.
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
    """The ``gp`` sampler's objective for the curve kernel; log hyperparameters are the
    lengthscales, then s_a, s_b, s_m, then the noise."""

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
        h = _Hyper(theta, g)
        s_a, s_b, s_m = h.variances
        inv_ls2 = h.lengthscales**-2
        r2 = np.tensordot(inv_ls2, self.sq, axes=1)
        r = np.sqrt(r2)
        e = np.exp(-_SQRT5 * r)
        m = (1.0 + _SQRT5 * r + (5.0 / 3.0) * r2) * e
        weight = s_a + s_b * self.pp
        kf = m * weight + s_m * self.pp
        solved = self.solve(kf, h.noise)
        if solved is None:
            return self.singular(theta)
        nll, w = solved
        # -2 dK/d(r^2), as in the gp objective, with the curve's weight.
        dk = weight * (5.0 / 3.0) * (1.0 + _SQRT5 * r) * e
        wm = w * m
        grad = np.empty_like(theta)
        grad[:g] = 0.5 * inv_ls2 * (self.flat @ (w * dk).ravel())
        grad[g] = 0.5 * s_a * float(wm.sum())
        grad[g + 1] = 0.5 * s_b * float((wm * self.pp).sum())
        grad[g + 2] = 0.5 * s_m * float((w * self.pp).sum())
        grad[g + 3] = 0.5 * h.noise * float(np.trace(w))
        prior, prior_grad = self.prior(theta)
        return nll + prior, grad + prior_grad


class _CurvePosterior(_Posterior):
    """The posterior of the curve kernel. Features carry the scaled resource t as their last
    column (:meth:`GPModel.at_top` sets it to 1); the kernel's inputs are the other columns
    divided by their lengthscales, and phi(t) as the last column."""

    def inputs(self, x: np.ndarray) -> np.ndarray:
        return np.hstack([x[:, :-1] / self.ls_cols[:-1], basis(x[:, -1:])])

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        s_a, s_b, s_m = self.hyper.variances
        pp = np.outer(a[:, -1], b[:, -1])
        m = _matern52(_sqdist(a[:, :-1], b[:, :-1]))
        m *= s_a + s_b * pp
        m += s_m * pp
        return m

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
        hyper = self.fit_hyper(f, y, enc.groups, known, basis(t))
        ls_cols = np.append(hyper.lengthscales[enc.groups], 1.0)
        post = _CurvePosterior(np.hstack([f, t[:, None]]), y, hyper, ls_cols, known)
        model = GPModel(enc, post, True, y_mean, y_sd)
        # Incumbent: the lowest posterior mean of a(x) at a trial tried so far.
        mean_top = post.mean(model.at_top(f[latest]))
        model.incumbent = float(mean_top.min())
        model.best_points = x[latest][np.argsort(mean_top, kind="stable")[: min(8, len(latest))]]
        busy = self.running(running)
        if len(busy):
            model.add_running(busy.points)
        return model

    def _warm_start(self, n_groups: int, ls_mean: float) -> np.ndarray | None:
        """The previous fit, when it has this many lengthscales (the resource is not one)."""
        if self._theta is None or len(self._theta) != n_groups + self.n_variances + 1:
            return None
        return np.asarray(self._theta, dtype=float)
