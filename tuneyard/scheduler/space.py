"""The search space: random sampling, grid decoding, validation and the unit-cube encoding.

A :class:`SearchSpace` wraps the ``space`` of a study definition (:mod:`tuneyard.spec`). It is
pure: no I/O, no clock, and randomness only from the ``numpy.random.Generator`` passed in, so
the samplers built on it are deterministic in (seed, trial number).

Conditions. ``when: {solver: sgd}`` makes a parameter active only where its categorical
parents take one of the listed values. Matching compares type and value, so ``True`` does not
match ``1``. A configuration holds the active parameters only, in :attr:`SearchSpace.names`
order (parents before the parameters they gate).

Values. Floats come back as Python floats, ints as Python ints, and categoricals as the very
objects in ``choices``. Float grid points (``low + k*step`` and the ``grid_points`` spacing)
are computed in decimal arithmetic from the numbers as written, then rounded once to a float.
A step of 0.1 thus gives 0.3, not 0.30000000000000004, whatever the size of the range or the
step. A fixed ``round(x, 12)`` would wipe out steps below 1e-12 and keep the noise on large
values.

The grid. A conditional parameter exists only in some branches, so the grid is a sum, over
the assignments of the condition parents, of the product of the sizes of the parameters
active in that branch (as in :func:`tuneyard.spec.grid_size`). ``grid_point(i)`` finds the
branch that holds ``i`` and decodes the rest of ``i`` as a mixed-radix number. It never
enumerates the grid.

The unit cube. ``to_unit`` and ``from_unit`` map a configuration to and from ``[0, 1]^d`` for
model-based samplers:

- continuous floats map by position, in log space when ``log``;
- discrete parameters map to equal bins: value k of n sits at the bin centre
  ``(k + 0.5) / n``;
- log ints map by position in log space over ``[low - 0.5, high + 0.5]``, so each integer owns
  the stretch that rounds to it.

``sample`` draws through the same code, so ``from_unit`` of a uniform point has the
distribution of ``sample``. Inactive dimensions encode as 0.5.
"""

from __future__ import annotations

import math
import numbers
import operator
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from decimal import Decimal, localcontext
from functools import cached_property
from typing import Any

import numpy as np

from tuneyard.spec import (
    CategoricalParam,
    FloatParam,
    GridIndex,
    IntParam,
    Param,
    Scalar,
    topological_order,
)

# Significant digits of the decimal grid arithmetic: enough for low + k*step with low and
# step at 17 digits each, and far finer than a float for the logs and exponentials of log grids.
_DECIMAL_DIGITS = 40


def _key(v: Any) -> tuple[type, Any] | None:
    """How a categorical value is looked up: by type and value (``True == 1`` in Python), or
    None when it cannot be hashed (so it is no choice)."""
    try:
        hash(v)
    except TypeError:
        return None
    return (type(v), v)


def _number(v: Any) -> int | float | None:
    """``v`` as a Python int or float, or None when it is not a real number (a bool is not)."""
    if isinstance(v, bool | np.bool_):
        return None
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return None


def _dec(x: float) -> Decimal:
    # The shortest repr is the number as the user wrote it: 0.1, not 0.1000000000000000055...
    return Decimal(repr(float(x)))


def _lerp(lo: float, hi: float, u: float) -> float:
    width = hi - lo
    # With low=-1e308, high=1e308 the width overflows a float; half of it does not.
    x = lo + u * width if math.isfinite(width) else 2.0 * (lo / 2 + u * (hi / 2 - lo / 2))
    return min(hi, max(lo, x))


def _unlerp(lo: float, hi: float, v: float) -> float:
    if hi <= lo:
        return 0.5
    width = hi - lo
    u = (v - lo) / width if math.isfinite(width) else (v / 2 - lo / 2) / (hi / 2 - lo / 2)
    return min(1.0, max(0.0, u))


def _bin(u: float, n: int) -> int:
    """Which of n equal bins of [0, 1] holds u."""
    return min(n - 1, max(0, math.floor(u * n)))


def _randbelow(rng: np.random.Generator, n: int) -> int:
    """A uniform integer in [0, n); exact also past numpy's int64 (the spec bounds no int)."""
    if n < 2**63:
        return int(rng.integers(n))
    bits = (n - 1).bit_length()
    size = (bits + 7) // 8
    while True:  # rejection: each try succeeds with probability > 1/2
        k = int.from_bytes(rng.bytes(size), "little") >> (8 * size - bits)
        if k < n:
            return k


class _Dim(ABC):
    """One parameter: its grid, its random draw, its check and its unit-interval code."""

    # Number of grid values; None for a float with neither step nor grid_points.
    count: int | None

    @abstractmethod
    def value(self, k: int) -> Any:
        """The k-th grid value, 0 <= k < count."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any: ...

    @abstractmethod
    def check(self, v: Any) -> Any:
        """``v`` normalised, or a ValueError (the caller prefixes the parameter's name)."""

    @abstractmethod
    def encode(self, v: Any) -> float: ...

    @abstractmethod
    def decode(self, u: float) -> Any: ...


class _Categorical(_Dim):
    def __init__(self, p: CategoricalParam) -> None:
        self.choices: list[Scalar] = list(p.choices)
        self.count = len(self.choices)
        # Lookups by key, not scans: a choice list may be long and is read per configuration.
        self._at = p.choice_index()
        self._numbers: dict[int | float, list[int]] = {}
        for k, c in enumerate(self.choices):
            x = _number(c)
            if x is not None:
                self._numbers.setdefault(x, []).append(k)

    def value(self, k: int) -> Any:
        return self.choices[k]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.choices[_randbelow(rng, len(self.choices))]

    def index(self, v: Any) -> int:
        key = _key(v)
        if key is not None and key in self._at:
            return self._at[key]
        # JSON clients may send 1 for the choice 1.0, Python ones a numpy scalar: equal numbers
        # match across int and float (preferring the same kind), never across bool.
        x = _number(v)
        if x is not None:
            equal = self._numbers.get(x)
            if equal:
                same_kind = [k for k in equal if type(self.choices[k]) is type(x)]
                return (same_kind or equal)[0]
        raise ValueError(f"{v!r} is not one of the choices {self.choices!r}")

    def check(self, v: Any) -> Any:
        return self.choices[self.index(v)]

    def encode(self, v: Any) -> float:
        return (self.index(v) + 0.5) / len(self.choices)

    def decode(self, u: float) -> Any:
        return self.choices[_bin(u, len(self.choices))]


class _Int(_Dim):
    def __init__(self, p: IntParam) -> None:
        self.low, self.high, self.step, self.log = p.low, p.high, p.step, p.log
        self.n = p.grid_size()
        self.count = self.n
        if self.log:
            # Each integer owns the stretch of log space that rounds to it (the spec refuses
            # log with low <= 0, so low - 0.5 > 0).
            self.log_lo = math.log(self.low - 0.5)
            self.log_hi = math.log(self.high + 0.5)

    def value(self, k: int) -> int:
        return self.low + k * self.step

    def sample(self, rng: np.random.Generator) -> int:
        if self.log:
            return self.decode(float(rng.random()))
        return self.value(_randbelow(rng, self.n))

    def check(self, v: Any) -> int:
        x = _number(v)
        if x is None or (isinstance(x, float) and not x.is_integer()):
            raise ValueError(f"expected an integer, got {v!r}")
        x = int(x)
        if not self.low <= x <= self.high:
            raise ValueError(f"{x} is outside [{self.low}, {self.high}]")
        if (x - self.low) % self.step:
            raise ValueError(f"{x} is not on the grid {self.low} + k*{self.step}")
        return x

    def encode(self, v: Any) -> float:
        if self.log:
            return _unlerp(self.log_lo, self.log_hi, math.log(v))
        return ((v - self.low) // self.step + 0.5) / self.n

    def decode(self, u: float) -> int:
        if self.log:
            x = math.exp(_lerp(self.log_lo, self.log_hi, u))
            return min(self.high, max(self.low, math.floor(x + 0.5)))
        return self.value(_bin(u, self.n))


class _Float(_Dim):
    def __init__(self, p: FloatParam) -> None:
        self.low, self.high, self.log, self.step = float(p.low), float(p.high), p.log, p.step
        self.count = p.grid_size()
        if self.log:
            self.log_lo, self.log_hi = math.log(self.low), math.log(self.high)

    def value(self, k: int) -> float:
        n = self.count
        if n is None:
            raise ValueError("a continuous float has no grid; give it a step or grid_points")
        if self.low == self.high:
            return self.low
        with localcontext(prec=_DECIMAL_DIGITS):
            lo, hi = _dec(self.low), _dec(self.high)
            if self.step is not None:
                x = lo + k * _dec(self.step)
            else:
                # grid_points evenly spaced from low to high, a single point at the midpoint:
                # the weighted mean (w_lo*lo + w_hi*hi) / (w_lo + w_hi), divided last so that
                # e.g. the second of 4 points from -1 to 2 is exactly 0.
                w_lo, w_hi = (1, 1) if n == 1 else (n - 1 - k, k)
                if self.log:
                    x = ((w_lo * lo.ln() + w_hi * hi.ln()) / (w_lo + w_hi)).exp()
                else:
                    x = (w_lo * lo + w_hi * hi) / (w_lo + w_hi)
        return min(self.high, max(self.low, float(x)))

    def sample(self, rng: np.random.Generator) -> float:
        if self.step is not None and self.count is not None:
            return self.value(_randbelow(rng, self.count))
        return self.decode(float(rng.random()))

    def check(self, v: Any) -> float:
        x = _number(v)
        if x is None:
            raise ValueError(f"expected a number, got {v!r}")
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"expected a finite number, got {v!r}")
        if self.step is None or self.count is None:
            if not self.low <= x <= self.high:
                raise ValueError(f"{x!r} is outside [{self.low!r}, {self.high!r}]")
            return x
        # A stepped value may carry float noise (0.1 + 0.2 = 0.30000000000000004), a few ulps
        # of the range's magnitude: accept it, and return the clean grid value.
        tol = max(1e-9 * self.step, 8 * math.ulp(max(abs(self.low), abs(self.high))))
        if not self.low - tol <= x <= self.high + tol:
            raise ValueError(f"{x!r} is outside [{self.low!r}, {self.high!r}]")
        k = round((x - self.low) / self.step)
        if not 0 <= k < self.count or abs(x - self.value(k)) > tol:
            raise ValueError(f"{x!r} is not on the grid {self.low!r} + k*{self.step!r}")
        return self.value(k)

    def encode(self, v: Any) -> float:
        if self.step is not None and self.count is not None:
            k = min(self.count - 1, max(0, round((v - self.low) / self.step)))
            return (k + 0.5) / self.count
        if self.log:
            return _unlerp(self.log_lo, self.log_hi, math.log(v))
        return _unlerp(self.low, self.high, v)

    def decode(self, u: float) -> float:
        if self.step is not None and self.count is not None:
            return self.value(_bin(u, self.count))
        if self.log:
            return min(self.high, max(self.low, math.exp(_lerp(self.log_lo, self.log_hi, u))))
        return _lerp(self.low, self.high, u)


def _dim(name: str, p: Param) -> _Dim:
    try:
        if isinstance(p, CategoricalParam):
            return _Categorical(p)
        if isinstance(p, IntParam):
            return _Int(p)
        return _Float(p)
    except OverflowError:  # FloatParam.grid_size() of a step far below the range
        raise ValueError(f"{name}: the step is too small for the range") from None


class SearchSpace:
    """The parameters of a study, with their conditions, as something to sample and decode."""

    def __init__(self, space: Mapping[str, Param]) -> None:
        self.params: dict[str, Param] = dict(space)
        for name, p in self.params.items():
            for parent in p.when_values():
                if not isinstance(self.params.get(parent), CategoricalParam):
                    raise ValueError(
                        f"{name}: its condition names {parent!r}, "
                        "which is not a categorical parameter of this space"
                    )
        self.names: list[str] = topological_order(self.params)
        # Each condition as the set of values it admits: membership is a lookup, not a scan.
        self._when = {
            n: {parent: {(type(v), v) for v in values} for parent, values in w.items()}
            for n, p in self.params.items()
            for w in (p.when_values(),)
        }
        self._dims = {n: _dim(n, p) for n, p in self.params.items()}

    # -- conditions ------------------------------------------------------------------------
    def is_active(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether every condition of ``name`` holds in ``params`` (type-and-value equality)."""
        try:
            when = self._when[name]
        except KeyError:
            raise ValueError(f"unknown parameter {name!r}") from None
        return all(
            parent in params and _key(params[parent]) in values for parent, values in when.items()
        )

    # -- random sampling -------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One random configuration: the active parameters, in ``names`` order."""
        out: dict[str, Any] = {}
        for name in self.names:
            if self.is_active(name, out):
                out[name] = self._dims[name].sample(rng)
        return out

    # -- the grid --------------------------------------------------------------------------
    def grid_size(self) -> int:
        """Number of grid points, as :func:`tuneyard.spec.grid_size` counts them. Raises
        ValueError for a continuous float parameter, and :class:`tuneyard.spec.GridTooComplex`
        (a ValueError) when the conditions cross too often to count."""
        for name in self.names:
            if self._dims[name].count is None:
                raise ValueError(
                    f"{name}: a grid needs a step or grid_points for a continuous float parameter"
                )
        return self._grid.size

    @cached_property
    def _grid(self) -> GridIndex:
        return GridIndex(self.params)

    def grid_point(self, index: int) -> dict[str, Any]:
        """The ``index``-th configuration of the grid, decoded without enumerating the grid.

        Indices count through the branches (assignments of the condition parents) in order,
        and inside a branch through the parameters active there as a mixed-radix number whose
        last parameter varies fastest (see :class:`tuneyard.spec.GridIndex`).
        """
        index = operator.index(index)
        size = self.grid_size()
        if not 0 <= index < size:
            raise ValueError(f"grid index {index} is outside [0, {size})")
        chosen, digits = self._grid.point(index)
        # Positions are in topological order, as ``names`` is: sorted, they list the
        # configuration in ``names`` order.
        at = {**chosen, **dict(digits)}
        names = self._grid.names
        return {names[i]: self._dims[names[i]].value(at[i]) for i in sorted(at)}

    # -- validation ------------------------------------------------------------------------
    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Check a user-given configuration, naming the first bad parameter in a ValueError.

        Returns it normalised: in ``names`` order, ints as int, floats as float (stepped ones
        snapped to their grid value), categoricals as the choice objects themselves.
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"a configuration maps parameter names to values, got {params!r}")
        unknown = sorted(repr(k) for k in params if k not in self._dims)
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
        out: dict[str, Any] = {}
        for name in self.names:
            if not self.is_active(name, out):
                if name in params:
                    raise ValueError(
                        f"{name}: given, but inactive here: "
                        f"its condition {self.params[name].when} does not hold"
                    )
                continue
            if name not in params:
                raise ValueError(f"{name}: missing (it is active in this configuration)")
            try:
                out[name] = self._dims[name].check(params[name])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return out

    # -- the unit cube ---------------------------------------------------------------------
    def to_unit(self, params: Mapping[str, Any], check: bool = True) -> np.ndarray:
        """A (valid) configuration as a point of [0, 1]^d, d = len(names); inactive dims 0.5.

        ``check=False`` skips the validation, for configurations known to be valid: those this
        space produced, or stored ones, validated when they were stored. Validating is most of
        the cost, and a valid configuration encodes the same either way."""
        config = self.validate(params) if check else params
        x = np.full(len(self.names), 0.5)
        for i, name in enumerate(self.names):
            if name in config:
                x[i] = self._dims[name].encode(config[name])
        return x

    def unit_points(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Valid configurations (not validated again) as the rows of an (n, d) matrix."""
        x = np.full((len(configs), len(self.names)), 0.5)
        for i, name in enumerate(self.names):
            encode = self._dims[name].encode
            for row, config in enumerate(configs):
                if name in config:
                    x[row, i] = encode(config[name])
        return x

    def from_unit(self, x: np.ndarray) -> dict[str, Any]:
        """The configuration at a point of [0, 1]^d (coordinates outside are clipped)."""
        u = np.asarray(x, dtype=float)
        if u.shape != (len(self.names),):
            raise ValueError(f"expected a point of shape ({len(self.names)},), got {u.shape}")
        if not np.all(np.isfinite(u)):
            raise ValueError("the point has a non-finite coordinate")
        out: dict[str, Any] = {}
        for i, name in enumerate(self.names):
            if self.is_active(name, out):
                out[name] = self._dims[name].decode(float(min(1.0, max(0.0, u[i]))))
        return out
