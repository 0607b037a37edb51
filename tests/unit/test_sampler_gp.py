"""The Gaussian-process sampler: what its model learns and how it picks the next point."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from tuneyard.scheduler.samplers.base import Observation
from tuneyard.scheduler.samplers.gp import GPSampler, log_expected_improvement
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

LINE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
RICH = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.05},
    "layers": {"type": "int", "low": 1, "high": 4},
    "units": {"type": "int", "low": 16, "high": 1024, "log": True},
    "batch": {"type": "int", "low": 16, "high": 256, "step": 16},
    "fixed": {"type": "float", "low": 2.0, "high": 2.0},
    "solver": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"solver": "sgd"}},
    "beta2": {"type": "float", "low": 0.9, "high": 0.9999, "when": {"solver": ["adam"]}},
}


def space_of(params: dict[str, Any]) -> SearchSpace:
    return SearchSpace(StudySpec.model_validate({"name": "gp", "space": params}).space)


def sampler(params: dict[str, Any], seed: int = 0, **options: Any) -> GPSampler:
    return GPSampler(space_of(params), seed, SamplerSpec(type="gp", **options))


def unit(s: GPSampler, configs: list[dict[str, Any]]) -> np.ndarray:
    return np.array([s.space.to_unit(c) for c in configs])


def test_the_fitted_gp_interpolates_a_noiseless_objective() -> None:
    s = sampler(LINE)
    xs = np.linspace(0.0, 1.0, 12)
    ys = np.sin(6 * xs) + 0.5 * xs
    s.observe(
        [
            Observation(i, {"x": float(x)}, 1.0, float(y))
            for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        ]
    )
    model = s.fit()
    assert model is not None
    mean, sd = model.predict_scores(xs[:, None])
    spread = float(ys.max() - ys.min())
    assert np.max(np.abs(mean - ys)) < 0.02 * spread
    assert np.all(sd < 0.05 * spread)
    # Between the points it is still close to the truth.
    mid = (xs[:-1] + xs[1:]) / 2
    mean_mid, _ = model.predict_scores(mid[:, None])
    assert np.max(np.abs(mean_mid - (np.sin(6 * mid) + 0.5 * mid))) < 0.05 * spread


def test_a_noisy_objective_keeps_a_noisy_fit() -> None:
    # A fit that ends noisy is tried again from the interpolating basin; on data that really
    # are noisy that start must lose, or the mean would chase the noise.
    s = sampler(LINE)
    rng = np.random.default_rng(3)
    xs = rng.random(40)
    truth = (xs - 0.4) ** 2
    ys = truth + 0.05 * rng.normal(size=len(xs))
    s.observe(
        [
            Observation(i, {"x": float(x)}, 1.0, float(y))
            for i, (x, y) in enumerate(zip(xs, ys, strict=True))
        ]
    )
    model = s.fit()
    assert model is not None
    # Standardised, the noise variance is 0.05^2 / var(ys), about 0.2.
    assert model.posterior.hyper.noise > 0.05, model.posterior.hyper.noise
    # The mean follows the trend, not the noise (sd 0.05), away from the sparse ends.
    grid = np.linspace(0.1, 0.9, 33)
    mean, _ = model.predict_scores(grid[:, None])
    assert np.max(np.abs(mean - (grid - 0.4) ** 2)) < 0.05


def test_expected_improvement_is_highest_near_the_optimum_not_in_the_bad_region() -> None:
    s = sampler(LINE)
    xs = [0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.9, 1.0]
    s.observe([Observation(i, {"x": x}, 1.0, (x - 0.7) ** 2) for i, x in enumerate(xs)])
    model = s.fit()
    assert model is not None
    grid = np.linspace(0.0, 1.0, 201)[:, None]
    _, log_ei = model.log_ei(grid)
    assert np.all(np.isfinite(log_ei))
    assert abs(float(grid[int(np.argmax(log_ei)), 0]) - 0.7) < 0.1
    # The bad end, already sampled densely, is worth orders of magnitude less.
    assert log_ei[grid[:, 0] <= 0.3].max() < log_ei.max() - math.log(100)
    p = s.suggest(len(xs))
    assert abs(p["x"] - 0.7) < 0.1


def test_log_expected_improvement_matches_the_closed_form_and_stays_finite_far_out() -> None:
    from scipy.stats import norm

    mean = np.linspace(-3.0, 6.0, 91)
    var = np.full_like(mean, 0.7)
    sd = math.sqrt(0.7)
    z = (0.0 - mean) / sd
    direct = sd * (z * norm.cdf(z) + norm.pdf(z))
    assert np.allclose(np.exp(log_expected_improvement(mean, var, 0.0)), direct, rtol=1e-9)
    # Where EI underflows to 0, log EI still ranks points: further away is worse.
    far = log_expected_improvement(np.array([40.0, 1e3, 1e9, 1e12]), np.ones(4), 0.0)
    assert np.all(np.isfinite(far))
    assert np.all(np.diff(far) < 0)
    # The asymptote -z^2/2 - log(sqrt(2 pi)) - 2 log|z| holds far out.
    assert far[1] == pytest.approx(-0.5e6 - 0.5 * math.log(2 * math.pi) - 2 * math.log(1e3))


def test_max_history_keeps_the_best_half_and_the_most_recent_rest() -> None:
    s = sampler(LINE, max_history=10)
    # Scores fall then rise: the best are trials 20..24, the most recent 45..49.
    scores = {n: abs(n - 22) + 0.01 * n for n in range(50)}
    s.observe([Observation(n, {"x": n / 50}, 1.0, scores[n]) for n in range(50)])
    numbers, x, _, _ = s.fit_set()
    best = sorted(scores, key=scores.__getitem__)[:5]
    assert sorted(numbers) == sorted([*best, 45, 46, 47, 48, 49])
    assert numbers == sorted(numbers) and x.shape == (10, 1)
    model = s.fit()
    assert model is not None and model.posterior.chol.shape == (10, 10)


def test_max_history_prefers_trials_trained_further() -> None:
    s = sampler(LINE, max_history=10)
    obs = [Observation(n, {"x": n / 40}, 1.0, 0.1 * n) for n in range(30)]
    # A bad score at the top resource still ranks above any low-rung result.
    obs += [Observation(n, {"x": n / 40}, 9.0, 100.0 + n) for n in range(25, 30)]
    s.observe(obs)
    numbers, _, resources, _ = s.fit_set()
    assert {25, 26, 27, 28, 29} <= set(numbers)
    assert sorted(resources.tolist()) == [1.0] * 5 + [9.0] * 5


def test_a_categorical_that_matters_is_learned_through_its_one_hot_columns() -> None:
    params = {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "c": {"type": "categorical", "choices": ["a", "b", "c", "d"]},
    }

    def f(p: dict[str, Any]) -> float:
        return (p["x"] - 0.4) ** 2 + (0.0 if p["c"] == "c" else 1.0)

    s = sampler(params, n_startup=12)
    space = s.space
    for n in range(12):
        p = space.sample(np.random.default_rng([5, n]))
        s.observe([Observation(n, p, 1.0, f(p))])
    model = s.fit()
    assert model is not None
    configs = [{"x": 0.4, "c": c} for c in "abcd"]
    mean, _ = model.predict_scores(unit(s, configs))
    assert int(np.argmin(mean)) == 2
    assert mean[[0, 1, 3]].min() - mean[2] > 0.5
    # And the sampler goes for it.
    picks = []
    for n in range(12, 20):
        p = s.suggest(n)
        picks.append(p["c"])
        s.observe([Observation(n, p, 1.0, f(p))])
    assert picks.count("c") >= 6, picks


def test_the_encoder_snaps_like_the_space_and_one_hots_categoricals() -> None:
    s = sampler(RICH)
    space, enc = s.space, s.encoder
    points = np.random.default_rng(1).random((300, len(space.names)))
    snapped, feats = enc.encode(points)
    for u, row, feat in zip(points, snapped, feats, strict=True):
        assert np.allclose(row, space.to_unit(space.from_unit(u)), atol=1e-12)
        config = space.from_unit(u)
        for i, name in enumerate(space.names):
            c = enc.col_start[i]
            if name in ("solver", "nesterov"):
                k = 3 if name == "solver" else 2
                onehot = feat[c : c + k]
                if name in config:
                    v = config[name]
                    hot = [float(type(ch) is type(v) and ch == v) for ch in RICH[name]["choices"]]
                    assert onehot.tolist() == hot
                else:
                    assert onehot.tolist() == [0.0] * k
            else:
                assert feat[c] == row[i]
    assert enc.n_cols == len(space.names) + 2 + 1
    # One lengthscale per parameter: the one-hot columns of a categorical share a group.
    solver = space.names.index("solver")
    assert enc.groups.tolist().count(solver) == 3


def test_early_stopped_trials_inform_the_model_at_the_top_resource() -> None:
    s = sampler(LINE)
    obs = []
    for n, x in enumerate(np.linspace(0.0, 1.0, 21)):
        good = 0.4 <= x <= 0.6
        # Trials on the left were stopped at the first rung with bad scores; the good ones
        # went on. A model of the top rung alone would know nothing about the left.
        for r in (1.0, 3.0, 9.0) if good else (1.0,):
            obs.append(Observation(n, {"x": float(x)}, r, 5 * (x - 0.5) ** 2 + 1.0 / r))
    s.observe(obs)
    model = s.fit()
    assert model is not None and model.has_resource
    mean, _ = model.predict_scores(np.array([[0.05], [0.5], [0.95]]))
    assert mean[1] < min(mean[0], mean[2]) - 0.3
    assert mean[1] == pytest.approx(1.0 / 9.0, abs=0.1)


def test_running_trials_are_believed_at_the_mean_and_push_suggestions_away() -> None:
    s = sampler(LINE)
    xs = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    s.observe([Observation(i, {"x": x}, 1.0, (x - 0.5) ** 2) for i, x in enumerate(xs)])
    first = s.suggest(6)
    free = s.fit()
    believer = s.fit(running=[first])
    assert free is not None and believer is not None
    at = unit(s, [first])
    m0, v0 = free.predict(at)
    m1, v1 = believer.predict(at)
    assert m1[0] == pytest.approx(m0[0], abs=1e-6)
    assert v1[0] < 1e-3 * v0[0]
    assert np.isfinite(free.log_ei(at)[1][0]) and believer.log_ei(at)[1][0] == -np.inf
    # Close by, EI falls too.
    near = at + 0.003
    assert believer.log_ei(near)[1][0] < free.log_ei(near)[1][0] - math.log(10)
    second = s.suggest(7, [first])
    assert abs(second["x"] - first["x"]) > 0.003


def test_the_warm_start_is_in_the_state_and_a_restored_sampler_continues_exactly() -> None:
    a = sampler(RICH, seed=4)
    space = a.space
    for n in range(15):
        p = a.suggest(n)
        a.observe([Observation(n, p, 1.0, math.log10(p["lr"]) ** 2 + p["dropout"])])
    state = json.loads(json.dumps(a.get_state(), allow_nan=False))
    theta = state["extra"]["theta"]
    assert len(theta) == len(space.names) + 2 and all(isinstance(v, float) for v in theta)
    b = sampler(RICH, seed=4)
    b.set_state(state)
    assert b.suggest(15) == a.suggest(15)
    # A warm start of another shape (the space changed) is ignored, not fatal.
    c = sampler(RICH, seed=4)
    c.set_state({**state, "extra": {"theta": [0.0, 1.0]}})
    space.validate(c.suggest(15))


def test_startup_is_random_and_bad_scores_do_not_break_the_model() -> None:
    s = sampler(LINE, n_startup=3)
    assert s.suggest(0) == s.space.sample(s.rng(0))
    s.observe(
        [
            Observation(0, {"x": 0.1}, 1.0, math.nan),
            Observation(1, {"x": 0.5}, 1.0, math.inf),
            Observation(2, {"x": 0.9}, 1.0, 0.3),
        ]
    )
    assert 0.0 <= s.suggest(3)["x"] <= 1.0
    only_bad = sampler(LINE, n_startup=1)
    only_bad.observe([Observation(0, {"x": 0.1}, 1.0, math.nan)])
    assert only_bad.fit() is None
    assert only_bad.suggest(1) == only_bad.space.sample(only_bad.rng(1))


def test_targets_are_standardised_with_diverged_runs_clipped() -> None:
    good = [float(v) for v in range(1, 13)]
    scores = np.array([*good, 1e9, math.nan, math.inf, -math.inf])
    targets = GPSampler.targets(scores)
    assert targets is not None
    y, mean, sd = targets
    assert np.all(np.isfinite(y)) and y.mean() == pytest.approx(0.0, abs=1e-12)
    assert y.std() == pytest.approx(1.0)
    # The diverged run, NaN and +inf share the clipped worst value; -inf is the best score.
    assert y[12] == y[13] == y[14] == y.max() and y[15] == y[0] == y.min()
    q1, q3 = np.percentile([*good, 1e9, 1e9, 1e9, 1.0], [25, 75])
    assert mean + sd * y.max() == pytest.approx(q3 + 3 * (q3 - q1))
    assert mean + sd * y[:12] == pytest.approx(good)
    assert GPSampler.targets(np.array([math.nan, math.inf])) is None
    flat, _, _ = GPSampler.targets(np.full(4, 2.5)) or (None, 0, 0)
    assert flat is not None and np.all(flat == 0.0)


def test_the_warm_start_follows_the_resource_column_coming_and_going() -> None:
    s = sampler(LINE)  # one parameter: theta is [ls_x, (ls_resource), signal, noise]
    s.load_extra_state({"theta": [0.1, 0.2, 0.3]})
    with_resource = s._warm_start(2, 1.5)
    assert with_resource is not None and with_resource.tolist() == [0.1, 1.5, 0.2, 0.3]
    s.load_extra_state({"theta": [0.1, 1.5, 0.2, 0.3]})
    without = s._warm_start(1, 1.5)
    assert without is not None and without.tolist() == [0.1, 0.2, 0.3]
    s.load_extra_state({"theta": [0.1]})
    assert s._warm_start(1, 1.5) is None
    s.load_extra_state({})
    assert s.extra_state() == {}


def test_a_negative_trial_number_is_refused() -> None:
    with pytest.raises(ValueError, match="trial number"):
        sampler(LINE).suggest(-1)
