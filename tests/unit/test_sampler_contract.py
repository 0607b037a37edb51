"""The contract every sampler meets: suggestions lie in the space (steps, log bounds, `when`
conditions), the same seed gives the same sequence, model state round-trips through JSON,
and parallel suggestions spread out instead of repeating or collapsing."""

from __future__ import annotations

import json
import math
from itertools import combinations
from typing import Any

import numpy as np
import pytest

from tuneyard.scheduler.samplers.base import ModelSampler, Observation, StateError, make_sampler
from tuneyard.scheduler.samplers.registry import SAMPLERS
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

MODEL = ["tpe", "gp", "mfgp", "cmaes", "genetic", "bohb", "nsga2", "motpe"]
ALL = sorted(SAMPLERS)
RESOURCES = (1.0, 3.0, 9.0)

RICH = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.05},
    "layers": {"type": "int", "low": 1, "high": 4},
    "units": {"type": "int", "low": 16, "high": 1024, "log": True},
    "batch": {"type": "int", "low": 16, "high": 256, "step": 16},
    "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"solver": "sgd"}},
    "beta2": {"type": "float", "low": 0.9, "high": 0.9999, "when": {"solver": "adam"}},
}
DISCRETE = {
    "a": {"type": "categorical", "choices": ["x", "y", "z"]},
    "b": {"type": "int", "low": 1, "high": 4},
}
CONTINUOUS = {
    "x": {"type": "float", "low": -5.0, "high": 5.0},
    "y": {"type": "float", "low": 1e-3, "high": 10.0, "log": True},
}


def space_of(params: dict[str, Any], sampler: str = "random") -> SearchSpace:
    spec = StudySpec.model_validate({"name": "c", "space": params, "sampler": {"type": sampler}})
    return SearchSpace(spec.space)


def build(kind: str, params: dict[str, Any], seed: int = 7, **options: Any) -> Any:
    spec = SamplerSpec(type=kind, **options)  # type: ignore[arg-type]
    return make_sampler(spec, space_of(params), seed)


def score(params: dict[str, Any], resource: float) -> float:
    """A synthetic objective over RICH: best near lr=1e-2, momentum=0.9, adam."""
    lr = params.get("lr", 1e-2)
    m = params.get("momentum", 0.9)
    base = (math.log10(lr) + 2) ** 2 + (m - 0.9) ** 2 * 4
    base += 0.3 if params.get("solver") == "sgd" else 0.0
    return base + 1.0 / resource


def suggest(s: Any, n: int, running: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    if isinstance(s, ModelSampler):
        return s.suggest(n, running or [])
    return dict(s.suggest(n))


def feed(s: Any, n: int, params: dict[str, Any], fn: Any = score) -> None:
    """Observations as ASHA leaves them: every trial at the first rung, and at the next rungs
    when its first-rung score is in the top third (ninth) of those seen so far."""
    if not isinstance(s, ModelSampler):
        return
    first = fn(params, RESOURCES[0])
    seen = getattr(s, "_contract_firsts", [])
    seen.append(first)
    s._contract_firsts = seen  # type: ignore[attr-defined]
    rank = sum(v < first for v in seen) / len(seen)
    top = RESOURCES[: 1 + (rank < 1 / 3) + (rank < 1 / 9)]
    s.observe([Observation(n, params, r, fn(params, r)) for r in top])


def run(s: Any, n_trials: int, params: dict[str, Any] = RICH) -> list[dict[str, Any]]:
    out = []
    cap = s.capacity()
    for n in range(n_trials if cap is None else min(n_trials, cap)):
        p = suggest(s, n)
        out.append(p)
        feed(s, n, p)
    return out


@pytest.mark.parametrize("kind", ALL)
def test_every_suggestion_lies_in_the_space(kind: str) -> None:
    params = DISCRETE if kind == "grid" else RICH
    space = space_of(params)
    for p in run(build(kind, params), 40, params):
        assert space.validate(p) == p, p
        if "nesterov" in p:
            assert p["solver"] == "sgd"
        if "beta2" in p:
            assert p["solver"] == "adam"
        if "dropout" in p:
            assert abs(p["dropout"] / 0.05 - round(p["dropout"] / 0.05)) < 1e-9
        if "batch" in p:
            assert p["batch"] % 16 == 0
        if "lr" in p:
            assert 1e-5 <= p["lr"] <= 1.0


@pytest.mark.parametrize("kind", ALL)
def test_the_same_seed_gives_the_same_sequence(kind: str) -> None:
    params = DISCRETE if kind == "grid" else RICH
    assert run(build(kind, params, seed=3), 30, params) == run(
        build(kind, params, seed=3), 30, params
    )


@pytest.mark.parametrize("kind", [k for k in ALL if k != "grid"])
def test_another_seed_gives_another_sequence(kind: str) -> None:
    assert run(build(kind, RICH, seed=3), 12) != run(build(kind, RICH, seed=4), 12)


@pytest.mark.parametrize("kind", MODEL)
def test_state_round_trips_through_json(kind: str) -> None:
    a = build(kind, RICH)
    run(a, 25)
    state = json.loads(json.dumps(a.get_state(), allow_nan=False))
    assert state["kind"] == kind and isinstance(state["version"], int)
    b = build(kind, RICH)
    b.set_state(state)
    b._contract_firsts = list(a._contract_firsts)  # what feed() remembers, not the sampler
    for n in range(25, 35):
        pa, pb = a.suggest(n, []), b.suggest(n, [])
        assert pa == pb
        feed(a, n, pa)
        feed(b, n, pb)


@pytest.mark.parametrize("kind", MODEL)
def test_state_of_another_version_is_refused(kind: str) -> None:
    s = build(kind, RICH)
    state = s.get_state()
    with pytest.raises(StateError):
        s.set_state({**state, "version": state["version"] + 1})


@pytest.mark.parametrize("kind", MODEL)
def test_observations_in_batches_teach_what_one_batch_does(kind: str) -> None:
    obs = []
    for n in range(30):
        p = space_of(RICH).sample(np.random.default_rng([1, n]))
        obs += [Observation(n, p, r, score(p, r)) for r in RESOURCES[: 1 + n % 3]]
    one, many = build(kind, RICH), build(kind, RICH)
    one.observe(obs)
    for i in range(0, len(obs), 7):
        many.observe(obs[i : i + 7])
    assert one.suggest(30, []) == many.suggest(30, [])


@pytest.mark.parametrize("kind", MODEL)
def test_parallel_suggestions_never_repeat_while_distinct_configurations_remain(
    kind: str,
) -> None:
    s = build(kind, DISCRETE)
    tried = []
    for n in range(6):  # some history, so model-based proposals are in play
        p = s.suggest(n, [])
        s.observe([Observation(n, p, 1.0, float(n))])
        tried.append(p)
    running: list[dict[str, Any]] = []
    for i in range(6):  # 6 more workers ask while nothing finishes: 12 configurations in all
        running.append(s.suggest(6 + i, running))
    seen = tried + running
    keys = [tuple(sorted(p.items())) for p in seen]
    assert len(set(keys)) == len(keys), seen


@pytest.mark.parametrize("kind", MODEL)
def test_parallel_suggestions_do_not_collapse_onto_one_point(kind: str) -> None:
    s = build(kind, CONTINUOUS)
    space = space_of(CONTINUOUS)
    for n in range(20):
        p = s.suggest(n, [])
        s.observe([Observation(n, p, 1.0, (p["x"] - 1) ** 2 + math.log(p["y"]) ** 2)])
    running: list[dict[str, Any]] = []
    for i in range(8):
        running.append(s.suggest(20 + i, running))
    points = [space.to_unit(p) for p in running]
    closest = min(float(np.linalg.norm(a - b)) for a, b in combinations(points, 2))
    assert closest > 1e-3, running


@pytest.mark.parametrize("kind", MODEL)
def test_a_model_based_sampler_beats_random_search_on_a_smooth_objective(kind: str) -> None:
    def bowl(p: dict[str, Any], r: float) -> float:
        return (p["x"] - 1.5) ** 2 + (math.log10(p["y"]) - 0.5) ** 2 + 0.1 / r

    def best_of(k: str, seed: int) -> float:
        s = build(k, CONTINUOUS, seed=seed)
        vals = []
        for n in range(60):
            p = suggest(s, n)
            vals.append(bowl(p, 9.0))
            feed(s, n, p, bowl)
        return float(np.mean(sorted(vals)[:5]))

    seeds = range(3)
    model = np.mean([best_of(kind, sd) for sd in seeds])
    rand = np.mean([best_of("random", sd) for sd in seeds])
    assert model < rand, (model, rand)
