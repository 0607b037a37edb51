"""TPE and BOHB beyond the contract suite: the Parzen densities are proper and blind to the
placeholders of inactive parameters, categoricals have no order, TPE homes in on an optimum
and spreads parallel workers, BOHB models the highest rung with enough results, and the
per-trial work stays in numpy."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

from tuneyard.scheduler.samplers import tpe
from tuneyard.scheduler.samplers.base import Observation, Running, make_sampler
from tuneyard.scheduler.samplers.bohb import BOHBSampler
from tuneyard.scheduler.samplers.tpe import Parzen, TPESampler, UnitLayout
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

LINE = {"x": {"type": "float", "low": 0.0, "high": 10.0}}
OPTIMUM = 7.3
CONDITIONAL = {
    "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
    "beta2": {"type": "float", "low": 0.0, "high": 1.0, "when": {"solver": "adam"}},
    "x": {"type": "float", "low": 0.0, "high": 1.0},
}
MIXED = {
    "c": {"type": "categorical", "choices": ["a", "b", "c", "d", "e"]},
    "k": {"type": "int", "low": 1, "high": 7},
    "u": {"type": "float", "low": 0.0, "high": 1.0},
}


def space_of(params: dict[str, Any]) -> SearchSpace:
    return SearchSpace(StudySpec.model_validate({"name": "t", "space": params}).space)


def sampler(kind: str, params: dict[str, Any], seed: int = 0, **options: Any) -> Any:
    return make_sampler(SamplerSpec(type=kind, **options), space_of(params), seed)  # type: ignore[arg-type]


def line_score(p: dict[str, Any]) -> float:
    return (p["x"] - OPTIMUM) ** 2


def random_points(space: SearchSpace, count: int, seed: int) -> np.ndarray:
    return np.array(
        [space.to_unit(space.sample(np.random.default_rng([seed, i]))) for i in range(count)]
    )


# -- the densities -----------------------------------------------------------------------------


def test_each_kernel_is_a_proper_density() -> None:
    space = space_of(MIXED)
    layout = UnitLayout.of(space)
    kde = Parzen.fit(layout, random_points(space, 30, 1))
    # Categorical and int dimensions: probabilities over the bins summing to one, the other
    # dimensions marginalised out (marked inactive).
    for j, name in enumerate(space.names[:2]):
        n = layout.bins[j]
        x = np.full((n, 3), 0.5)
        x[:, j] = (np.arange(n) + 0.5) / n
        act = np.zeros_like(x, dtype=bool)
        act[:, j] = True
        assert np.exp(kde.log_pdf(x, act)).sum() == pytest.approx(1.0, abs=1e-9), name
    # The continuous dimension: a density on [0, 1] (midpoint rule).
    grid = (np.arange(20_000) + 0.5) / 20_000
    x = np.full((len(grid), 3), 0.5)
    x[:, 2] = grid
    act = np.zeros_like(x, dtype=bool)
    act[:, 2] = True
    assert np.exp(kde.log_pdf(x, act)).mean() == pytest.approx(1.0, abs=1e-4)


def test_the_categorical_kernel_puts_no_choice_nearer_than_another() -> None:
    space = space_of({"c": MIXED["c"]})
    layout = UnitLayout.of(space)
    ends = np.array([[0.1], [0.9]] * 5)  # choices "a" and "e" only
    kde = Parzen.fit(layout, ends)
    x = ((np.arange(5) + 0.5) / 5)[:, None]
    logp = kde.log_pdf(x, np.ones_like(x, dtype=bool))
    # A Gaussian over the bin index would favour "b" and "d", the neighbours of "a" and "e".
    assert logp[1] == logp[2] == logp[3]
    assert logp[0] == logp[4] > logp[2] + 1


def test_placeholders_of_inactive_parameters_never_shape_the_density() -> None:
    space = space_of(CONDITIONAL)
    layout = UnitLayout.of(space)
    x = random_points(space, 40, 2)
    inactive = ~layout.active(x)
    assert inactive.any()
    moved = x.copy()
    moved[inactive] = 0.01  # any other placeholder than the encoding's 0.5
    cands = random_points(space, 50, 3)  # encoded configurations: placeholders at 0.5
    act = layout.active(cands)
    a, b = Parzen.fit(layout, x), Parzen.fit(layout, moved)
    np.testing.assert_array_equal(a.log_pdf(cands, act), b.log_pdf(cands, act))
    np.testing.assert_array_equal(
        a.sample(np.random.default_rng(4), 30), b.sample(np.random.default_rng(4), 30)
    )


def test_a_conditional_parameter_follows_the_good_trials_where_it_was_active() -> None:
    # Good: sgd trials (beta2 inactive, encoded 0.5) and adam trials with beta2 near 0.9.
    # Bad: adam trials with beta2 below 0.3. (The product kernel's solver factor already damps
    # what sgd trials say about beta2; the test above checks that they say nothing.)
    s = sampler("tpe", CONDITIONAL, gamma=0.5)
    rng = np.random.default_rng(5)
    obs = []
    for n in range(20):
        good: dict[str, Any] = {"solver": "sgd", "x": float(rng.random())}
        if n % 2:
            good = {"solver": "adam", "beta2": float(rng.uniform(0.85, 0.95)), "x": good["x"]}
        obs.append(Observation(n, good, 1.0, float(n) / 100))
        bad = {"solver": "adam", "beta2": float(rng.uniform(0.0, 0.3)), "x": float(rng.random())}
        obs.append(Observation(100 + n, bad, 1.0, 1.0 + n))
    s.observe(obs)
    beta2 = [p["beta2"] for p in (s.suggest(n, []) for n in range(200, 260)) if "beta2" in p]
    assert len(beta2) > 10
    assert float(np.median(beta2)) > 0.85, beta2
    assert not any(0.4 < b < 0.6 for b in beta2), beta2


# -- TPE ---------------------------------------------------------------------------------------


def test_tpe_draws_at_random_until_n_startup_trials_are_observed() -> None:
    s = sampler("tpe", LINE, seed=3, n_startup=5)
    for n in range(5):
        assert s.suggest(n, []) == s.space.sample(np.random.default_rng([3, n]))
        s.observe([Observation(n, {"x": float(n)}, 1.0, float(n))])
    assert s.suggest(5, []) != s.space.sample(np.random.default_rng([3, 5]))


def test_tpe_models_the_best_fraction_as_optuna_does_unless_gamma_is_given() -> None:
    default = sampler("tpe", LINE)
    assert [default.n_good(n) for n in (1, 10, 11, 100, 1000)] == [1, 1, 2, 10, 25]
    assert sampler("tpe", LINE, gamma=0.2).n_good(101) == 21


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpe_concentrates_near_the_optimum_of_a_1d_function(seed: int) -> None:
    s = sampler("tpe", LINE, seed=seed)
    xs = []
    for n in range(60):
        p = s.suggest(n, [])
        xs.append(p["x"])
        s.observe([Observation(n, p, 1.0, line_score(p))])
    # Uniform draws on [0, 10] lie a median 2.5 or more away from 7.3.
    assert float(np.median(np.abs(np.array(xs[-20:]) - OPTIMUM))) < 1.0, xs[-20:]


def converged(kind: str = "tpe", **options: Any) -> Any:
    s = sampler(kind, LINE, seed=9, **options)
    for n in range(40):
        x = 10.0 * n / 40
        s.observe([Observation(n, {"x": x}, 1.0, line_score({"x": x}))])
    return s


def distance_to_optimum(s: TPESampler, running: list[dict[str, Any]]) -> float:
    return float(np.mean([abs(s.suggest(n, running)["x"] - OPTIMUM) for n in range(100, 140)]))


def test_the_constant_liar_steers_proposals_away_from_busy_workers() -> None:
    busy = [{"x": OPTIMUM}] * 10  # ten workers at the optimum already
    liar = converged()
    assert distance_to_optimum(liar, busy) > 1.5 * distance_to_optimum(liar, [])
    honest = converged(constant_liar=False)
    assert distance_to_optimum(honest, busy) == distance_to_optimum(honest, [])


def test_a_busy_configuration_yields_the_models_runner_up_not_a_random_draw() -> None:
    s = converged()
    for n in range(100, 110):
        alone = s.suggest(n, [])
        beside = s.suggest(n, [alone])  # the same number: the same candidates
        assert beside != alone
        assert abs(beside["x"] - OPTIMUM) < 1.5, (alone, beside)


def count_tpe_python_events(trials: int) -> int:
    """Python-level calls made in tpe.py during one suggestion, after ``trials`` trials."""
    s = sampler("tpe", {"x": LINE["x"], "c": MIXED["c"], "k": MIXED["k"], "u": MIXED["u"]})
    draws = [s.space.sample(np.random.default_rng([7, n])) for n in range(trials)]
    s.observe([Observation(n, p, 1.0, float(n % 97)) for n, p in enumerate(draws)])
    here = str(Path(tpe.__file__).resolve())
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call") and frame.f_code.co_filename == here:
            count += 1

    sys.setprofile(profile)
    try:
        s.suggest(trials, [])
    finally:
        sys.setprofile(None)
    return count


def test_the_model_does_no_python_work_per_trial() -> None:
    # Every per-trial (and per candidate-trial pair) computation is a numpy operation on a
    # whole matrix, so the Python calls made by the model do not grow with the history.
    assert count_tpe_python_events(300) == count_tpe_python_events(1200)


# -- the bounded model -------------------------------------------------------------------------


def observed(trials: int, seed: int = 0, max_history: int | None = None) -> TPESampler:
    """TPE over the line and MIXED after ``trials`` trials at rung 1, every third also at 3
    and every ninth at 9; ``max_history`` replaced when given."""
    s = sampler("tpe", {"x": LINE["x"], **MIXED}, seed=seed)
    if max_history is not None:
        s.max_history = max_history
    obs = []
    for n in range(trials):
        p = s.space.sample(np.random.default_rng([seed, n]))
        for r in (1.0, 3.0, 9.0)[: 1 + (n % 3 == 0) + (n % 9 == 0)]:
            obs.append(Observation(n, p, r, line_score(p) + p["u"] / r))
    s.observe(obs)
    return s


def busy(s: TPESampler, count: int) -> list[dict[str, Any]]:
    return [s.space.sample(np.random.default_rng([99, i])) for i in range(count)]


def test_max_history_defaults_to_a_thousand() -> None:
    assert sampler("tpe", LINE).max_history == tpe.MAX_HISTORY == 1000


def test_below_the_cap_tpe_suggests_what_an_uncapped_model_does() -> None:
    default = observed(300)
    at_cap = observed(300, max_history=300 - default.n_good(300))  # the rest just fits
    uncapped = observed(300, max_history=10**9)
    running = busy(default, 8)
    for n in range(300, 310):
        expected = uncapped.suggest(n, running)
        assert default.suggest(n, running) == expected
        assert at_cap.suggest(n, running) == expected
    rest = 300 - default.n_good(300)
    assert len(at_cap.model(Running(at_cap.space, running))[1].centres) == rest + 8 + 1
    one_past = observed(300, max_history=rest - 1)
    assert len(one_past.model(Running(one_past.space, running))[1].centres) == rest - 1 + 8 + 1


def test_above_the_cap_the_bad_set_is_the_most_recent_max_history_trials_and_the_running() -> None:
    s = observed(400, max_history=50)
    k = s.n_good(400)
    running = Running(s.space, busy(s, 7))
    good, bad = s.model(running)
    # Each density also holds its uniform prior component, the last.
    best = s.history.ranked_numbers(0, k)
    assert np.array_equal(good.centres[:-1], s.history.points(best))
    recent = [n for n in range(399, -1, -1) if n not in best][:50][::-1]
    assert len(bad.centres) == 50 + 7 + 1
    assert np.array_equal(bad.centres[:50], s.history.points(recent))
    assert np.array_equal(bad.centres[50:-1], running.points)
    s.constant_liar = False
    assert len(s.model(running)[1].centres) == 50 + 1


def count_python_calls(trials: int) -> int:
    """Python-level calls, in any module, made by one suggestion after ``trials`` trials with
    a bad set capped at 50 and 8 trials running."""
    s = observed(trials, max_history=50)
    running = busy(s, 8)
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        s.suggest(trials, running)
    finally:
        sys.setprofile(None)
    return count


def test_past_the_cap_a_suggestion_does_no_more_python_work_as_the_study_grows() -> None:
    # The ranking and the points are kept as observations come in, so choosing the good and
    # the bad set does not pass over the history.
    assert count_python_calls(400) == count_python_calls(1600)


def test_a_negative_trial_number_is_refused() -> None:
    for kind in ("tpe", "bohb"):
        with pytest.raises(ValueError, match="trial number"):
            sampler(kind, LINE).suggest(-1, [])


# -- BOHB --------------------------------------------------------------------------------------


def rungs_that_disagree(s: BOHBSampler) -> None:
    """30 trials over x at rung 1, where low x is best; every third also at rung 9, where high
    x is best."""
    for n in range(30):
        x = (n + 0.5) / 3
        obs = [Observation(n, {"x": x}, 1.0, x)]
        if n % 3 == 0:
            obs.append(Observation(n, {"x": x}, 9.0, 10 - x))
        s.observe(obs)


def bohb_proposals(n_startup: int) -> np.ndarray:
    s = sampler("bohb", LINE, random_fraction=0.0, n_startup=n_startup)
    rungs_that_disagree(s)
    return np.array([s.suggest(n, [])["x"] for n in range(100, 130)])


def test_bohb_models_the_highest_rung_with_at_least_n_startup_results() -> None:
    s = sampler("bohb", LINE, n_startup=10)
    rungs_that_disagree(s)
    assert s.model_resource() == 9.0  # 10 results there
    # Rung 9 has 10 results: enough for n_startup 10, and its ranking (high x) wins.
    assert float(np.median(bohb_proposals(10))) > 7.0
    # With n_startup 11 it has too few, and rung 1's ranking (low x) takes over.
    assert float(np.median(bohb_proposals(11))) < 3.0


def test_bohb_draws_at_random_until_some_rung_has_n_startup_results() -> None:
    s = sampler("bohb", LINE, seed=2)  # d + 2 = 3
    assert s.n_startup == 3
    s.observe([Observation(n, {"x": float(n)}, float(n + 1), 0.0) for n in range(3)])
    assert s.model_resource() is None
    rng = np.random.default_rng([2, 3])
    rng.random()  # the random-fraction coin
    assert s.suggest(3, []) == s.space.sample(rng)


def test_bohb_random_fraction_one_ignores_the_observations() -> None:
    fed = sampler("bohb", LINE, random_fraction=1.0)
    rungs_that_disagree(fed)
    empty = sampler("bohb", LINE, random_fraction=1.0)
    assert [fed.suggest(n, []) for n in range(20)] == [empty.suggest(n, []) for n in range(20)]


def test_bohb_keeps_the_papers_fixed_floor_when_min_bandwidth_is_given() -> None:
    assert sampler("bohb", LINE).min_bandwidth is None
    tight = sampler("bohb", LINE, min_bandwidth=1e-3, random_fraction=0.0)
    for n in range(12):
        tight.observe([Observation(n, {"x": 7.0 + n * 1e-4}, 1.0, float(n))])
    rows = tpe.points(tight.history.at_resource(1.0), 1)
    assert Parzen.fit(tight.layout, rows, tight.min_bandwidth).sigma[0] == 1e-3
    assert Parzen.fit(tight.layout, rows).sigma[0] == pytest.approx(1 / 13)


def test_tpe_and_bohb_are_what_the_registry_builds() -> None:
    assert isinstance(sampler("tpe", LINE), TPESampler)
    assert isinstance(sampler("bohb", LINE), BOHBSampler)
    assert math.isfinite(sampler("tpe", LINE).suggest(0, [])["x"])
