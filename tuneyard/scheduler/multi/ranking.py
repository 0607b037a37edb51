"""A total order of a rung's entries by several objectives, as MO-ASHA ranks a rung.

Multi-objective ASHA (Schmucker et al. 2021, https://arxiv.org/abs/2106.12639) replaces the
sort by score with non-dominated sorting, then orders the points inside each front by one of
two tie-breaks. The order of a rung is therefore (front, tie-break rank, stable key), the key
being the entry's arrival sequence, exactly as the single-objective board breaks equal scores.

``nsga2``: crowding distance (Deb et al. 2002, https://doi.org/10.1109/4235.996017), largest
first: points at the ends of a front and in its sparse parts go before points in crowded parts.

``epsnet``: the paper's epsilon-net order, Clarkson's greedy farthest-point construction:
start from the point that is best in the first objective, then keep picking the point whose
distance to the nearest already-picked point is largest, so every prefix of the order covers the
front as evenly as it can. Distances are measured on objectives scaled to their ranks over the
whole rung (see :func:`rank_scale`).

With one objective and no constraints, each distinct score is its own front, both tie-breaks
leave identical points to the key, and the order is the sort by (score, sequence) of the
single-objective board; tests/unit/test_pareto.py proves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from tuneyard.scheduler.multi.dominance import (
    FloatArray,
    IntArray,
    as_points,
    front_numbers,
    total_violations,
    unique_rows,
)

Method = Literal["nsga2", "epsnet"]
METHODS: tuple[Method, ...] = ("nsga2", "epsnet")


def crowding_distance(points: ArrayLike) -> FloatArray:
    """NSGA-II crowding distance of each point of one front.

    Per objective, a point's share is the gap between the nearest *distinct* values below and
    above its own, divided by the objective's range in the front; points holding the smallest or
    the largest value get infinity. An objective whose range is zero contributes 0 to everyone
    (so a front of identical points, or of one point, gets 0 throughout). The shares are summed.

    Measuring gaps between distinct values, rather than between neighbours in a sorted list as
    Deb's listing does, gives identical points identical distances whatever their input order:
    the ranking then depends on the set of points and the keys, never on how ties happened to
    be sorted.
    """
    p = as_points(points)
    return crowding_by_front(p, np.zeros(len(p), dtype=np.intp))


def crowding_by_front(points: FloatArray, fronts: IntArray) -> FloatArray:
    """:func:`crowding_distance` of every point within its own front, for all fronts at once.

    The same rule, vectorised: per objective, the distinct (front, value) pairs are sorted,
    each point finds its pair, and its neighbours are the pairs before and after it when they
    belong to the same front; a pair at either end of its front gets infinity. A rung of
    infeasible points has a front per distinct violation, so a loop over fronts would cost a
    Python step per front."""
    n, m = points.shape
    distance = np.zeros(n)
    if n == 0:
        return distance
    for k in range(m):
        # The distinct (front, value) pairs in order, and each point's pair.
        order = np.lexsort((points[:, k], fronts))
        f_sorted, v_sorted = fronts[order], points[order, k]
        new = np.ones(n, dtype=bool)
        new[1:] = (f_sorted[1:] != f_sorted[:-1]) | (v_sorted[1:] != v_sorted[:-1])
        at = np.empty(n, dtype=np.intp)
        at[order] = np.cumsum(new) - 1
        front_of, value = f_sorted[new], v_sorted[new]
        distinct = len(value)
        starts = np.flatnonzero(np.r_[True, front_of[1:] != front_of[:-1]])
        ends = np.r_[starts[1:], distinct] - 1
        span = np.repeat(value[ends] - value[starts], ends - starts + 1)
        first = np.zeros(distinct, dtype=bool)
        last = np.zeros(distinct, dtype=bool)
        first[starts], last[ends] = True, True
        gap = np.zeros(distinct)
        inner = ~(first | last)
        idx = np.flatnonzero(inner)
        gap[idx] = (value[idx + 1] - value[idx - 1]) / span[idx]
        # An objective with one value in a front adds nothing there.
        gap[(first | last) & (span > 0)] = np.inf
        distance += gap[at]
    return distance


def _tie_ranks(keys: NDArray[np.float64]) -> IntArray:
    """Rank of each point by (key, index): the stable order that breaks every remaining tie."""
    order = np.lexsort((np.arange(len(keys)), keys))
    ranks = np.empty(len(keys), dtype=np.intp)
    ranks[order] = np.arange(len(keys))
    return ranks


def _keys(keys: Sequence[float] | ArrayLike | None, n: int) -> NDArray[np.float64]:
    if keys is None:
        return np.arange(n, dtype=float)
    k = np.asarray(keys, dtype=float)
    if k.shape != (n,):
        raise ValueError(f"keys must have one value per point ({n})")
    if np.any(np.isnan(k)):
        raise ValueError("keys must not be NaN")
    return k


def rank_scale(points: FloatArray) -> FloatArray:
    """Each objective replaced by its normalised rank among the points, in [0, 1].

    Equal values share their average rank; an objective with one value maps to 0. Ranks rather
    than min-max scaling keep one outlier (a run that took ten times longer) from squashing
    every other point together, and make the epsilon-net order, like non-dominated sorting
    itself, unchanged by any increasing transformation of an objective (seconds or log-seconds
    rank alike). Published epsilon-net sorts, GluonTS's tsbench for one, rank-scale too.
    """
    return _doubled_ranks(points) / (2.0 * max(len(points) - 1, 1))


def _doubled_ranks(points: FloatArray) -> FloatArray:
    """Twice the 0-based average ranks per objective: integers, so distances compare exactly."""
    if len(points) == 0:
        return np.zeros_like(points)
    return 2.0 * rankdata(points, axis=0, method="average") - 2.0


def _farthest_first(z: FloatArray, start: int, tie: IntArray) -> list[int]:
    """Greedy farthest-point order of the rows of ``z`` from ``start``; ties to lower ``tie``.

    ``z`` holds integers (doubled ranks), so squared distances are exact and points at equal
    distances really tie, whatever the rounding of a square root would say.
    """
    n = len(z)
    picked = [start]
    nearest = ((z - z[start]) ** 2).sum(axis=1)
    nearest[start] = -np.inf
    for _ in range(n - 1):
        far = np.flatnonzero(nearest == nearest.max())
        pick = int(far[np.argmin(tie[far])])
        picked.append(pick)
        nearest = np.minimum(nearest, ((z - z[pick]) ** 2).sum(axis=1))
        nearest[pick] = -np.inf
    return picked


def _epsnet_start(points: FloatArray, tie: IntArray) -> int:
    """The best point of the first objective; ties go to the next objectives, then the key."""
    m = points.shape[1]
    return int(np.lexsort((tie, *(points[:, j] for j in reversed(range(m)))))[0])


def epsnet_order(points: ArrayLike, keys: Sequence[float] | ArrayLike | None = None) -> list[int]:
    """The greedy epsilon-net order of one front's points (indexes into ``points``).

    The first pick is the point with the smallest first objective, ties broken by the following
    objectives, then by key. Each next pick is the point whose Euclidean distance, in rank-scaled
    objectives (:func:`rank_scale`), to its nearest already-picked point is largest; equal
    distances go to the smaller key, then the smaller index. Identical points are at distance 0
    from each other, so a duplicate comes only after every distinct point.
    """
    p = as_points(points)
    if len(p) == 0:
        return []
    tie = _tie_ranks(_keys(keys, len(p)))
    return _farthest_first(_doubled_ranks(p), _epsnet_start(p, tie), tie)


@dataclass(frozen=True)
class Ranking:
    """The total order of a set of points, and where each point stands in it."""

    # Point indexes, best first.
    order: tuple[int, ...]
    # Front of each point (0 = best) under constraint-dominance.
    fronts: tuple[int, ...]
    n_fronts: int
    feasible: tuple[bool, ...]
    # Position of each point in ``order``.
    positions: tuple[int, ...]
    # Points with the same objective vector and total violation share a number here.
    results: tuple[int, ...]

    def front_label(self, index: int) -> str:
        """Which front a point is in, for reasons: ``front 4 of 6``."""
        return f"front {self.fronts[index] + 1} of {self.n_fronts}"

    def within_top(self, index: int, k: int, keep_ties: bool = False) -> bool:
        """Whether point ``index`` is among the first ``k`` of the order.

        ``keep_ties`` also admits a point whose result is identical to that of the ``k``-th
        point (same objectives, same total violation), whatever its key: with one objective
        that is the stopping-mode test ``score <= cut-off score`` of the single-objective
        code, where a later trial that ties the cut-off is not stopped for arriving later.
        """
        if k <= 0:
            return False
        if self.positions[index] < k:
            return True
        if not keep_ties or k > len(self.order):
            return False
        return self.results[index] == self.results[self.order[k - 1]]


def _epsnet_by_front(
    p: FloatArray, fronts: IntArray, n_fronts: int, tie: IntArray, upto: int | None
) -> IntArray:
    """Each point's place in its front's epsilon-net order. With ``upto``, the fronts after
    the one that holds the ``upto``-th place are left in key order: whether a point is in
    the first ``upto`` does not depend on them, and the greedy order costs a front's size
    squared."""
    within = np.zeros(len(p), dtype=np.intp)
    # Ranks over the whole rung, so one scale serves every front.
    scaled = _doubled_ranks(p)
    placed = 0
    for f in range(n_fronts):
        if upto is not None and placed >= upto:
            break
        members = np.flatnonzero(fronts == f)
        start = _epsnet_start(p[members], tie[members])
        local = np.asarray(_farthest_first(scaled[members], start, tie[members]))
        within[members[local]] = np.arange(len(members))
        placed += len(members)
    return within


def rank(
    points: ArrayLike,
    violations: ArrayLike | None = None,
    method: Method = "nsga2",
    keys: Sequence[float] | ArrayLike | None = None,
    upto: int | None = None,
) -> Ranking:
    """Order points by (front, tie-break rank inside the front, key, index).

    ``points``: shape (n, objectives), minimised. ``violations``: shape (n,) total or
    (n, constraints), each ``>= 0``; None when there are no constraints. ``keys``: a stable key
    per point such as the entry's sequence number (default: the index). ``upto``: only the
    first ``upto`` places need to be exact (a quota test); the epsilon-net order of the fronts
    beyond them is then skipped, and those points follow in (front, key) order.
    """
    if method not in METHODS:
        raise ValueError(f"ranking must be one of {', '.join(METHODS)}, not {method!r}")
    p = as_points(points)
    n = len(p)
    v = total_violations(violations, n)
    k = _keys(keys, n)
    fronts = front_numbers(p, v)
    n_fronts = int(fronts.max()) + 1 if n else 0
    tie = _tie_ranks(k)
    if method == "nsga2":
        within: NDArray[np.float64] | IntArray = -crowding_by_front(p, fronts)
    else:
        within = _epsnet_by_front(p, fronts, n_fronts, tie, upto)
    order = np.lexsort((tie, within, fronts))
    positions = np.empty(n, dtype=np.intp)
    positions[order] = np.arange(n)
    _, results = unique_rows(np.column_stack([p, v]))
    return Ranking(
        order=tuple(order.tolist()),
        fronts=tuple(fronts.tolist()),
        n_fronts=n_fronts,
        feasible=tuple((v == 0).tolist()),
        positions=tuple(positions.tolist()),
        results=tuple(results.tolist()),
    )


def rank_points(
    points: ArrayLike,
    violations: ArrayLike | None = None,
    method: Method = "nsga2",
    keys: Sequence[float] | ArrayLike | None = None,
) -> list[int]:
    """The order of :func:`rank`, best first."""
    return list(rank(points, violations, method, keys).order)


def within_top(order: Sequence[int], index: int, k: int) -> bool:
    """Whether point ``index`` is among the first ``k`` of ``order`` (the rung's quota test)."""
    return k > 0 and index in order[:k]
