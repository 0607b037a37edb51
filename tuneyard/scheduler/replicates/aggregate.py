"""A trial's value at a resource level from its replicates (folds, seeds) there.

The value is the mean or the median of the replicates that reached the level; the spread kept
with it is the sample standard deviation (``ddof=1``, as cross-validation reports give it) and
the standard error of the mean, ``std / sqrt(n)``, which samplers may treat as the value's
noise. With one replicate the spread is unknown and reported as 0, never NaN, so a value
can always be stored and drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import get_args

import numpy as np

from tuneyard.spec.evaluation import Aggregation as How

HOWS: tuple[How, ...] = get_args(How)


@dataclass(frozen=True)
class Aggregate:
    """The aggregate of ``n`` replicate values: ``value`` (mean or median), ``std`` and
    ``stderr`` (of the mean, also when ``value`` is the median)."""

    value: float
    std: float
    stderr: float
    n: int


def finite_values(values: Iterable[float], what: str = "replicate values") -> np.ndarray:
    """The values as a float array; a NaN or an infinity is refused with a ValueError.

    A diverged replicate fails its trial upstream (a NaN is data there, with its reason); by
    the time values are aggregated or raced, one would only hide that failure.
    """
    array = np.asarray(list(values), dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{what}: expected a flat sequence of numbers")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{what}: {array[bad][0]} at position {int(np.argmax(bad))} is not finite")
    return array


def aggregate(values: Iterable[float], how: How = "mean") -> Aggregate:
    """The aggregate of the replicates that reached one resource level.

    Raises ValueError on no values, on a value that is not finite, or on an unknown ``how``.
    """
    if how not in HOWS:
        raise ValueError(f"aggregate: {how!r} is not one of {', '.join(HOWS)}")
    array = finite_values(values)
    n = len(array)
    if n == 0:
        raise ValueError("aggregate: no replicate values")
    value = float(np.mean(array) if how == "mean" else np.median(array))
    std = float(np.std(array, ddof=1)) if n > 1 else 0.0
    return Aggregate(value=value, std=std, stderr=std / math.sqrt(n), n=n)
