"""The search space: sampled values obey their parameters, the grid decodes to exactly the
configurations a brute-force enumeration finds, validation names the bad parameter, and the
unit-cube encoding round-trips."""

from __future__ import annotations

import math
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
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import (
    CategoricalParam,
    FloatParam,
    Param,
    grid_size,
)

# -- an independent model of the rules, for the checks -------------------------------------


# -- random small spaces ---------------------------------------------------------------------


# -- names and conditions ----------------------------------------------------------------------


def test_names_put_condition_parents_first() -> None:
    s = SearchSpace(space_of(REFERENCE_SPACE))
    assert s.names == list(REFERENCE_SPACE)
    nested = SearchSpace(space_of(NESTED_SPACE))
    for child, parent in [("gamma", "kernel"), ("kernel", "model"), ("k", "flag")]:
        assert nested.names.index(parent) < nested.names.index(child)


def test_is_active_compares_type_and_value() -> None:
    s = SearchSpace(space_of(NESTED_SPACE))
    assert s.is_active("k", {"model": "knn", "flag": True})
    assert not s.is_active("k", {"model": "knn", "flag": 1})
    assert not s.is_active("k", {"model": "knn", "flag": 1.0})
    assert not s.is_active("k", {"flag": True})  # the other parent is missing
    assert s.is_active("model", {})
    with pytest.raises(ValueError, match="nope"):
        s.is_active("nope", {})


def test_a_condition_on_a_non_categorical_is_refused() -> None:
    space = space_of(REFERENCE_SPACE)
    bad = {**space, "x": CategoricalParam(type="categorical", choices=[1], when={"layers": 1})}
    with pytest.raises(ValueError, match=r"x: .*'layers'"):
        SearchSpace(bad)


# -- random sampling -------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(space=spaces(discrete=False), seed=st.integers(0, 2**63 - 1))
def test_samples_obey_their_parameters_and_conditions(space: dict[str, Param], seed: int) -> None:
    s = SearchSpace(space)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        config = s.sample(rng)
        check_config(space, config)
        assert s.validate(config) == config


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63 - 1))
def test_reference_samples_are_valid_and_clean(seed: int) -> None:
    space = space_of(REFERENCE_SPACE)
    s = SearchSpace(space)
    rng = np.random.default_rng(seed)
    for _ in range(50):
        config = s.sample(rng)
        check_config(space, config)
        assert ("nesterov" in config) == (config["solver"] == "sgd")
        # A step of 0.01 gives two decimals: 0.3, never 0.30000000000000004.
        assert repr(config["momentum"]) == repr(round(config["momentum"], 2))


def test_sampling_is_deterministic_in_the_generator() -> None:
    s = SearchSpace(space_of(NESTED_SPACE))
    a = [s.sample(np.random.default_rng([3, n])) for n in range(20)]
    b = [s.sample(np.random.default_rng([3, n])) for n in range(20)]
    assert a == b
    assert len({key(c) for c in a}) == 20


def test_log_scales_are_uniform_in_log_space() -> None:
    s = SearchSpace(space_of(REFERENCE_SPACE))
    rng = np.random.default_rng(12345)
    configs = [s.sample(rng) for _ in range(4000)]
    lr = np.log10([c["lr"] for c in configs])
    # log10 lr uniform on [-4, 0]: median -2 (the geometric mean 1e-2), a quarter per decade.
    assert abs(np.median(lr) + 2) < 0.15
    per_decade = np.histogram(lr, bins=4, range=(-4, 0))[0] / len(lr)
    assert np.all(np.abs(per_decade - 0.25) < 0.04)
    units = np.array([c["units"] for c in configs])
    assert abs(np.log(np.median(units)) - np.log(math.sqrt(16 * 512))) < 0.15
    assert units.min() == 16 and units.max() == 512
    layers = np.bincount([c["layers"] for c in configs], minlength=4)[1:] / len(configs)
    assert np.all(np.abs(layers - 1 / 3) < 0.04)
    sgd = np.mean([c["solver"] == "sgd" for c in configs])
    assert abs(sgd - 0.5) < 0.04


def test_huge_int_ranges_sample_exactly() -> None:
    s = SearchSpace(space_of({"n": {"type": "int", "low": 0, "high": 10**30, "step": 7}}))
    rng = np.random.default_rng(0)
    values = [s.sample(rng)["n"] for _ in range(200)]
    assert all(type(v) is int and 0 <= v <= 10**30 and v % 7 == 0 for v in values)
    assert max(values) > 10**28


@pytest.mark.parametrize(
    ("param", "words"),
    [
        ({"low": -1e308, "high": 1e308}, "high - low must be a finite number"),
        ({"low": 0.0, "high": 1e300, "step": 1e-300}, "too small for the range"),
    ],
)
def test_ranges_a_float_cannot_span_are_refused_by_the_spec(
    param: dict[str, float], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        FloatParam.model_validate({"type": "float", **param})


def test_steps_count_with_a_relative_tolerance() -> None:
    assert FloatParam(type="float", low=-1.0, high=-0.9, step=0.1).grid_size() == 2
    assert FloatParam(type="float", low=0, high=2.3, step=1e-9).grid_size() == 2_300_000_001


# -- the grid --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "space",
    [
        NESTED_SPACE,
        {k: v for k, v in REFERENCE_SPACE.items() if k not in ("lr", "momentum", "units")},
        {"x": {"type": "float", "low": 2.0, "high": 2.0, "grid_points": 4}},
        {"x": {"type": "int", "low": 5, "high": 5}},
    ],
    ids=["nested", "reference-discrete", "float-single-point", "int-single-point"],
)
def test_grid_points_are_the_brute_force_grid(space: dict[str, Any]) -> None:
    params = space_of(space, "grid")
    s = SearchSpace(params)
    n = s.grid_size()
    assert n == grid_size(params)
    points = [s.grid_point(i) for i in range(n)]
    keys = [key(p) for p in points]
    assert len(set(keys)) == n
    assert set(keys) == brute_force_grid(params)
    for p in points:
        check_config(params, p)


@settings(max_examples=80, deadline=None)
@given(space=spaces())
def test_grid_point_is_a_bijection_onto_the_brute_force_grid(space: dict[str, Param]) -> None:
    s = SearchSpace(space)
    n = s.grid_size()
    assert n == grid_size(space)
    points = [s.grid_point(i) for i in range(n)]
    keys = {key(p) for p in points}
    assert len(keys) == n
    assert keys == brute_force_grid(space)
    for p in points:
        check_config(space, p)
        assert s.validate(p) == p


@pytest.mark.parametrize(
    ("param", "values"),
    [
        ({"low": 0.0, "high": 1.0, "grid_points": 11}, [i / 10 for i in range(11)]),
        ({"low": -1.0, "high": 2.0, "grid_points": 4}, [-1.0, 0.0, 1.0, 2.0]),
        ({"low": 1e-4, "high": 1.0, "log": True, "grid_points": 5}, [1e-4, 1e-3, 1e-2, 0.1, 1.0]),
        ({"low": 1e-4, "high": 1.0, "log": True, "grid_points": 1}, [0.01]),
        ({"low": 0.0, "high": 1.0, "grid_points": 1}, [0.5]),
        ({"low": 0.0, "high": 0.3, "step": 0.1}, [0.0, 0.1, 0.2, 0.3]),
        ({"low": 0.0, "high": 3e-14, "step": 1e-14}, [0.0, 1e-14, 2e-14, 3e-14]),
        ({"low": 1e6, "high": 1e6 + 0.3, "step": 0.1}, [1e6, 1000000.1, 1000000.2, 1000000.3]),
        ({"low": 0.0, "high": 1.0, "step": 0.3}, [0.0, 0.3, 0.6, 0.9]),
    ],
)
def test_float_grid_values_are_the_decimal_ones(param: dict[str, Any], values: list[float]) -> None:
    s = SearchSpace(space_of({"x": {"type": "float", **param}}, "grid"))
    assert [s.grid_point(i)["x"] for i in range(s.grid_size())] == values


def test_grid_order_is_branch_then_mixed_radix() -> None:
    s = SearchSpace(
        space_of(
            {
                "a": {"type": "categorical", "choices": ["x", "y"]},
                "b": {"type": "int", "low": 0, "high": 2, "when": {"a": "x"}},
                "c": {"type": "int", "low": 0, "high": 1},
            },
            "grid",
        )
    )
    assert [s.grid_point(i) for i in range(s.grid_size())] == [
        {"a": "x", "b": 0, "c": 0},
        {"a": "x", "b": 0, "c": 1},
        {"a": "x", "b": 1, "c": 0},
        {"a": "x", "b": 1, "c": 1},
        {"a": "x", "b": 2, "c": 0},
        {"a": "x", "b": 2, "c": 1},
        {"a": "y", "c": 0},
        {"a": "y", "c": 1},
    ]


def test_grid_index_and_continuous_parameters_are_checked() -> None:
    s = SearchSpace(space_of(NESTED_SPACE, "grid"))
    n = s.grid_size()
    for bad in (-1, n):
        with pytest.raises(ValueError, match="outside"):
            s.grid_point(bad)
    continuous = SearchSpace(space_of(REFERENCE_SPACE))
    with pytest.raises(ValueError, match="lr: a grid needs a step or grid_points"):
        continuous.grid_size()


def test_a_large_grid_decodes_without_enumerating() -> None:
    s = SearchSpace(
        space_of(
            {
                "a": {"type": "int", "low": 0, "high": 99},
                "b": {"type": "float", "low": 0.0, "high": 1.0, "grid_points": 100},
                "c": {"type": "categorical", "choices": list(range(100))},
            },
            "grid",
        )
    )
    assert s.grid_size() == 1_000_000
    assert s.grid_point(0) == {"a": 0, "b": 0.0, "c": 0}
    assert s.grid_point(999_999) == {"a": 99, "b": 1.0, "c": 99}
    assert s.grid_point(123_456) == {"a": 12, "b": s.grid_point(3_400)["b"], "c": 56}


# -- validation ------------------------------------------------------------------------------

GOOD = {
    "lr": 0.01,
    "batch_size": 64,
    "layers": 2,
    "units": 100,
    "momentum": 0.9,
    "solver": "sgd",
    "nesterov": True,
}


def test_validate_accepts_and_normalises() -> None:
    s = SearchSpace(space_of(REFERENCE_SPACE))
    assert s.validate(GOOD) == GOOD
    # Shuffled keys come back in names order.
    assert list(s.validate(dict(reversed(GOOD.items())))) == s.names
    out = s.validate(
        {
            **GOOD,
            "lr": 1,  # an int for a float
            "layers": 3.0,  # an integral float for an int
            "units": np.int64(64),  # a numpy scalar
            "momentum": 0.1 + 0.2,  # float noise on a stepped value
        }
    )
    assert out["lr"] == 1.0 and type(out["lr"]) is float
    assert out["layers"] == 3 and type(out["layers"]) is int
    assert out["units"] == 64 and type(out["units"]) is int
    assert repr(out["momentum"]) == "0.3"
    adam = {k: v for k, v in GOOD.items() if k != "nesterov"} | {"solver": "adam"}
    assert s.validate(adam) == adam


def test_validate_matches_categoricals_by_type() -> None:
    s = SearchSpace(
        space_of({"x": {"type": "categorical", "choices": [1, True, 0.5, 2.0, None, "1"]}})
    )
    for choice in [1, True, 0.5, 2.0, None, "1"]:
        out = s.validate({"x": choice})["x"]
        assert type(out) is type(choice) and out == choice
    assert type(s.validate({"x": 2})["x"]) is float  # a JSON client's 2 for 2.0
    assert type(s.validate({"x": 1.0})["x"]) is int
    for bad in [False, 0, "2", 3]:
        with pytest.raises(ValueError, match=r"x: .* is not one of the choices"):
            s.validate({"x": bad})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": "0.1"}, r"lr: expected a number, got '0.1'"),
        ({"lr": True}, r"lr: expected a number"),
        ({"lr": 2.0}, r"lr: 2.0 is outside \[0.0001, 1.0\]"),
        ({"lr": 0.0}, r"lr: 0.0 is outside"),
        ({"lr": float("nan")}, r"lr: expected a finite number"),
        ({"layers": 2.5}, r"layers: expected an integer, got 2.5"),
        ({"layers": True}, r"layers: expected an integer"),
        ({"layers": 4}, r"layers: 4 is outside \[1, 3\]"),
        ({"units": 8}, r"units: 8 is outside \[16, 512\]"),
        ({"momentum": 0.905}, r"momentum: 0.905 is not on the grid 0.0 \+ k\*0.01"),
        ({"momentum": -0.01}, r"momentum: -0.01 is outside"),
        ({"batch_size": 48}, r"batch_size: 48 is not one of the choices"),
        ({"nesterov": 1}, r"nesterov: 1 is not one of the choices \[True, False\]"),
        ({"solver": "adam"}, r"nesterov: given, but inactive"),
        ({"solver": "rmsprop"}, r"solver: 'rmsprop' is not one of the choices"),
        ({"dropout": 0.1}, r"unknown parameter\(s\): 'dropout'"),
    ],
)
def test_validate_refuses_naming_the_parameter(changes: dict[str, Any], message: str) -> None:
    s = SearchSpace(space_of(REFERENCE_SPACE))
    with pytest.raises(ValueError, match=message):
        s.validate({**GOOD, **changes})


def test_validate_refuses_missing_parameters() -> None:
    s = SearchSpace(space_of(REFERENCE_SPACE))
    for name in GOOD:
        with pytest.raises(ValueError, match=f"{name}: missing"):
            s.validate({k: v for k, v in GOOD.items() if k != name})
    with pytest.raises(ValueError, match="maps parameter names"):
        s.validate([("lr", 0.1)])  # type: ignore[arg-type]


def test_int_steps_are_checked() -> None:
    s = SearchSpace(space_of({"n": {"type": "int", "low": 1, "high": 9, "step": 4}}))
    assert [s.validate({"n": v})["n"] for v in (1, 5, 9)] == [1, 5, 9]
    with pytest.raises(ValueError, match=r"n: 3 is not on the grid 1 \+ k\*4"):
        s.validate({"n": 3})


def test_float_steps_allow_float_noise_only() -> None:
    s = SearchSpace(
        space_of({"x": {"type": "float", "low": 1e6, "high": 1000000.0000003, "step": 1e-7}})
    )
    assert s.validate({"x": 1e6 + 1e-7})["x"] == 1000000.0000001
    assert s.validate({"x": 1000000.0000003})["x"] == 1000000.0000003
    with pytest.raises(ValueError, match=r"x: .* is not on the grid"):
        s.validate({"x": 1e6 + 1.5e-7})


# -- the unit cube ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(space=spaces(discrete=False), seed=st.integers(0, 2**32))
def test_unit_cube_round_trips(space: dict[str, Param], seed: int) -> None:
    s = SearchSpace(space)
    rng = np.random.default_rng(seed)
    for _ in range(10):
        config = s.sample(rng)
        x = s.to_unit(config)
        assert x.shape == (len(s.names),)
        assert np.all((x >= 0) & (x <= 1))
        for i, name in enumerate(s.names):
            if name not in config:
                assert x[i] == 0.5
        back = s.from_unit(x)
        assert list(back) == list(config)
        for name, v in config.items():
            p = space[name]
            if isinstance(p, FloatParam) and p.step is None:
                assert type(back[name]) is float
                assert math.isclose(back[name], v, rel_tol=1e-9, abs_tol=1e-12)
            else:  # discrete and stepped parameters come back exactly
                assert type(back[name]) is type(v) and back[name] == v
        # Any point of the cube decodes to a valid configuration.
        check_config(space, s.from_unit(rng.random(len(s.names))))


def test_unit_cube_encoding_of_the_reference() -> None:
    s = SearchSpace(space_of(REFERENCE_SPACE))
    x = s.to_unit(GOOD)
    assert x[s.names.index("lr")] == pytest.approx(0.5)  # 1e-2 is halfway in log space
    assert x[s.names.index("batch_size")] == pytest.approx(0.5)  # bin centre of the 3rd of 5
    assert x[s.names.index("layers")] == pytest.approx(0.5)
    assert x[s.names.index("nesterov")] == pytest.approx(0.25)
    adam = {k: v for k, v in GOOD.items() if k != "nesterov"} | {"solver": "adam"}
    assert s.to_unit(adam)[s.names.index("nesterov")] == 0.5
    assert s.from_unit(np.zeros(len(s.names)))["momentum"] == 0.0
    assert s.from_unit(np.ones(len(s.names)))["momentum"] == 0.99
    assert s.from_unit(np.full(len(s.names), 2.0)) == s.from_unit(np.ones(len(s.names)))
    with pytest.raises(ValueError, match="shape"):
        s.from_unit(np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        s.from_unit(np.full(len(s.names), np.nan))
    with pytest.raises(ValueError, match="lr: "):
        s.to_unit({**GOOD, "lr": 5.0})
