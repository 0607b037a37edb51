"""Parameter importance (first-order variance decomposition of ranks), on cases small enough to
work out by hand.

With 8 trials there are 2 quantile bins (``max(2, min(10, int(sqrt(8) / 2)))``), the ranks are
0..7 and, centred, -3.5..3.5, so SST = 2 * (0.25 + 2.25 + 6.25 + 12.25) = 42.
"""

from __future__ import annotations

import math

import pytest

from tuneyard.scheduler.importance import MIN_TRIALS, first_order_importance, ranked
from tuneyard.spec import CategoricalParam, FloatParam, IntParam


def cat(*choices: str) -> CategoricalParam:
    return CategoricalParam(type="categorical", choices=list(choices))


def num(low: float, high: float, log: bool = False) -> FloatParam:
    return FloatParam(type="float", low=low, high=high, log=log)


# Two halves of 4 trials, the first holding ranks 0..3, the second 4..7: group means of the
# centred ranks -2 and +2, SSB = 4 * 4 + 4 * 4 = 32, MSW = (42 - 32) / (8 - 2) = 5/3, so
# omega squared = (32 - 5/3) / (42 + 5/3) = 91/131.
HALVES = 91 / 131


def test_a_parameter_that_explains_everything_scores_1() -> None:
    # Values tied within each choice: all the variance is between the groups (MSW = 0).
    configs = [{"opt": "a"}] * 4 + [{"opt": "b"}] * 4
    y = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert first_order_importance({"opt": cat("a", "b")}, configs, y) == {"opt": 1.0}


def test_a_categorical_that_splits_the_ranks_in_halves() -> None:
    configs = [{"opt": "a"}] * 4 + [{"opt": "b"}] * 4
    y = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    got = first_order_importance({"opt": cat("a", "b")}, configs, y)
    assert got["opt"] == pytest.approx(HALVES)


def test_a_parameter_that_explains_nothing_scores_0() -> None:
    # Ranks {0, 3, 4, 7} and {1, 2, 5, 6}: both groups have a centred mean of 0, SSB = 0.
    z = ["p", "q", "q", "p", "p", "q", "q", "p"]
    configs = [{"z": v} for v in z]
    got = first_order_importance({"z": cat("p", "q")}, configs, list(range(8)))
    assert got == {"z": 0.0}


def test_each_parameter_is_scored_on_its_own() -> None:
    z = ["p", "q", "q", "p", "p", "q", "q", "p"]
    configs = [{"opt": "a" if i < 4 else "b", "z": z[i]} for i in range(8)]
    space = {"opt": cat("a", "b"), "z": cat("p", "q")}
    got = first_order_importance(space, configs, [float(i) for i in range(8)])
    assert got["opt"] == pytest.approx(HALVES) and got["z"] == 0.0


def test_a_log_scale_parameter_is_binned_by_quantiles_as_its_logarithm() -> None:
    # lr = 1e-8 .. 1e-1, value rising with lr: the median splits it into the two halves.
    lrs = [10.0**-k for k in range(8, 0, -1)]
    y = [float(i) for i in range(8)]
    got = first_order_importance({"lr": num(1e-8, 1.0, log=True)}, [{"lr": v} for v in lrs], y)
    assert got["lr"] == pytest.approx(HALVES)
    logs = first_order_importance({"lr": num(-8.0, 0.0)}, [{"lr": math.log10(v)} for v in lrs], y)
    assert logs == got


def test_only_the_order_of_the_values_counts() -> None:
    configs = [{"opt": "a"}] * 4 + [{"opt": "b"}] * 4
    space = {"opt": cat("a", "b")}
    plain = first_order_importance(space, configs, [1, 2, 3, 4, 5, 6, 7, 8])
    # An outlier (a diverged run) and a monotone reshaping change nothing.
    skewed = first_order_importance(space, configs, [1, 2, 3, 4, 5, 6, 7, 1e12])
    squared = first_order_importance(space, configs, [v**2 for v in range(1, 9)])
    assert plain == skewed == squared


def test_an_int_with_few_values_gets_a_group_per_value() -> None:
    # 2 distinct values <= 2 bins: one group each, the same split as the halves.
    configs = [{"layers": 1}] * 4 + [{"layers": 3}] * 4
    got = first_order_importance(
        {"layers": IntParam(type="int", low=1, high=3)}, configs, list(range(8))
    )
    assert got["layers"] == pytest.approx(HALVES)


def test_an_inactive_parameter_is_a_group_of_its_own() -> None:
    # momentum only where solver is sgd: present (one value) vs absent are the two groups.
    configs = [{"solver": "sgd", "momentum": 0.9}] * 4 + [{"solver": "adam"}] * 4
    space = {
        "solver": cat("sgd", "adam"),
        "momentum": FloatParam(type="float", low=0.0, high=1.0, when={"solver": "sgd"}),
    }
    got = first_order_importance(space, configs, list(range(8)))
    assert got["momentum"] == pytest.approx(HALVES) and got["solver"] == pytest.approx(HALVES)


def test_too_few_trials_give_zeros() -> None:
    n = MIN_TRIALS - 1
    configs = [{"opt": "a" if i < n // 2 else "b"} for i in range(n)]
    got = first_order_importance({"opt": cat("a", "b")}, configs, list(range(n)))
    assert got == {"opt": 0.0}
    assert first_order_importance({"opt": cat("a", "b")}, [], []) == {"opt": 0.0}


def test_constant_values_give_zeros() -> None:
    configs = [{"opt": "a"}] * 4 + [{"opt": "b"}] * 4
    assert first_order_importance({"opt": cat("a", "b")}, configs, [0.5] * 8) == {"opt": 0.0}


def test_a_parameter_with_one_value_explains_nothing() -> None:
    configs = [{"opt": "a"}] * 8
    assert first_order_importance({"opt": cat("a", "b")}, configs, list(range(8))) == {"opt": 0.0}


def test_the_scores_are_finite_shares() -> None:
    cases = [
        ([{"x": 0.5}] * 8, [1.0] * 8),  # constant values and a constant parameter
        ([{"x": float(i)} for i in range(8)], [1.0] * 8),
        ([{"x": 0.5}] * 8, list(range(8))),
        ([{"x": float(i % 3)} for i in range(40)], [float(i % 7) for i in range(40)]),
        ([{} for _ in range(8)], list(range(8))),  # never active
    ]
    for configs, y in cases:
        (score,) = first_order_importance({"x": num(0.0, 10.0)}, configs, y).values()
        assert math.isfinite(score) and 0.0 <= score <= 1.0


def test_a_share_chance_alone_gives_scores_0() -> None:
    # 4 choices of 2 trials, holding the ranks {7, 5}, {6, 0}, {4, 2} and {1, 3}: centred pair
    # sums 5, -1, -1, -3, so SSB = (25 + 1 + 1 + 9) / 2 = 18 = 3/7 of SST, the share that
    # (k - 1) / (n - 1) groups explain on average by chance. The plain ratio would say 0.43;
    # omega squared: MSW = (42 - 18) / (8 - 4) = 6 and SSB - (k - 1) MSW = 18 - 18 = 0.
    groups = {"a": (7, 5), "b": (6, 0), "c": (4, 2), "d": (1, 3)}
    configs = [{"c": g} for g, pair in groups.items() for _ in pair]
    y = [float(v) for pair in groups.values() for v in pair]
    got = first_order_importance({"c": cat(*groups)}, configs, y)
    assert got["c"] == pytest.approx(0.0, abs=1e-12)


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        first_order_importance({"opt": cat("a")}, [{"opt": "a"}] * 8, [1.0] * 7)


def test_ranked_normalises_and_orders_by_share_then_name() -> None:
    assert ranked({"b": 0.1, "a": 0.3, "c": 0.1, "d": 0.0}) == [
        ("a", pytest.approx(0.6), 0.3),
        ("b", pytest.approx(0.2), 0.1),
        ("c", pytest.approx(0.2), 0.1),
        ("d", 0.0, 0.0),
    ]
    assert ranked({"x": 0.0, "y": 0.0}) == [("x", 0.0, 0.0), ("y", 0.0, 0.0)]
