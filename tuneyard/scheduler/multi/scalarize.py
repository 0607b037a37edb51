"""Scalarizations: one number per point from several minimised objectives.

For rules and models that need a single score (the median stopping rule, a Gaussian process):
the weighted sum, and the augmented Chebyshev function of ParEGO (Knowles 2006,
https://doi.org/10.1109/TEVC.2005.851274), which, unlike a weighted sum, can reach points in
the concave parts of a front; drawing fresh weights per suggestion spreads the search along it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from tuneyard.scheduler.multi.dominance import FloatArray, as_points

# ParEGO's augmentation: a small weighted sum that separates points the max term ties.
CHEBYSHEV_RHO = 0.05


def _weights(weights: ArrayLike, m: int) -> FloatArray:
    w = np.asarray(weights, dtype=float)
    if w.shape != (m,):
        raise ValueError(f"weights need one value per objective ({m})")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weights must be finite, >= 0 and not all 0")
    return w


def weighted_sum(points: ArrayLike, weights: ArrayLike) -> FloatArray:
    """``sum_j w_j f_j`` for each point, on the objectives as given."""
    p = as_points(points)
    return p @ _weights(weights, p.shape[1])


def normalise(
    points: ArrayLike, lower: ArrayLike | None = None, upper: ArrayLike | None = None
) -> FloatArray:
    """Objectives mapped to [0, 1] by ``lower``/``upper`` (default: the points' own range).

    An objective with no range maps to 0. Points outside given bounds land outside [0, 1].
    """
    p = as_points(points)
    m = p.shape[1]
    lo = p.min(axis=0) if lower is None else np.asarray(lower, dtype=float)
    hi = p.max(axis=0) if upper is None else np.asarray(upper, dtype=float)
    if len(p) == 0 and (lower is None or upper is None):
        return p
    if lo.shape != (m,) or hi.shape != (m,):
        raise ValueError(f"bounds need one value per objective ({m})")
    span = hi - lo
    scale = np.divide(1.0, span, out=np.zeros(m), where=span > 0)
    return (p - lo) * scale


def augmented_chebyshev(
    points: ArrayLike, weights: ArrayLike, rho: float = CHEBYSHEV_RHO
) -> FloatArray:
    """``max_j(w_j f_j) + rho * sum_j w_j f_j`` for each point (lower is better).

    Meant for normalised objectives (:func:`normalise`), as ParEGO applies it.
    """
    p = as_points(points)
    w = _weights(weights, p.shape[1])
    if not (np.isfinite(rho) and rho >= 0):
        raise ValueError("rho must be a number >= 0")
    weighted = p * w
    if len(p) == 0:
        return np.zeros(0)
    return weighted.max(axis=1) + rho * weighted.sum(axis=1)


def random_weights(rng: np.random.Generator, m: int) -> FloatArray:
    """Weights drawn uniformly from the simplex (they sum to 1).

    ParEGO draws from an evenly spaced grid on the simplex; a uniform draw covers the same
    directions without a grid size to choose, as later implementations do.
    """
    if m < 1:
        raise ValueError("need at least one objective")
    return rng.dirichlet(np.ones(m))


def parego(
    points: ArrayLike,
    rng: np.random.Generator,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    rho: float = CHEBYSHEV_RHO,
) -> tuple[FloatArray, FloatArray]:
    """One ParEGO scalarization: random weights, then the augmented Chebyshev value of each
    point normalised by ``lower``/``upper`` (default: the points' range). Returns both."""
    p = as_points(points)
    w = random_weights(rng, p.shape[1])
    return w, augmented_chebyshev(normalise(p, lower, upper), w, rho)
