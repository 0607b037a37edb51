"""The multi-objective core against brute-force references on generated point sets.

Points are drawn from small integer grids as well as from floats, so that ties and duplicates
are common; every hypervolume reference on integer points is exact, and so are the algorithm's
sums of products, hence the exact equalities.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from tuneyard.scheduler.board import MemoryBoard
from tuneyard.scheduler.multi import (
    constraint_dominates,
    crowding_distance,
    epsnet_order,
    front_numbers,
    hypervolume,
    hypervolume_contributions,
    non_dominated_fronts,
    pareto_mask,
    rank,
    rank_points,
    rank_scale,
    reference_point,
    within_top,
)
from tuneyard.scheduler.multi import dominates as pareto_dominates

FAST = settings(max_examples=60, deadline=None)


# -- references ----------------------------------------------------------------------------
def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def cdominates(a: tuple[float, ...], va: float, b: tuple[float, ...], vb: float) -> bool:
    if va == 0 and vb == 0:
        return dominates(a, b)
    if va == 0 or vb == 0:
        return va == 0
    return va < vb


def brute_fronts(points: list[tuple[float, ...]], violations: list[float]) -> list[set[int]]:
    left = set(range(len(points)))
    fronts = []
    while left:
        front = {
            i
            for i in left
            if not any(cdominates(points[j], violations[j], points[i], violations[i]) for j in left)
        }
        fronts.append(front)
        left -= front
    return fronts


def grid_volume(points: np.ndarray, ref: np.ndarray) -> int:
    """Unit cells of the integer grid below ``ref`` that some point's box covers."""
    axes = [
        np.arange(np.floor(points[:, k].min()) if len(points) else 0, ref[k])
        for k in range(len(ref))
    ]
    cells = np.array(list(itertools.product(*axes))).reshape(-1, len(ref))
    if len(points) == 0 or len(cells) == 0:
        return 0
    covered = np.any(np.all(points[None, :, :] <= cells[:, None, :], axis=2), axis=1)
    return int(covered.sum())


def inclusion_exclusion(points: np.ndarray, ref: np.ndarray) -> float:
    total = 0.0
    for size in range(1, len(points) + 1):
        for subset in itertools.combinations(range(len(points)), size):
            corner = points[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.clip(ref - corner, 0, None)))
    return total


# -- strategies ----------------------------------------------------------------------------
@st.composite
def point_sets(
    draw: st.DrawFn, dims: tuple[int, ...] = (1, 2, 3, 5), max_n: int = 24, grid: bool = True
) -> np.ndarray:
    m = draw(st.sampled_from(dims))
    n = draw(st.integers(0, max_n))
    if grid and draw(st.booleans()):
        values = st.integers(0, draw(st.integers(1, 5)))
    else:
        values = st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False)
    rows = draw(st.lists(st.lists(values, min_size=m, max_size=m), min_size=n, max_size=n))
    return np.array(rows, dtype=float).reshape(n, m)


@st.composite
def constrained(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    p = draw(point_sets())
    violations = draw(
        st.lists(st.sampled_from([0.0, 0.0, 0.5, 1.0, 2.0]), min_size=len(p), max_size=len(p))
    )
    return p, np.array(violations)


def integer_sets(dims: tuple[int, ...], top: int, max_n: int) -> st.SearchStrategy[np.ndarray]:
    return st.integers(dims[0], dims[-1]).flatmap(
        lambda m: st.lists(
            st.lists(st.integers(0, top), min_size=m, max_size=m), min_size=0, max_size=max_n
        ).map(lambda rows: np.array(rows, dtype=float).reshape(len(rows), m))
    )


# -- non-dominated sorting -----------------------------------------------------------------
@FAST
@given(case=constrained())
def test_fronts_equal_brute_force_fronts(case: tuple[np.ndarray, np.ndarray]) -> None:
    p, v = case
    fronts = non_dominated_fronts(p, v)
    rows = [tuple(r) for r in p.tolist()]
    assert [set(f) for f in fronts] == brute_fronts(rows, v.tolist())
    numbers = front_numbers(p, v)
    for f, members in enumerate(fronts):
        assert all(numbers[i] == f for i in members)
        later = [j for g in fronts[f:] for j in g]
        for i in members:
            assert not any(cdominates(rows[j], v[j], rows[i], v[i]) for j in later)
            if f > 0:
                assert any(cdominates(rows[j], v[j], rows[i], v[i]) for j in fronts[f - 1])


@FAST
@given(p=point_sets())
def test_duplicates_share_a_front_and_the_pareto_mask_is_the_first_front(p: np.ndarray) -> None:
    numbers = front_numbers(p)
    for i, j in itertools.combinations(range(len(p)), 2):
        if np.array_equal(p[i], p[j]):
            assert numbers[i] == numbers[j]
    rows = [tuple(r) for r in p.tolist()]
    expected = [not any(dominates(q, r) for q in rows) for r in rows]
    assert pareto_mask(p).tolist() == expected


@FAST
@given(
    a=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    b=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    va=st.sampled_from([0.0, 0.0, 1.0, 2.0]),
    vb=st.sampled_from([0.0, 0.0, 1.0, 2.0]),
)
def test_the_pairwise_relations_match_their_definitions(
    a: list[int], b: list[int], va: float, vb: float
) -> None:
    x, y = tuple(map(float, a)), tuple(map(float, b))
    assert pareto_dominates(x, y) == dominates(x, y)
    assert constraint_dominates(x, y, va, vb) == cdominates(x, va, y, vb)
    assert not (constraint_dominates(x, y, va, vb) and constraint_dominates(y, x, vb, va))


def test_infeasible_points_follow_every_feasible_point_by_total_violation() -> None:
    p = np.array([[0.0, 0.0], [5.0, 5.0], [1.0, 9.0], [0.0, 0.0], [3.0, 3.0]])
    v = np.array([[0.0, 2.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.5, 1.5]])
    # Feasible: 1 and 2 trade off (front 0); infeasible by total 1 (3) then 2 (0 and 4 tie).
    assert non_dominated_fronts(p, v) == [[1, 2], [3], [0, 4]]
    assert pareto_mask(p, v).tolist() == [False, True, True, False, False]
    assert not pareto_mask(p, np.ones(5)).any()


def test_bad_input_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="finite"):
        front_numbers([[0.0, math.nan]])
    with pytest.raises(ValueError, match=">= 0"):
        front_numbers([[0.0, 1.0]], [-1.0])
    with pytest.raises(ValueError, match="2-D"):
        front_numbers([1.0, 2.0])
    with pytest.raises(ValueError, match="ranking must be one of"):
        rank([[1.0]], method="spea2")  # type: ignore[arg-type]


# -- crowding distance ---------------------------------------------------------------------
def direct_crowding(p: np.ndarray) -> list[float]:
    out = []
    for i in range(len(p)):
        d = 0.0
        for k in range(p.shape[1]):
            values = sorted(set(p[:, k].tolist()))
            if len(values) < 2:
                continue
            v = p[i, k]
            if v in (values[0], values[-1]):
                d = math.inf
                continue
            below = max(x for x in values if x < v)
            above = min(x for x in values if x > v)
            d += (above - below) / (values[-1] - values[0])
        out.append(d)
    return out


@FAST
@given(p=point_sets(dims=(1, 2, 3, 5), max_n=16))
def test_crowding_distance_against_a_direct_computation(p: np.ndarray) -> None:
    got = crowding_distance(p)
    want = direct_crowding(p)
    assert len(got) == len(want)
    for g, w in zip(got.tolist(), want, strict=True):
        assert g == w or math.isclose(g, w, rel_tol=1e-12)


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 12), m=st.integers(2, 4))
def test_crowding_distance_is_debs_listing_when_values_are_distinct(
    seed: int, n: int, m: int
) -> None:
    p = np.random.default_rng(seed).permuted(np.tile(np.arange(n, dtype=float), (m, 1)), axis=1).T
    want = np.zeros(n)
    for k in range(m):
        o = np.argsort(p[:, k])
        want[o[0]] = want[o[-1]] = math.inf
        span = p[o[-1], k] - p[o[0], k]
        for a in range(1, n - 1):
            want[o[a]] += (p[o[a + 1], k] - p[o[a - 1], k]) / span
    assert np.allclose(crowding_distance(p), want, rtol=1e-12)


# -- epsilon-net ---------------------------------------------------------------------------
@FAST
@given(p=point_sets(dims=(1, 2, 3), max_n=14), data=st.data())
def test_epsnet_is_a_greedy_farthest_first_permutation_from_the_documented_start(
    p: np.ndarray, data: st.DataObject
) -> None:
    keys = data.draw(st.permutations(range(len(p))))
    order = epsnet_order(p, keys)
    assert sorted(order) == list(range(len(p)))
    if not len(p):
        return
    first = min(range(len(p)), key=lambda i: (*p[i].tolist(), keys[i]))
    assert order[0] == first
    # Ranks scaled to [0, 1], as documented; doubled 0-based ranks are the same up to a common
    # factor and integers, so squared distances compare exactly.
    z = 2 * rankdata(p, axis=0) - 2
    assert np.allclose(rank_scale(p), z / (2 * max(len(p) - 1, 1)))
    for t in range(1, len(order)):
        picked = order[:t]

        def gap(i: int, picked: list[int] = picked) -> float:
            return min(float(np.sum((z[i] - z[j]) ** 2)) for j in picked)

        rest = order[t:]
        assert gap(order[t]) == max(gap(i) for i in rest)
        ties = [i for i in rest if gap(i) == gap(order[t])]
        assert keys[order[t]] == min(keys[i] for i in ties)


# -- the order of a rung --------------------------------------------------------------------
@FAST
@given(case=constrained(), method=st.sampled_from(["nsga2", "epsnet"]), data=st.data())
def test_rank_orders_by_front_then_tie_break_then_key(
    case: tuple[np.ndarray, np.ndarray], method: str, data: st.DataObject
) -> None:
    p, v = case
    keys = data.draw(st.permutations(range(len(p))))
    r = rank(p, v, method=method, keys=keys)  # type: ignore[arg-type]
    assert sorted(r.order) == list(range(len(p)))
    assert [r.fronts[i] for i in r.order] == sorted(r.fronts)
    assert list(r.fronts) == front_numbers(p, v).tolist()
    assert all(r.positions[i] == at for at, i in enumerate(r.order))
    for f in range(r.n_fronts):
        members = [i for i in r.order if r.fronts[i] == f]
        if method == "nsga2":
            crowd = crowding_distance(p[sorted(members)])
            by_index = dict(zip(sorted(members), crowd.tolist(), strict=True))
            assert members == sorted(members, key=lambda i: (-by_index[i], keys[i]))
        else:
            assert members[0] == min(members, key=lambda i: (*p[i].tolist(), keys[i]))
    for i in range(len(p)):
        assert r.front_label(i) == f"front {r.fronts[i] + 1} of {r.n_fronts}"
        for k in range(len(p) + 1):
            assert r.within_top(i, k) == within_top(r.order, i, k) == (r.positions[i] < k)
    assert rank_points(p, v, method, keys) == list(r.order)  # type: ignore[arg-type]


@FAST
@given(
    scores=st.lists(
        st.one_of(st.integers(0, 4).map(float), st.floats(-10, 10, allow_nan=False)),
        max_size=30,
    ),
    eta=st.integers(2, 4),
    method=st.sampled_from(["nsga2", "epsnet"]),
)
def test_one_objective_reduces_to_the_single_objective_board(
    scores: list[float], eta: int, method: str
) -> None:
    """Order, promotion quota and stopping quota all match today's MemoryBoard."""
    n = len(scores)
    promotion = MemoryBoard(lambda n: n // eta - 1)
    stopping = MemoryBoard(lambda n: math.ceil(n / eta) - 1)
    for trial, s in enumerate(scores):
        promotion.record(0, 0, trial, s)
        stopping.record(0, 0, trial, s)
    seqs = [promotion.entry(0, 0, t).seq for t in range(n)]  # type: ignore[union-attr]
    r = rank(np.array(scores).reshape(n, 1), method=method, keys=seqs)  # type: ignore[arg-type]
    assert list(r.order) == [e.trial_id for e in promotion.top(0, 0, n)]
    assert list(r.order) == sorted(range(n), key=lambda t: (scores[t], seqs[t]))
    cut_p, cut_s = promotion.cutoff(0, 0), stopping.cutoff(0, 0)
    for t in range(n):
        e = promotion.entry(0, 0, t)
        assert e is not None
        promoted = cut_p is not None and e.key <= cut_p.key
        assert within_top(r.order, t, n // eta) == promoted
        kept = cut_s is not None and e.score <= cut_s.score
        assert r.within_top(t, math.ceil(n / eta), keep_ties=True) == kept


def test_reason_parts_for_a_rung() -> None:
    # Twelve entries on a 4x3 grid of (error, latency): fronts are the anti-diagonals.
    p = np.array([[a, b] for a in range(4) for b in range(3)], dtype=float)
    r = rank(p)
    worst = int(np.argmax(p.sum(axis=1)))
    assert r.front_label(worst) == "front 6 of 6"
    assert not within_top(r.order, worst, 12 // 3)
    assert r.order[0] == 0 and r.front_label(0) == "front 1 of 6"


# -- hypervolume ---------------------------------------------------------------------------
@settings(max_examples=80, deadline=None)
@given(p=integer_sets((2, 3), top=6, max_n=12), ref=st.integers(3, 8))
def test_hypervolume_equals_the_grid_volume_in_2d_and_3d(p: np.ndarray, ref: int) -> None:
    r = np.full(p.shape[1], float(ref))
    assert hypervolume(p, r) == grid_volume(p, r)


@settings(max_examples=25, deadline=None)
@given(p=integer_sets((4, 5), top=3, max_n=10))
def test_hypervolume_equals_the_grid_volume_in_4d_and_5d(p: np.ndarray) -> None:
    r = np.full(p.shape[1], 4.0)
    assert hypervolume(p, r) == grid_volume(p, r)


@FAST
@given(p=integer_sets((3, 4), top=9, max_n=7), ref=st.integers(5, 11))
def test_hypervolume_equals_inclusion_exclusion_on_small_sets(p: np.ndarray, ref: int) -> None:
    r = np.full(p.shape[1], float(ref))
    assert hypervolume(p, r) == inclusion_exclusion(p, r)


def test_hypervolume_against_monte_carlo_in_3d_on_floats() -> None:
    rng = np.random.default_rng(7)
    p = rng.random((40, 3))
    p /= np.linalg.norm(p, axis=1, keepdims=True)  # points on a sphere: all non-dominated
    ref = np.full(3, 1.1)
    samples = rng.random((400_000, 3)) * ref
    covered = np.zeros(len(samples), dtype=bool)
    for q in p:
        covered |= np.all(samples >= q, axis=1)
    share = covered.mean()
    estimate, stderr = share * ref.prod(), math.sqrt(share * (1 - share) / len(samples))
    assert abs(hypervolume(p, ref) - estimate) < 5 * stderr * ref.prod()


@FAST
@given(p=point_sets(dims=(2, 3, 4), max_n=16, grid=False), data=st.data())
def test_hypervolume_ignores_point_order(p: np.ndarray, data: st.DataObject) -> None:
    perm = data.draw(st.permutations(range(len(p))))
    ref = reference_point(p) if len(p) else np.zeros(p.shape[1])
    assert hypervolume(p[perm], ref) == hypervolume(p, ref)
    contrib = hypervolume_contributions(p, ref)
    assert np.array_equal(hypervolume_contributions(p[perm], ref), contrib[perm])


@FAST
@given(p=integer_sets((1, 4), top=6, max_n=10), extra=st.lists(st.integers(0, 8), min_size=4))
def test_adding_a_point_never_lowers_the_hypervolume(p: np.ndarray, extra: list[int]) -> None:
    r = np.full(p.shape[1], 7.0)
    q = np.array(extra[: p.shape[1]], dtype=float)
    assert hypervolume(np.vstack([p, q]), r) >= hypervolume(p, r)


def test_points_that_do_not_dominate_the_reference_add_nothing() -> None:
    ref = np.array([4.0, 4.0])
    assert hypervolume([[1.0, 4.0], [5.0, 0.0]], ref) == 0.0
    assert hypervolume([[1.0, 1.0], [0.0, 9.0]], ref) == 9.0
    assert hypervolume(np.empty((0, 2)), ref) == 0.0
    assert hypervolume_contributions([[1.0, 1.0], [0.0, 9.0]], ref).tolist() == [9.0, 0.0]


@FAST
@given(p=integer_sets((1, 4), top=5, max_n=9), ref=st.integers(3, 7))
def test_contributions_are_the_loss_when_removing_each_point(p: np.ndarray, ref: int) -> None:
    r = np.full(p.shape[1], float(ref))
    total = hypervolume(p, r)
    got = hypervolume_contributions(p, r)
    for i in range(len(p)):
        assert got[i] == total - hypervolume(np.delete(p, i, axis=0), r)


@FAST
@given(p=point_sets(dims=(1, 2, 3), max_n=12))
def test_the_derived_reference_lies_beyond_every_point_by_a_tenth_of_the_range(
    p: np.ndarray,
) -> None:
    if not len(p):
        with pytest.raises(ValueError, match="at least one"):
            reference_point(p)
        return
    ref = reference_point(p)
    assert np.all(p < ref)
    span = p.max(axis=0) - p.min(axis=0)
    varied = span > 0
    assert np.allclose(ref[varied], p.max(axis=0)[varied] + 0.1 * span[varied])
    assert hypervolume(p, ref) > 0


def test_the_first_front_of_a_large_set_matches_the_sorted_fronts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the matrix limit the front is found by one pass over the lexicographic order."""
    from tuneyard.scheduler.multi import dominance

    rng = np.random.default_rng(11)
    p = np.vstack([rng.integers(0, 6, (150, 3)), rng.integers(0, 6, (150, 4))[:, :3]])
    p = p.astype(float)
    want = front_numbers(p) == 0
    monkeypatch.setattr(dominance, "MATRIX_LIMIT", 8)
    assert pareto_mask(p).tolist() == want.tolist()
    ref = np.full(3, 6.0)
    assert hypervolume(p, ref) == grid_volume(p, ref)
