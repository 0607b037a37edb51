"""Samplers: one contract every sampler passes, then what random and grid search each promise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.spaces import (
    NESTED_SPACE,
    REFERENCE_SPACE,
    brute_force_grid,
    check_config,
    key,
    space_of,
    spaces,
)
from tuneyard.scheduler.samplers import GridSampler, RandomSampler, Sampler, make_sampler
from tuneyard.scheduler.samplers.tpe import TPESampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import Param, SamplerSpec

# A grid-able version of the reference space: the continuous floats get grid points.
REFERENCE_GRID: dict[str, Any] = {
    **REFERENCE_SPACE,
    "lr": {**REFERENCE_SPACE["lr"], "grid_points": 4},
    "units": {"type": "int", "low": 16, "high": 64, "step": 16},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "step": 0.33},
}


def build(kind: str, space: dict[str, Any], seed: int) -> tuple[Sampler, SearchSpace]:
    params = space_of(space, kind)
    search = SearchSpace(params)
    return make_sampler(SamplerSpec.model_validate({"type": kind}), search, seed), search


# -- the contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random", "grid"])
@pytest.mark.parametrize("space", [REFERENCE_GRID, NESTED_SPACE], ids=["reference", "nested"])
def test_sampler_contract(kind: str, space: dict[str, Any]) -> None:
    sampler, search = build(kind, space, seed=11)
    twin, _ = build(kind, space, seed=11)
    params = space_of(space, kind)
    n = min(50, sampler.capacity() or 50)
    configs = [sampler.suggest(i) for i in range(n)]
    # Deterministic in (seed, number): another instance, or any order of asking, agrees.
    assert [twin.suggest(i) for i in reversed(range(n))] == configs[::-1]
    for config in configs:
        check_config(params, config)
        assert search.validate(config) == config
    other, _ = build(kind, space, seed=12)
    assert [other.suggest(i) for i in range(n)] != configs
    with pytest.raises(ValueError, match="trial number"):
        sampler.suggest(-1)
    with pytest.raises(ValueError, match="seed"):
        build(kind, space, seed=-1)


def test_make_sampler_picks_by_type() -> None:
    search = SearchSpace(space_of(REFERENCE_GRID, "grid"))
    assert isinstance(make_sampler(SamplerSpec(type="random"), search, 1), RandomSampler)
    assert isinstance(make_sampler(SamplerSpec(type="grid"), search, 1), GridSampler)
    assert isinstance(make_sampler(SamplerSpec(), search, 1), TPESampler)


# -- random search ---------------------------------------------------------------------------


def test_random_is_seeded_per_trial() -> None:
    sampler, _ = build("random", REFERENCE_SPACE, seed=7)
    assert sampler.capacity() is None
    configs = [sampler.suggest(i) for i in range(200)]
    assert len({c["lr"] for c in configs}) == 200  # different numbers, different draws
    assert sampler.suggest(123) == configs[123]
    # Trial n draws from default_rng([seed, n]) and nothing else.
    search = SearchSpace(space_of(REFERENCE_SPACE))
    assert configs[5] == search.sample(np.random.default_rng([7, 5]))
    # Global numpy state plays no part.
    np.random.seed(0)
    first = sampler.suggest(9)
    np.random.seed(1)
    assert sampler.suggest(9) == first


def test_random_covers_conditional_branches() -> None:
    sampler, _ = build("random", NESTED_SPACE, seed=3)
    configs = [sampler.suggest(i) for i in range(300)]
    models = {c["model"] for c in configs}
    assert models == {"svm", "tree", "knn"}
    assert any("k" in c for c in configs) and any("gamma" in c for c in configs)


# -- grid search -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**63 - 1))
def test_grid_visits_every_point_once(space: dict[str, Param], seed: int) -> None:
    search = SearchSpace(space)
    sampler = GridSampler(search, seed)
    n = sampler.capacity()
    assert n == search.grid_size()
    visited = [key(sampler.suggest(i)) for i in range(n)]
    assert len(set(visited)) == n
    assert set(visited) == brute_force_grid(space)
    with pytest.raises(ValueError, match="grid exhausted"):
        sampler.suggest(n)


@pytest.mark.parametrize("space", [REFERENCE_GRID, NESTED_SPACE], ids=["reference", "nested"])
def test_grid_order_is_a_seeded_shuffle(space: dict[str, Any]) -> None:
    search = SearchSpace(space_of(space, "grid"))
    n = search.grid_size()
    in_order = [search.grid_point(i) for i in range(n)]
    orders = []
    for seed in range(5):
        sampler = GridSampler(search, seed)
        order = [sampler.suggest(i) for i in range(n)]
        assert sorted(map(key, order)) == sorted(map(key, in_order))
        assert order != in_order
        orders.append(tuple(map(key, order)))
    assert len(set(orders)) == 5


def test_tiny_grids() -> None:
    one = GridSampler(SearchSpace(space_of({"x": {"type": "int", "low": 4, "high": 4}})), 0)
    assert one.capacity() == 1 and one.suggest(0) == {"x": 4}
    with pytest.raises(ValueError, match=r"grid exhausted: all 1 grid points"):
        one.suggest(1)
    two = GridSampler(
        SearchSpace(space_of({"b": {"type": "categorical", "choices": [True, 1]}})), 5
    )
    got = [two.suggest(i)["b"] for i in range(2)]
    assert sorted(map(repr, got)) == ["1", "True"]


def test_a_million_point_grid_suggests_without_enumerating() -> None:
    space = {
        "a": {"type": "int", "low": 0, "high": 99},
        "b": {"type": "float", "low": 0.0, "high": 1.0, "grid_points": 100},
        "c": {"type": "categorical", "choices": list(range(100))},
    }
    sampler, search = build("grid", space, seed=2024)
    assert sampler.capacity() == 1_000_000
    configs = [sampler.suggest(i) for i in (0, 1, 999_998, 999_999)]
    assert len({key(c) for c in configs}) == 4
    for c in configs:
        assert search.validate(c) == c


def test_a_continuous_space_has_no_grid() -> None:
    search = SearchSpace(space_of(REFERENCE_SPACE))
    with pytest.raises(ValueError, match="lr: a grid needs a step or grid_points"):
        GridSampler(search, 0)
