"""Search spaces the tests share: reference spaces, a hypothesis strategy for spaces, a
brute-force grid to check the real one against, and definitions shaped like reported ones.
Test files import them from here, never from one another."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from tuneyard.spec import (
    CategoricalParam,
    IntParam,
    Param,
    StudySpec,
    topological_order,
)

# The reference study's space (examples/study.yaml).
REFERENCE_SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
    "layers": {"type": "int", "low": 1, "high": 3},
    "units": {"type": "int", "low": 16, "high": 512, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "step": 0.01},
    "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"solver": "sgd"}},
}


# Conditions two levels deep, a parent declared after its child, bool next to int choices,
# and every kind of float grid.
NESTED_SPACE: dict[str, Any] = {
    "gamma": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1, "when": {"kernel": "rbf"}},
    "model": {"type": "categorical", "choices": ["svm", "tree", "knn"]},
    "kernel": {"type": "categorical", "choices": ["rbf", "linear"], "when": {"model": "svm"}},
    "c": {"type": "float", "low": 1e-2, "high": 1e2, "log": True, "grid_points": 3},
    "depth": {"type": "int", "low": 2, "high": 8, "step": 3, "when": {"model": ["tree"]}},
    "flag": {"type": "categorical", "choices": [1, True, 1.0], "when": {"model": ["tree", "knn"]}},
    "k": {"type": "int", "low": 1, "high": 4, "log": True, "when": {"flag": True, "model": "knn"}},
    "alpha": {"type": "float", "low": 0.0, "high": 1.0, "grid_points": 3},
    "mid": {"type": "float", "low": 1e-4, "high": 1.0, "log": True, "grid_points": 1},
}


def space_of(space: dict[str, Any], sampler: str = "random") -> dict[str, Param]:
    """The validated space of a study with these parameters."""
    spec = {"name": "t", "space": space, "sampler": {"type": sampler}}
    return StudySpec.model_validate(spec).space


def holds(p: Param, config: Mapping[str, Any]) -> bool:
    def same(a: Any, b: Any) -> bool:
        return type(a) is type(b) and a == b

    return all(
        parent in config and any(same(config[parent], v) for v in vs)
        for parent, vs in p.when_values().items()
    )


def check_value(p: Param, v: Any) -> None:
    """Fail unless ``v`` is a value ``p`` allows, of the exact Python type."""
    if isinstance(p, CategoricalParam):
        assert any(type(v) is type(c) and v == c for c in p.choices), (v, p.choices)
    elif isinstance(p, IntParam):
        assert type(v) is int
        assert p.low <= v <= p.high
        assert (v - p.low) % p.step == 0
    else:
        assert type(v) is float
        assert p.low <= v <= p.high
        if p.step is not None:
            k = round((v - p.low) / p.step)
            assert 0 <= k < (p.grid_size() or 0)
            assert math.isclose(v, p.low + k * p.step, rel_tol=1e-12, abs_tol=1e-9 * p.step)


def check_config(space: Mapping[str, Param], config: Mapping[str, Any]) -> None:
    """Every active parameter present with an allowed value, no other, in topological order."""
    order = topological_order(dict(space))
    active: dict[str, Any] = {}
    for name in order:
        if holds(space[name], active):
            assert name in config, f"{name} is active but missing from {config}"
            check_value(space[name], config[name])
            active[name] = config[name]
        else:
            assert name not in config, f"{name} is inactive but present in {config}"
    assert list(config) == [n for n in order if n in config]


def grid_values(p: Param) -> list[Any]:
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    if isinstance(p, IntParam):
        return list(range(p.low, p.high + 1, p.step))
    n = p.grid_size()
    assert n is not None
    if p.step is not None:
        return [min(p.high, p.low + k * p.step) for k in range(n)]
    if p.low == p.high:
        return [p.low]
    if n == 1:
        return [math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2]
    spaced = np.geomspace(p.low, p.high, n) if p.log else np.linspace(p.low, p.high, n)
    return [float(v) for v in spaced]


def key(config: Mapping[str, Any]) -> tuple[tuple[str, str, Any], ...]:
    """A hashable form of a configuration: types kept apart, floats to 13 significant digits
    (grid floats here differ from numpy's linspace and geomspace by a few ulps at most)."""
    return tuple(
        sorted(
            (n, type(v).__name__, f"{v:.13g}" if isinstance(v, float) else v)
            for n, v in config.items()
        )
    )


def brute_force_grid(space: Mapping[str, Param]) -> set[tuple[tuple[str, str, Any], ...]]:
    """Every configuration of the grid: the full product, each cut to its active parameters."""
    order = topological_order(dict(space))
    found = set()
    for combo in itertools.product(*(grid_values(space[n]) for n in order)):
        full = dict(zip(order, combo, strict=True))
        config: dict[str, Any] = {}
        for name in order:
            if holds(space[name], config):
                config[name] = full[name]
        found.add(key(config))
    return found


CHOICES = st.lists(
    st.one_of(
        st.booleans(),
        st.integers(0, 2),
        st.sampled_from([0.5, 1.0, 2.0]),
        st.sampled_from(["a", "b", "c"]),
        st.none(),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda v: (type(v), v),
)


@st.composite
def param_dicts(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    if kind == "categorical":
        return {"type": "categorical", "choices": draw(CHOICES)}
    if kind == "int":
        low, count = draw(st.integers(-3, 5)), draw(st.integers(1, 4))
        if low >= 1 and draw(st.booleans()):
            return {"type": "int", "low": low, "high": low + count - 1, "log": True}
        step = draw(st.integers(1, 3))
        high = low + step * (count - 1) + draw(st.integers(0, step - 1))
        return {"type": "int", "low": low, "high": high, "step": step}
    if kind == "float_step":
        start = draw(st.sampled_from([-1.0, 0.0, 0.1, 1e-3, 1e6]))
        width = draw(st.sampled_from([0.1, 0.25, 0.01, 0.3, 1e-5]))
        end = start + width * draw(st.integers(0, 3))
        # The spec compares step with high - low in floats, refusing e.g. -1.0..-0.9 step 0.1.
        assume(not 0 < end - start < width)
        return {"type": "float", "low": start, "high": end, "step": width}
    start = draw(st.sampled_from([-1.0, 0.0, 1e-3, 2.0]))
    end = start + draw(st.sampled_from([0.0, 1.0, 3.0, 1e3]))
    p: dict[str, Any] = {"type": "float", "low": start, "high": end}
    if start > 0 and draw(st.booleans()):
        p["log"] = True
    if kind == "float_grid":
        p["grid_points"] = draw(st.integers(1, 4))
    return p


@st.composite
def spaces(draw: st.DrawFn, discrete: bool = True) -> dict[str, Param]:
    """Up to five parameters; some conditional on one or two earlier categoricals."""
    kinds = ["categorical", "categorical", "int", "float_step", "float_grid"]
    if not discrete:
        kinds.append("float")
    space: dict[str, Any] = {}
    parents: list[tuple[str, list[Any]]] = []
    for i in range(draw(st.integers(1, 5))):
        name = f"p{i}"
        kind = draw(st.sampled_from(kinds))
        p = draw(param_dicts(kind))
        conditional: bool = draw(st.booleans())
        if parents and conditional:
            when = {}
            for parent, choices in draw(
                st.lists(st.sampled_from(parents), min_size=1, max_size=2, unique_by=lambda t: t[0])
            ):
                values = draw(
                    st.lists(
                        st.sampled_from(choices),
                        min_size=1,
                        max_size=len(choices),
                        unique_by=lambda v: (type(v), v),
                    )
                )
                when[parent] = values[0] if len(values) == 1 else values
            p["when"] = when
        if kind == "categorical":
            parents.append((name, p["choices"]))
        space[name] = p
    # Declaration order need not be topological.
    order = draw(st.permutations(list(space)))
    return space_of({n: space[n] for n in order}, "grid" if discrete else "random")


def gated_ints(seed: int, *, high: int, binaries: int = 17, ints: int = 47, k: int = 3) -> dict:
    """The shape of the report: binary categoricals, each int gated by ``k`` of them."""
    rng = random.Random(seed)
    space: dict[str, Any] = {
        f"b{i}": {"type": "categorical", "choices": [True, False]} for i in range(binaries)
    }
    for j in range(ints):
        parents = rng.sample(range(binaries), k)
        space[f"x{j}"] = {
            "type": "int",
            "low": 0,
            "high": high,
            "when": {f"b{p}": rng.choice([True, False]) for p in parents},
        }
    return {"name": "gated", "space": space, "sampler": {"type": "grid"}}
