"""Constraints as violations and reasons, and the scalarizations of the multi-objective core."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneyard.scheduler.multi import (
    Constraint,
    augmented_chebyshev,
    check_constraints,
    normalise,
    parego,
    pareto_mask,
    parse_constraints,
    random_weights,
    rank,
    weighted_sum,
)

BOUNDS = [{"metric": "gpu_mem_gb", "max": 16}, {"metric": "accuracy", "min": 0.8}]


# -- constraints ---------------------------------------------------------------------------
def test_violations_and_reasons_name_each_failed_constraint() -> None:
    ok = check_constraints({"gpu_mem_gb": 12.0, "accuracy": 0.9, "other": 1.0}, BOUNDS)
    assert ok.feasible and ok.violations == (0.0, 0.0) and ok.reason() == "feasible"
    bad = check_constraints({"gpu_mem_gb": 18.2, "accuracy": 0.75}, BOUNDS)
    assert not bad.feasible
    assert bad.violations == pytest.approx((2.2, 0.05))
    assert bad.total == pytest.approx(2.25)
    assert bad.reason() == "infeasible: gpu_mem_gb 18.2 > 16, accuracy 0.75 < 0.8"
    edge = check_constraints({"gpu_mem_gb": 16.0, "accuracy": 0.8}, BOUNDS)
    assert edge.feasible  # a bound itself holds


def test_a_range_bounds_both_sides() -> None:
    c = Constraint.parse({"metric": "batch_ms", "min": 2, "max": 5})
    assert [c.violation(x) for x in (1.0, 2.0, 4.0, 5.0, 7.5)] == [1.0, 0.0, 0.0, 0.0, 2.5]
    assert c.failure(1.0) == "batch_ms 1 < 2"
    assert c.failure(7.5) == "batch_ms 7.5 > 5"
    assert c.failure(3.0) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"metric": "m"}, r"constraints\[0\]: the constraint on m needs 'max' or 'min'"),
        ({"max": 3}, r"constraints\[0\]: a constraint needs a metric name"),
        ({"metric": "m", "max": "16"}, r"'max' must be a number"),
        ({"metric": "m", "max": True}, r"'max' must be a number"),
        ({"metric": "m", "min": 3, "max": 1}, r"'min' is above 'max'"),
        ({"metric": "m", "max": math.inf}, r"'max' must be finite"),
        ({"metric": "m", "max": 1, "maximum": 2}, r"unknown constraint fields: maximum"),
    ],
)
def test_bad_constraints_are_refused_naming_the_field(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_constraints([raw])


def test_a_report_without_a_bounded_metric_or_with_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="no value for accuracy"):
        check_constraints({"gpu_mem_gb": 1.0}, BOUNDS)
    with pytest.raises(ValueError, match="gpu_mem_gb is NaN"):
        check_constraints({"gpu_mem_gb": math.nan, "accuracy": 1.0}, BOUNDS)


def test_constraint_results_feed_the_ranking() -> None:
    reports = [
        {"err": 0.10, "gpu_mem_gb": 18.2, "accuracy": 0.9},  # best error, too much memory
        {"err": 0.20, "gpu_mem_gb": 15.0, "accuracy": 0.9},
        {"err": 0.30, "gpu_mem_gb": 30.0, "accuracy": 0.9},
        {"err": 0.25, "gpu_mem_gb": 10.0, "accuracy": 0.9},
    ]
    checks = [check_constraints(r, BOUNDS) for r in reports]
    points = np.array([[r["err"], r["gpu_mem_gb"]] for r in reports])
    violations = np.array([c.violations for c in checks])
    r = rank(points, violations)
    assert list(r.order) == [1, 3, 0, 2]
    assert r.feasible == (False, True, False, True)
    assert r.front_label(0) == "front 2 of 3" and checks[0].reason().endswith("18.2 > 16")
    assert pareto_mask(points, violations).tolist() == [False, True, False, True]


# -- scalarizations ------------------------------------------------------------------------
vectors = st.integers(1, 4).flatmap(
    lambda m: st.tuples(
        st.lists(
            st.lists(st.floats(-100, 100, allow_nan=False), min_size=m, max_size=m),
            min_size=1,
            max_size=20,
        ),
        st.lists(st.floats(0.01, 1.0), min_size=m, max_size=m),
    )
)


@settings(max_examples=60, deadline=None)
@given(case=vectors)
def test_scalarizations_match_their_formulas_and_prefer_pareto_optimal_points(
    case: tuple[list[list[float]], list[float]],
) -> None:
    rows, w = case
    p = np.array(rows)
    ws = weighted_sum(p, w)
    ch = augmented_chebyshev(p, w, rho=0.05)
    for i, row in enumerate(rows):
        terms = [wj * fj for wj, fj in zip(w, row, strict=True)]
        assert ws[i] == pytest.approx(sum(terms), abs=1e-9)
        assert ch[i] == pytest.approx(max(terms) + 0.05 * sum(terms), abs=1e-9)
    # With positive weights, a point that minimises either scalarization is not dominated.
    front = pareto_mask(p)
    assert front[int(np.argmin(ws))] or np.isclose(ws.min(), ws[front].min())
    assert front[int(np.argmin(ch))] or np.isclose(ch.min(), ch[front].min())


def test_normalise_maps_each_objective_to_the_unit_range() -> None:
    p = np.array([[1.0, 5.0, 3.0], [3.0, 5.0, 1.0], [2.0, 5.0, 2.0]])
    assert normalise(p).tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5]]
    assert normalise(p, [0, 0, 0], [4, 10, 4]).tolist() == [
        [0.25, 0.5, 0.75],
        [0.75, 0.5, 0.25],
        [0.5, 0.5, 0.5],
    ]


def test_parego_draws_simplex_weights_from_the_generator() -> None:
    p = np.array([[0.1, 30.0], [0.3, 10.0], [0.2, 20.0]])
    w1, s1 = parego(p, np.random.default_rng(3))
    w2, s2 = parego(p, np.random.default_rng(3))
    assert np.array_equal(w1, w2) and np.array_equal(s1, s2)
    assert np.all(w1 >= 0) and w1.sum() == pytest.approx(1.0)
    assert np.allclose(s1, augmented_chebyshev(normalise(p), w1))
    draws = np.array([random_weights(np.random.default_rng(s), 3) for s in range(200)])
    assert np.allclose(draws.sum(axis=1), 1.0)
    assert np.all(draws.mean(axis=0) > 0.25)  # no objective is starved


@pytest.mark.parametrize("weights", [[1.0], [-1.0, 1.0], [0.0, 0.0], [math.nan, 1.0]])
def test_bad_weights_are_refused(weights: list[float]) -> None:
    with pytest.raises(ValueError, match="weights"):
        weighted_sum([[1.0, 2.0]], weights)
