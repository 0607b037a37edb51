"""Pareto dominance, constraint-dominance and non-dominated sorting.

Objective vectors are minimised: callers negate maximised objectives, as the single-objective
code signs scores. ``a`` dominates ``b`` when it is no worse in every objective and better in
one. Constraints come as violations ``>= 0`` (0: satisfied), summed per point; constraint-
dominance is that of NSGA-II (Deb et al. 2002, https://doi.org/10.1109/4235.996017, section
V): a feasible point dominates an infeasible one, of two infeasible points the one with the
smaller total violation dominates, and between feasible points Pareto dominance decides.

Sorting into fronts under that relation puts the feasible points first, in their Pareto fronts,
then one front per distinct total violation, smallest first. Identical points never dominate
each other, so duplicates always share a front.

Cost: the feasible points are reduced to their distinct rows, then sorted by a sweep in
O(N log N) for one or two objectives, and by Deb's fast non-dominated sort, O(M N^2) time and
O(N^2) memory (a boolean dominance matrix), for three or more. The first front alone
(:func:`pareto_mask`) of more than ``MATRIX_LIMIT`` points takes one pass that holds only the
front in memory.
"""

from __future__ import annotations

import bisect

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]


def as_points(points: ArrayLike) -> FloatArray:
    """Objective vectors as a float array of shape (points, objectives), checked finite."""
    a = np.asarray(points, dtype=float)
    if a.ndim != 2:
        raise ValueError("points must be 2-D: one row per point, one column per objective")
    if a.shape[0] and a.shape[1] == 0:
        raise ValueError("points need at least one objective")
    if not np.all(np.isfinite(a)):
        raise ValueError("objective values must be finite (no NaN or infinity)")
    return a


def total_violations(violations: ArrayLike | None, n: int) -> FloatArray:
    """Total constraint violation per point: shape (n,) as given, or (n, constraints) summed.

    ``None`` means every point is feasible. Violations must be ``>= 0``; infinity is allowed
    (a metric that came back infinite), NaN is not.
    """
    if violations is None:
        return np.zeros(n)
    v = np.asarray(violations, dtype=float)
    if v.ndim == 2:
        if v.shape[0] != n:
            raise ValueError(f"violations has {v.shape[0]} rows for {n} points")
        v = v.sum(axis=1) if v.shape[1] else np.zeros(n)
    elif v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"violations must have shape ({n},) or ({n}, constraints)")
    if np.any(np.isnan(v)) or np.any(v < 0):
        raise ValueError("constraint violations must be >= 0 (0 = satisfied), never NaN")
    return v


def dominates(a: ArrayLike, b: ArrayLike) -> bool:
    """Pareto dominance of minimised objective vectors."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(x <= y) and np.any(x < y))


def constraint_dominates(
    a: ArrayLike, b: ArrayLike, violation_a: float = 0.0, violation_b: float = 0.0
) -> bool:
    """Deb's constraint-dominance of ``a`` over ``b`` given their total violations."""
    if violation_a == 0 and violation_b == 0:
        return dominates(a, b)
    if violation_a == 0:
        return True
    if violation_b == 0:
        return False
    return violation_a < violation_b


def unique_rows(p: FloatArray) -> tuple[FloatArray, IntArray]:
    """Distinct rows in lexicographic order (first column first), and each point's row among
    them. ``np.unique(axis=0)`` gives the same, several times slower on small arrays."""
    n = len(p)
    if n == 0:
        return p, np.empty(0, dtype=np.intp)
    order = np.lexsort(p.T[::-1])
    s = p[order]
    new = np.ones(n, dtype=bool)
    new[1:] = np.any(s[1:] != s[:-1], axis=1)
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return s[new], inverse


def _sweep_2d(u: FloatArray) -> IntArray:
    """Fronts of distinct 2-D points sorted lexicographically, in O(N log N).

    ``tails[k]`` is the smallest second objective seen so far in front k; it never decreases
    with k. An earlier point (no worse in the first objective) dominates the current one exactly
    when its second objective is no larger, and the front's member with the smallest one is the
    one to check, so the current point goes to the first front whose tail exceeds its value.
    """
    fronts = np.empty(len(u), dtype=np.intp)
    tails: list[float] = []
    for i, y in enumerate(u[:, 1].tolist()):
        k = bisect.bisect_right(tails, y)
        if k == len(tails):
            tails.append(y)
        else:
            tails[k] = y
        fronts[i] = k
    return fronts


def _dominance_matrix(u: FloatArray) -> NDArray[np.bool_]:
    """``d[i, j]``: distinct point i dominates distinct point j (no worse everywhere, not equal)."""
    n, m = u.shape
    d = np.ones((n, n), dtype=bool)
    for k in range(m):
        d &= u[:, None, k] <= u[None, :, k]
    np.fill_diagonal(d, False)
    return d


def _peel(u: FloatArray) -> IntArray:
    """Deb's fast non-dominated sort of distinct points: count dominators, peel fronts."""
    d = _dominance_matrix(u)
    count = d.sum(axis=0)
    fronts = np.empty(len(u), dtype=np.intp)
    current = np.flatnonzero(count == 0)
    front = 0
    while current.size:
        fronts[current] = front
        count -= d[current].sum(axis=0)
        count[current] = -1
        current = np.flatnonzero(count == 0)
        front += 1
    return fronts


def pareto_fronts(points: FloatArray) -> IntArray:
    """Front number (0 = non-dominated) of each point, by Pareto dominance alone."""
    if len(points) == 0:
        return np.empty(0, dtype=np.intp)
    u, inverse = unique_rows(points)
    m = u.shape[1]
    if m == 1:
        distinct = np.arange(len(u), dtype=np.intp)  # each distinct value is its own front
    elif m == 2:
        distinct = _sweep_2d(u)
    else:
        distinct = _peel(u)
    return distinct[inverse]


def front_numbers(points: ArrayLike, violations: ArrayLike | None = None) -> IntArray:
    """Front number of each point under constraint-dominance, 0 for the best front."""
    p = as_points(points)
    v = total_violations(violations, len(p))
    fronts = np.empty(len(p), dtype=np.intp)
    feasible = np.flatnonzero(v == 0)
    fronts[feasible] = pareto_fronts(p[feasible])
    first_infeasible = int(fronts[feasible].max()) + 1 if feasible.size else 0
    infeasible = np.flatnonzero(v > 0)
    if infeasible.size:
        _, group = np.unique(v[infeasible], return_inverse=True)
        fronts[infeasible] = first_infeasible + np.asarray(group).reshape(-1)
    return fronts


def non_dominated_fronts(points: ArrayLike, violations: ArrayLike | None = None) -> list[list[int]]:
    """The fronts as lists of point indexes (ascending), best front first."""
    fronts = front_numbers(points, violations)
    if fronts.size == 0:
        return []
    out: list[list[int]] = [[] for _ in range(int(fronts.max()) + 1)]
    for i, f in enumerate(fronts.tolist()):
        out[f].append(i)
    return out


# Above this many distinct points, the first front is found by a pass that keeps only the
# front so far in memory rather than an N x N dominance matrix (a study of 10,000 trials would
# need 100 MB for it).
MATRIX_LIMIT = 1024


def _first_front(u: FloatArray) -> NDArray[np.bool_]:
    """Which distinct, lexicographically sorted points no other point dominates.

    A dominating point is lexicographically smaller, so it comes earlier: one pass that checks
    each point against the front found so far suffices, O(N F M) for a front of F points.
    """
    n, m = u.shape
    if m == 1:
        return np.arange(n) == 0
    if m == 2:
        # A point survives when its second objective beats every point before it.
        best_before = np.minimum.accumulate(np.concatenate(([np.inf], u[:-1, 1])))
        return np.asarray(u[:, 1] < best_before)
    if n <= MATRIX_LIMIT:
        return np.asarray(~_dominance_matrix(u).any(axis=0))
    keep = np.zeros(n, dtype=bool)
    front = np.empty((0, m))
    for i in range(n):
        if not np.any(np.all(front <= u[i], axis=1)):
            keep[i] = True
            front = np.vstack([front, u[i]])
    return keep


def pareto_mask(points: ArrayLike, violations: ArrayLike | None = None) -> NDArray[np.bool_]:
    """The feasible non-dominated points: what a study's Pareto front shows.

    Empty when no point is feasible (the least-violating infeasible points are not a front of
    trade-offs anyone asked for). Repeated points are all kept.
    """
    p = as_points(points)
    v = total_violations(violations, len(p))
    mask = np.zeros(len(p), dtype=bool)
    feasible = np.flatnonzero(v == 0)
    if feasible.size:
        u, inverse = unique_rows(p[feasible])
        mask[feasible] = _first_front(u)[inverse]
    return mask


def non_dominated_rows(points: FloatArray) -> FloatArray:
    """The distinct non-dominated rows of ``points`` (no checks: internal, for hypervolume)."""
    if len(points) <= 1:
        return points
    u, _ = unique_rows(points)
    return u[_first_front(u)]
