"""PB2's explore step: choose the exploiting member's new parameters by GP-UCB.

Parker-Holder, Nguyen and Roberts, "Provably Efficient Online Hyperparameter Optimization with
Population-Based Bandits", NeurIPS 2020, https://arxiv.org/abs/2002.02518. PBT's random
perturbations need a large population to find good settings by luck; PB2 treats the choice as
a time-varying bandit. Each finished interval of any member is an observation: the parameters
it trained with, the time (the interval's end, in intervals), and the improvement it made (the
score at the interval's start minus the score at its end: scores are "lower is better", so a
positive improvement is progress). A Gaussian process models the improvement over
(parameters, time) and the new parameters maximise its upper confidence bound at the next
interval.

The model, as in the paper's section 4:

- **Inputs.** The mutable float and int parameters active in the configuration, each at its
  position in the space's unit cube (log scale and steps as the space encodes them; a
  parameter inactive in an observation sits at 0.5), and the time in intervals.
- **Kernel.** A squared-exponential kernel over the parameters times the time-varying factor
  ``(1 - omega) ** (|t - t'| / 2)`` of Bogunovic, Scarlett and Cevher ("Time-Varying Gaussian
  Process Bandit Optimization", AISTATS 2016): an observation from long ago says less about
  the improvement now, since what helps early in training (a large learning rate) may hurt
  late. Improvements are standardised, the signal variance is 1, and the lengthscale, the
  forgetting rate ``omega`` and the noise variance are chosen by the largest log marginal
  likelihood over a fixed grid (small, deterministic, and enough for a handful of inputs).
- **Acquisition.** ``mean + KAPPA * sd`` with a constant ``KAPPA``: the paper's theoretical
  schedule for beta grows with the number of intervals and is known to over-explore in
  practice. Maximised over random points of the cube and Gaussian steps around the donor's
  parameters, each snapped to the values the space decodes, so ints and stepped floats are
  scored where they will land.
- **Parallel members.** The other members' current parameters are running now and will report
  improvements the model does not have yet. As in GP-BUCB (Desautels, Krause and Burdick,
  JMLR 2014), which PB2 uses for its parallel agents, the posterior variance is conditioned on
  those points as well (the variance does not depend on the values to come), so UCB does not
  send every exploiting member to the same spot. The mean uses the observations only.
- **Fit set.** The most recent :data:`MAX_POINTS` observations by time: the kernel forgets
  old ones anyway, and the fit stays a few milliseconds.

Mutable categoricals are kept or, with ``resample_probability``, drawn afresh from the space
(PB2 models continuous parameters only). With fewer than :data:`MIN_POINTS` observations the
numeric parameters are drawn at random, as PB2 starts. Randomness only from the generator
passed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular

from tuneyard.scheduler.pbt.explore import Change, How, ParamMover, explore_pass
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import CategoricalParam, FloatParam
from tuneyard.spec.pbt import ExploreSpec

KAPPA = 2.0
MAX_POINTS = 200
MIN_POINTS = 3
N_UNIFORM = 1024
N_LOCAL = 256
_LOCAL_SD = 0.1
_LENGTHSCALES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
_OMEGAS = (0.0, 0.01, 0.03, 0.1, 0.3, 0.6)
_NOISES = (1e-3, 1e-2, 1e-1, 0.5)
_JITTER = 1e-9


@dataclass(frozen=True)
class Interval:
    """One finished interval of a member: the parameters it trained with, the resource at the
    interval's end, and its improvement (score at the start minus score at the end). After an
    exploit the start is the donor's score at the clone, since the member's curve continues
    the donor's."""

    member: int
    resource: float
    params: Mapping[str, Any]
    improvement: float


@dataclass(frozen=True)
class _Hyper:
    lengthscale: float
    omega: float
    noise: float


def _kernel(
    xa: np.ndarray, ta: np.ndarray, xb: np.ndarray, tb: np.ndarray, hyper: _Hyper
) -> np.ndarray:
    d2 = ((xa[:, None, :] - xb[None, :, :]) ** 2).sum(axis=-1)
    k = np.exp(-0.5 * d2 / hyper.lengthscale**2)
    if hyper.omega > 0:
        k = k * (1.0 - hyper.omega) ** (np.abs(ta[:, None] - tb[None, :]) / 2.0)
    return k


def _log_marginal(x: np.ndarray, t: np.ndarray, y: np.ndarray, hyper: _Hyper) -> float:
    k = _kernel(x, t, x, t, hyper) + (hyper.noise + _JITTER) * np.eye(len(y))
    try:
        chol = cholesky(k, lower=True)
    except np.linalg.LinAlgError:
        return -math.inf
    alpha = cho_solve((chol, True), y)
    return float(
        -0.5 * y @ alpha - np.log(np.diag(chol)).sum() - 0.5 * len(y) * math.log(2 * math.pi)
    )


def fit_hyper(x: np.ndarray, t: np.ndarray, y: np.ndarray) -> _Hyper:
    """The grid point with the largest log marginal likelihood (first one on ties)."""
    best, best_ll = _Hyper(_LENGTHSCALES[2], _OMEGAS[0], _NOISES[1]), -math.inf
    for ls in _LENGTHSCALES:
        for omega in _OMEGAS:
            for noise in _NOISES:
                h = _Hyper(ls, omega, noise)
                ll = _log_marginal(x, t, y, h)
                if ll > best_ll:
                    best, best_ll = h, ll
    return best


def ucb(
    x: np.ndarray,
    t: np.ndarray,
    y: np.ndarray,
    pending: np.ndarray,
    t_pending: float,
    candidates: np.ndarray,
    t_now: float,
    hyper: _Hyper,
) -> np.ndarray:
    """UCB of the standardised improvement at ``candidates`` (time ``t_now``): the mean from
    the observations, the variance also conditioned on the pending points (GP-BUCB)."""
    tc = np.full(len(candidates), t_now)
    k = _kernel(x, t, x, t, hyper) + (hyper.noise + _JITTER) * np.eye(len(y))
    chol = cholesky(k, lower=True)
    mean = _kernel(candidates, tc, x, t, hyper) @ cho_solve((chol, True), y)
    xa, ta = x, t
    if len(pending):
        xa = np.vstack([x, pending])
        ta = np.concatenate([t, np.full(len(pending), t_pending)])
    ka = _kernel(xa, ta, xa, ta, hyper) + (hyper.noise + _JITTER) * np.eye(len(xa))
    chol_a = cholesky(ka, lower=True)
    v = solve_triangular(chol_a, _kernel(xa, ta, candidates, tc, hyper), lower=True)
    var = np.maximum(1.0 - (v * v).sum(axis=0), 0.0)
    return mean + KAPPA * np.sqrt(var)


def _numeric(space: SearchSpace, config: Mapping[str, Any], mutable: frozenset[str]) -> list[str]:
    return [
        n
        for n in space.names
        if n in mutable and n in config and not isinstance(space.params[n], CategoricalParam)
    ]


def pb2_explore(
    space: SearchSpace,
    mover: ParamMover,
    params: Mapping[str, Any],
    mutable: frozenset[str],
    explore: ExploreSpec,
    intervals: Sequence[Interval],
    pending: Sequence[Mapping[str, Any]],
    resource: float,
    interval: float,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], list[Change]]:
    """PB2's explore of ``params`` (the donor's) for an interval starting at ``resource``.

    ``intervals`` are the population's finished intervals; ``pending`` the parameters of the
    other members training now. Returns the new configuration and what changed."""

    def move_categorical(name: str, old: Any) -> tuple[Any, How] | None:
        if (
            isinstance(space.params[name], CategoricalParam)
            and rng.random() < explore.resample_probability
        ):
            return mover.sample(name, rng), "resampled"
        return None

    config, changes = explore_pass(space, mover, params, mutable, move_categorical, rng)
    names = _numeric(space, config, mutable)
    if not names:
        return config, changes
    data = [iv for iv in intervals if math.isfinite(iv.improvement)]
    if len(data) < MIN_POINTS:
        chosen = {n: mover.sample(n, rng) for n in names}
        how: How = "resampled"
    else:
        data = sorted(data, key=lambda iv: (iv.resource, iv.member))[-MAX_POINTS:]

        def encode(p: Mapping[str, Any]) -> list[float]:
            return [mover.encode(n, p[n]) if n in p else 0.5 for n in names]

        x = np.array([encode(iv.params) for iv in data])
        t = np.array([iv.resource / interval for iv in data])
        y = np.array([iv.improvement for iv in data])
        sd = float(y.std())
        y = (y - y.mean()) / (sd if sd > 0 else 1.0)
        hyper = fit_hyper(x, t, y)
        centre = np.array(encode(config))
        candidates = np.vstack(
            [
                rng.random((N_UNIFORM, len(names))),
                np.clip(centre + _LOCAL_SD * rng.standard_normal((N_LOCAL, len(names))), 0, 1),
                centre[None, :],
            ]
        )
        # Score each candidate where the space will put it (ints, steps, log scales).
        snapped = candidates.copy()
        for j, n in enumerate(names):
            p = space.params[n]
            if isinstance(p, FloatParam) and p.step is None:
                continue  # continuous: every point of [0, 1] decodes to itself
            snapped[:, j] = [mover.encode(n, mover.decode(n, float(u))) for u in candidates[:, j]]
        pend = np.array([encode(p) for p in pending]).reshape(len(pending), len(names))
        t_now = (resource + interval) / interval
        scores = ucb(x, t, y, pend, t_now, snapped, t_now, hyper)
        best = snapped[int(np.argmax(scores))]
        chosen = {n: mover.decode(n, float(u)) for n, u in zip(names, best, strict=True)}
        how = "chosen"
    out = dict(config)
    for n in names:
        old, new = config[n], chosen[n]
        if type(old) is not type(new) or old != new:
            changes.append(Change(n, old, new, how))
        out[n] = new
    return space.validate(out), changes
