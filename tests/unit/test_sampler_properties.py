"""Property tests over generated search spaces (floats with log scales and steps, stepped and
log ints, categoricals, parameters conditional on one or two parents): every sampler's
suggestions lie in the space, and the same seed gives the same sequence."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.spaces import spaces
from tuneyard.scheduler.samplers.base import ModelSampler, Observation, make_sampler
from tuneyard.scheduler.samplers.registry import SAMPLERS
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import Param, SamplerSpec

KINDS = sorted(k for k in SAMPLERS if k != "grid")  # grid: tests/unit/test_samplers.py
TRIALS = 14


def score(space: SearchSpace, params: dict[str, Any]) -> float:
    """Any deterministic function of the configuration: distance to the cube's centre."""
    return float(sum((u - 0.4) ** 2 for u in space.to_unit(params)))


def sequence(kind: str, space: SearchSpace, seed: int) -> list[dict[str, Any]]:
    sampler = make_sampler(SamplerSpec(type=kind), space, seed)  # type: ignore[arg-type]
    out: list[dict[str, Any]] = []
    for n in range(TRIALS):
        if isinstance(sampler, ModelSampler):
            p = sampler.suggest(n, out[-2:])  # the two before are still running
            sampler.observe([Observation(n, p, 1.0, score(space, p))])
        else:
            p = dict(sampler.suggest(n))
        out.append(p)
    return out


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space=spaces(discrete=False), seed=st.integers(0, 2**32))
def test_suggestions_lie_in_any_space_and_repeat_with_the_seed(
    space: dict[str, Param], kind: str, seed: int
) -> None:
    s = SearchSpace(space)
    first = sequence(kind, s, seed)
    for p in first:
        assert s.validate(p) == p  # in range, on its step, normalised, conditions hold
        for name, value in p.items():
            param = space[name]
            if getattr(param, "log", False):
                assert value > 0
            step = getattr(param, "step", None)
            if getattr(param, "type", "") == "float" and step:
                k = round((value - param.low) / step)  # type: ignore[union-attr]
                on_grid = param.low + k * step  # type: ignore[union-attr]
                assert math.isclose(value, on_grid, rel_tol=1e-12, abs_tol=1e-12)
        for name in space:
            assert (name in p) == s.is_active(name, p)
    assert sequence(kind, s, seed) == first
