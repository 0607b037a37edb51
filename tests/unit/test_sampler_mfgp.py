"""The multi-fidelity GP sampler: every rung result is a row of the fit, and what a trial showed
at low resources informs the model's prediction at the top one."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tuneyard.scheduler.samplers.base import Observation
from tuneyard.scheduler.samplers.gp import GPSampler
from tuneyard.scheduler.samplers.mfgp import MultiFidelityGPSampler, _CurveObjective, basis
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

LINE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
PLANE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "y": {"type": "float", "low": 0.0, "high": 1.0},
}
RUNGS = (1.0, 3.0, 9.0, 27.0)


def space_of(params: dict[str, Any]) -> SearchSpace:
    return SearchSpace(StudySpec.model_validate({"name": "mfgp", "space": params}).space)


def mfgp(params: dict[str, Any] = LINE, seed: int = 0) -> MultiFidelityGPSampler:
    return MultiFidelityGPSampler(space_of(params), seed, SamplerSpec(type="mfgp"))


def curve(top: float, gap: float, resource: float) -> float:
    """A learning curve that falls to ``top`` at 27 epochs from ``top + gap`` at 1 epoch."""
    return top + gap * basis(np.log(resource) / np.log(27.0))


def test_every_rung_result_of_a_trial_is_a_row_of_the_fit() -> None:
    obs = [
        Observation(0, {"x": 0.1}, 1.0, 3.0),
        Observation(1, {"x": 0.6}, 1.0, 2.0),
        Observation(0, {"x": 0.1}, 3.0, 1.5),
        Observation(0, {"x": 0.1}, 9.0, 1.0),
    ]
    s = mfgp()
    s.observe(obs)
    numbers, x, resources, scores = s.fit_set()
    assert numbers == [0, 0, 0, 1]
    assert resources.tolist() == [1.0, 3.0, 9.0, 1.0]
    assert scores.tolist() == [3.0, 1.5, 1.0, 2.0]
    assert x[:, 0].tolist() == pytest.approx([0.1, 0.1, 0.1, 0.6])
    # The gp sampler keeps one row per trial, its latest.
    g = GPSampler(space_of(LINE), 0, SamplerSpec(type="gp"))
    g.observe(obs)
    assert g.fit_set()[0] == [0, 1]


def test_low_rung_results_place_the_optimum_at_the_top_resource() -> None:
    """Thirty trials stopped at the first rung cover the line; the five that went on to the
    top were all far from the optimum (x = 0.3). The top of the curves is known only there, yet
    the model, seeing that the ranking at 1 epoch holds at 27 on those five, predicts the best
    top result near 0.3: the first rung's evidence reached the top resource."""
    s = mfgp()
    obs = []
    xs = np.linspace(0.0, 1.0, 30)
    for n, x in enumerate(xs):
        obs.append(Observation(n, {"x": float(x)}, 1.0, curve((x - 0.3) ** 2, 1.0, 1.0)))
    for k, x in enumerate((0.65, 0.75, 0.85, 0.92, 1.0)):
        n = 30 + k
        for r in RUNGS:
            obs.append(Observation(n, {"x": x}, r, curve((x - 0.3) ** 2, 1.0, r)))
    s.observe(obs)
    model = s.fit()
    assert model is not None
    grid = np.linspace(0.0, 1.0, 201)[:, None]
    mean, _ = model.predict_scores(grid)
    assert abs(float(grid[np.argmin(mean), 0]) - 0.3) < 0.08
    # And predicted at the top: about (x - 0.3)^2 there, not the 1-epoch value (1 higher).
    assert float(mean.min()) < 0.25


def test_curves_that_cross_are_told_apart_by_the_trials_that_went_on() -> None:
    """At 1 epoch small x looks best, but its curve barely falls; large x starts worse and ends
    best. Trials observed on several rungs show the crossing, and the model's top-resource
    prediction follows the top results, not the first rung's ranking."""
    s = mfgp()
    obs = []

    def top(x: float) -> float:
        return (x - 0.8) ** 2

    def gap(x: float) -> float:
        return 0.1 + 2.0 * x  # the larger x, the more it improves with training

    for n, x in enumerate(np.linspace(0.0, 1.0, 21)):
        rungs = RUNGS if n % 2 == 0 else RUNGS[:1]
        for r in rungs:
            obs.append(Observation(n, {"x": float(x)}, r, curve(top(x), gap(x), r)))
    s.observe(obs)
    # At the first rung the best trial is x = 0: 0.64 + 0.1 against 0.04 + 1.7 at 0.8.
    first = {o.params["x"]: o.score for o in obs if o.resource == 1.0}
    assert min(first, key=first.__getitem__) == 0.0
    model = s.fit()
    assert model is not None
    grid = np.linspace(0.0, 1.0, 201)[:, None]
    mean, _ = model.predict_scores(grid)
    assert abs(float(grid[np.argmin(mean), 0]) - 0.8) < 0.08


def test_the_objective_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    n, d = 14, 2
    x = rng.random((n, d))
    t = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=n)
    y = rng.normal(size=n)
    sq = np.stack([(x[:, c][:, None] - x[:, c][None, :]) ** 2 for c in range(d)])
    # a(x)'s groups, then b(x)'s: the same distances.
    objective = _CurveObjective(np.concatenate([sq, sq]), y, 1.5, None, basis(t))
    # a's lengthscales, b's, s_a, s_b, s_m, noise
    theta = np.array([-0.4, 0.3, 0.6, -0.8, 0.2, -0.5, -1.0, -3.0])
    value, grad = objective(theta)
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = 1e-6
        numeric = (objective(theta + step)[0] - objective(theta - step)[0]) / 2e-6
        assert grad[i] == pytest.approx(numeric, rel=1e-4, abs=1e-6), i
    assert np.isfinite(value)


def test_with_one_resource_it_is_the_gp_at_that_resource() -> None:
    """Before any trial passes the first rung there is no curve to learn: every row is at the
    top, the gap terms vanish, and the suggestions are well defined."""
    s = mfgp(PLANE, seed=4)
    rng = np.random.default_rng(0)
    for n in range(12):
        p = {"x": float(rng.random()), "y": float(rng.random())}
        s.observe([Observation(n, p, 1.0, (p["x"] - 0.5) ** 2 + (p["y"] - 0.5) ** 2)])
    model = s.fit()
    assert model is not None
    mean, _ = model.predict_scores(np.array([[0.5, 0.5], [0.0, 0.0]]))
    assert mean[0] < mean[1]
    params = s.suggest(12)
    assert set(params) == {"x", "y"}


def test_a_restored_sampler_suggests_what_the_original_would() -> None:
    s = mfgp(PLANE, seed=2)
    rng = np.random.default_rng(1)
    for n in range(14):
        p = {"x": float(rng.random()), "y": float(rng.random())}
        top = (p["x"] - 0.4) ** 2 + (p["y"] - 0.6) ** 2
        for r in RUNGS[: 1 + n % 3]:
            s.observe([Observation(n, p, r, curve(top, 0.5 + p["x"], r))])
    first = s.suggest(14, running=[{"x": 0.4, "y": 0.6}])
    state = json.loads(json.dumps(s.get_state()))
    again = mfgp(PLANE, seed=2)
    again.set_state(state)
    # The original has moved its warm start on: restore it from the state saved before.
    before = mfgp(PLANE, seed=2)
    before.set_state(state)
    assert again.suggest(15) == before.suggest(15)
    assert first != {"x": 0.4, "y": 0.6}


def test_suggestions_move_off_running_trials() -> None:
    s = mfgp(PLANE, seed=5)
    rng = np.random.default_rng(7)
    for n in range(16):
        p = {"x": float(rng.random()), "y": float(rng.random())}
        top = (p["x"] - 0.3) ** 2 + (p["y"] - 0.3) ** 2
        for r in RUNGS[: 1 + n % 4]:
            s.observe([Observation(n, p, r, curve(top, 1.0, r))])
    alone = s.suggest(16)
    with_running = s.suggest(16, running=[alone])
    assert with_running != alone
