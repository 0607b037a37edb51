"""The warm-start benchmark's own pieces (bench/warm_start.py): trials-to-threshold and its
censored median, the thresholds' definition, the sources' geometry (where each one's optimum
lies against the target's), and one small seed through the real API, in which the priors are
fed and not counted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.multi_objective.problems import digits_table, grid_key
from bench.warm_start import (
    DIGITS,
    H6_ARGMIN,
    H6_NAMES,
    H6_OPTIMUM,
    HARTMANN,
    NEAR_SHIFT,
    QUANTILES,
    THRESHOLD_DRAWS,
    Objective,
    best_so_far,
    median_trials,
    run_seed,
    summarise,
    table,
    thresholds,
    trials_to,
)


def test_trials_to_threshold_is_the_first_trial_at_or_below_it() -> None:
    values = [3.0, 2.0, 2.5, 1.0, 0.5]
    assert trials_to(values, 2.0) == 2  # at the threshold counts
    assert trials_to(values, 1.5) == 4
    assert trials_to(values, 3.0) == 1
    assert trials_to(values, 0.1) is None
    assert trials_to([], 1.0) is None
    assert best_so_far(values) == [3.0, 2.0, 2.0, 1.0, 0.5]


def test_the_median_never_averages_with_a_run_that_did_not_get_there() -> None:
    # Half the seeds got there by trial 7: that is the answer, not (7 + unknown) / 2.
    assert median_trials([3, 7, None, None], budget=50) == 7
    assert median_trials([3, None, None, None], budget=50) == math.inf
    assert median_trials([5, 1, 9], budget=50) == 5
    assert median_trials([50, 50], budget=50) == 50


@pytest.mark.parametrize("objective", [HARTMANN, DIGITS])
def test_thresholds_are_quantiles_of_random_configurations(objective: Objective) -> None:
    name = objective.name
    levels = thresholds(name)
    assert len(levels) == len(QUANTILES)
    assert levels[0] >= levels[1], "the stricter quantile is the lower value"
    if name == "hartmann6":
        # A random configuration beats the 1 % level about once in a hundred: the same draw
        # with another seed lands near 1 %.
        from tuneyard.scheduler.space import SearchSpace
        from tuneyard.spec import StudySpec

        space = SearchSpace(StudySpec.model_validate({"name": "t", "space": HARTMANN.space}).space)
        rng = np.random.default_rng(7)
        draws = np.array([HARTMANN.value(space.sample(rng)) for _ in range(THRESHOLD_DRAWS // 5)])
        assert 0.005 < float(np.mean(draws <= levels[0])) < 0.02
        assert levels[1] > H6_OPTIMUM
    else:
        finals = sorted(curve[-1] for curve in digits_table().values())
        assert finals[0] <= levels[1] <= levels[0] < finals[len(finals) // 10]


def test_the_sources_optima_lie_where_the_setup_says() -> None:
    x_star = dict(zip(H6_NAMES, H6_ARGMIN, strict=True))
    same, near, far = HARTMANN.sources
    assert HARTMANN.value(x_star) == pytest.approx(H6_OPTIMUM, abs=1e-4)
    assert same.value(x_star) == HARTMANN.value(x_star)
    # The nearby function is the target moved by NEAR_SHIFT: its optimum moved with it.
    moved = {n: v + NEAR_SHIFT for n, v in x_star.items()}
    assert near.value(moved) == pytest.approx(H6_OPTIMUM, abs=1e-4)
    assert near.value(x_star) > H6_OPTIMUM + 1.0
    # The far one's optimum is the mirror image, where the target is poor.
    mirrored = {n: 1.0 - v for n, v in x_star.items()}
    assert far.value(mirrored) == pytest.approx(H6_OPTIMUM, abs=1e-4)
    assert HARTMANN.value(mirrored) > thresholds("hartmann6")[0] + 1.0
    # The short source is the same table three epochs in.
    short = DIGITS.sources[1]
    p = {"lr": 0.01, "l2": 1e-4, "units": 32, "layers": 1, "batch_size": 64}
    assert short.resource == 3 and short.value(p) == digits_table()[grid_key(p)][2]
    assert DIGITS.value(p) == digits_table()[grid_key(p)][-1]


def test_one_seed_through_the_api_feeds_priors_without_counting_them() -> None:
    runs = run_seed(("hartmann6", 0, 12))
    by_start = {r["start"]: r for r in runs}
    assert set(by_start) == {"cold", "same", "near", "far"}
    for r in runs:
        assert len(r["values"]) == 12  # the budget is the study's own trials
        assert r["priors"] == (0 if r["start"] == "cold" else 12)
    # Same TPE seed, so the difference is the priors: cold, the first trials are TPE's random
    # start-up; warm, with 12 priors it models from the first trial on. (Which start is better
    # is what the benchmark measures over seeds, not something one small seed shows.)
    cold = by_start["cold"]["values"]
    for start in ("same", "near", "far"):
        assert by_start[start]["values"][0] != cold[0], start
    text = table(runs, 12)
    rows = summarise(runs, "hartmann6", 12)
    assert [r["start"] for r in rows] == ["cold", "same", "near", "far"]
    assert "warm: centres mirrored" in text and "| cold | 0 |" in text
