"""The resource levels (rungs) of successive halving, shared by SHA, Hyperband and ASHA."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def geometric_rungs(min_resource: float, max_resource: float, eta: int) -> tuple[float, ...]:
    """``r, r*eta, r*eta^2, ...`` below ``max_resource``, then ``max_resource`` itself.

    With r=1, R=27, eta=3 the rungs are 1, 3, 9, 27. When R is not r times a power of eta the
    last rung is R (r=1, R=10: 1, 3, 9, 10), so no trial ever trains past ``max_resource``.
    """
    if min_resource <= 0 or max_resource < min_resource or eta < 2:
        raise ValueError("need 0 < min_resource <= max_resource and reduction_factor >= 2")
    out: list[float] = []
    k = 0
    while True:
        r = round(min_resource * eta**k, 9)
        if r >= max_resource * (1 - 1e-12):
            break
        out.append(r)
        k += 1
    out.append(float(max_resource))
    return tuple(out)


def linear_rungs(start: float, interval: float, max_resource: float) -> tuple[float, ...]:
    """Evaluation points of the median stopping rule: start, start+interval, ..., then max."""
    n = max(0, math.floor((max_resource - start) / interval + 1e-9))
    out = [
        round(start + i * interval, 9) for i in range(n + 1) if start + i * interval < max_resource
    ]
    out.append(float(max_resource))
    return tuple(out)


@dataclass(frozen=True)
class Ladder:
    resources: tuple[float, ...]
    _index: dict[float, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {r: i for i, r in enumerate(self.resources)})

    @property
    def top(self) -> int:
        return len(self.resources) - 1

    @property
    def max_resource(self) -> float:
        return self.resources[-1]

    def crossed(self, after_rung: int, step: float) -> list[int]:
        """Rungs above ``after_rung`` whose resource ``step`` has reached."""
        return [
            k
            for k in range(after_rung + 1, len(self.resources))
            if step >= self.resources[k] - 1e-9
        ]
