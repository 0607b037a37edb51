"""The search space: sampling, grid enumeration and the unit-cube encoding of configurations.

Pure functions of the study definition. Randomness comes in as a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tuneyard.spec import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    grid_size,
    topological_order,
)


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a categorical choice must match in type as well as value.
    return type(a) is type(b) and a == b


def _clean(x: float) -> float:
    return float(round(x, 12))


class SearchSpace:
    def __init__(self, space: Mapping[str, Param]) -> None:
        self.params: dict[str, Param] = dict(space)
        self.names: list[str] = topological_order(self.params)
        self._parents = [
            n for n in self.names if any(n in p.when_values() for p in self.params.values())
        ]

    # -- conditions ----------------------------------------------------------------------
    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        for parent, values in self.params[name].when_values().items():
            if parent not in params or not any(_same(params[parent], v) for v in values):
                return False
        return True

    # -- random sampling -----------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.names:
            if self.is_active(name, out):
                out[name] = self._sample_one(self.params[name], rng)
        return out

    @staticmethod
    def _sample_one(p: Param, rng: np.random.Generator) -> Any:
        if isinstance(p, CategoricalParam):
            return p.choices[int(rng.integers(len(p.choices)))]
        if isinstance(p, IntParam):
            if p.log:
                x = math.exp(rng.uniform(math.log(p.low - 0.5 + 1e-9), math.log(p.high + 0.5)))
                return int(min(p.high, max(p.low, round(x))))
            k = int(rng.integers((p.high - p.low) // p.step + 1))
            return p.low + k * p.step
        if p.step is not None:
            n = math.floor((p.high - p.low) / p.step + 1e-9)
            k = int(rng.integers(n + 1))
            return _clean(min(p.high, p.low + k * p.step))
        if p.log:
            return float(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
        return float(rng.uniform(p.low, p.high))

    # -- the grid ------------------------------------------------------------------------
    def grid_size(self) -> int:
        return grid_size(self.params)

    def _grid_values(self, p: Param) -> list[Any]:
        if isinstance(p, CategoricalParam):
            return list(p.choices)
        if isinstance(p, IntParam):
            return list(range(p.low, p.high + 1, p.step))
        n = p.grid_size()
        if n is None:
            raise ValueError("a float parameter needs a step or grid_points for a grid")
        if p.step is not None:
            return [_clean(min(p.high, p.low + k * p.step)) for k in range(n)]
        if n == 1:
            return [math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2]
        if p.log:
            return [float(v) for v in np.geomspace(p.low, p.high, n)]
        return [float(v) for v in np.linspace(p.low, p.high, n)]

    def grid_point(self, index: int) -> dict[str, Any]:
        """The ``index``-th configuration of the grid, decoded without enumerating it.

        Branches are the assignments of the categorical parents named in conditions; inside a
        branch the active non-parent parameters form a mixed-radix number.
        """
        size = self.grid_size()
        if not 0 <= index < size:
            raise ValueError(f"grid index {index} is outside [0, {size})")
        remaining = index
        for assign in self._branches(0, {}):
            free = [n for n in self.names if n not in self._parents and self.is_active(n, assign)]
            values = [self._grid_values(self.params[n]) for n in free]
            count = math.prod(len(v) for v in values)
            if remaining >= count:
                remaining -= count
                continue
            point = dict(assign)
            for name, vals in zip(reversed(free), reversed(values), strict=True):
                remaining, digit = divmod(remaining, len(vals))
                point[name] = vals[digit]
            return {n: point[n] for n in self.names if n in point}
        raise ValueError(f"grid index {index} is outside the grid")

    def _branches(self, i: int, assign: dict[str, Any]) -> Any:
        if i == len(self._parents):
            yield assign
            return
        name = self._parents[i]
        if not self.is_active(name, assign):
            yield from self._branches(i + 1, assign)
            return
        p = self.params[name]
        assert isinstance(p, CategoricalParam)  # the spec only allows categorical parents
        for choice in p.choices:
            yield from self._branches(i + 1, {**assign, name: choice})

    # -- validation and encoding -----------------------------------------------------------
    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check a user-given configuration; return it in the space's order."""
        unknown = set(params) - set(self.params)
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        out: dict[str, Any] = {}
        for name in self.names:
            active = self.is_active(name, out)
            if not active:
                if name in params:
                    raise ValueError(
                        f"{name}: given, but its condition {self.params[name].when} does not hold"
                    )
                continue
            if name not in params:
                raise ValueError(f"{name}: missing")
            out[name] = self._check_value(name, self.params[name], params[name])
        return out

    @staticmethod
    def _check_value(name: str, p: Param, v: Any) -> Any:
        if isinstance(p, CategoricalParam):
            for c in p.choices:
                if _same(c, v):
                    return c
            raise ValueError(f"{name}: {v!r} is not one of {p.choices}")
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{name}: expected a number, got {v!r}")
        if isinstance(p, IntParam):
            if not float(v).is_integer():
                raise ValueError(f"{name}: expected an integer, got {v!r}")
            v = int(v)
        if not (p.low <= v <= p.high):
            raise ValueError(f"{name}: {v!r} is outside [{p.low}, {p.high}]")
        return v if isinstance(p, IntParam) else float(v)

    def to_unit(self, params: Mapping[str, Any]) -> np.ndarray:
        """A configuration as a point of [0, 1]^d (inactive dimensions at 0.5)."""
        x = np.full(len(self.names), 0.5)
        for i, name in enumerate(self.names):
            if name in params:
                x[i] = self._encode(self.params[name], params[name])
        return x

    def from_unit(self, x: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, name in enumerate(self.names):
            if self.is_active(name, out):
                out[name] = self._decode(self.params[name], float(np.clip(x[i], 0.0, 1.0)))
        return out

    @staticmethod
    def _encode(p: Param, v: Any) -> float:
        if isinstance(p, CategoricalParam):
            k = next(i for i, c in enumerate(p.choices) if _same(c, v))
            return (k + 0.5) / len(p.choices)
        lo, hi = float(p.low), float(p.high)
        if hi == lo:
            return 0.5
        if p.log:
            return (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (float(v) - lo) / (hi - lo)

    @staticmethod
    def _decode(p: Param, u: float) -> Any:
        if isinstance(p, CategoricalParam):
            return p.choices[min(len(p.choices) - 1, int(u * len(p.choices)))]
        lo, hi = float(p.low), float(p.high)
        x = (
            math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
            if p.log
            else lo + u * (hi - lo)
        )
        if isinstance(p, IntParam):
            k = round((x - p.low) / p.step)
            return int(min(p.high, max(p.low, p.low + k * p.step)))
        if isinstance(p, FloatParam) and p.step is not None:
            k = round((x - p.low) / p.step)
            return _clean(min(p.high, max(p.low, p.low + k * p.step)))
        return float(min(hi, max(lo, x)))
