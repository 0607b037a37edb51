"""What the multi-objective samplers share: every trial's objective vectors, and their order.

The service feeds a multi-objective sampler the same :class:`Observation` s as any other, with
``scores`` (every objective, minimised) and ``violation`` (the total constraint violation, 0
when feasible). :class:`ObjectiveRecord` keeps them per trial and resource, as versioned JSON
beside the :class:`~tuneyard.scheduler.samplers.base.History` (which keeps the points and the
first objective as its score, for the checks against repeats).

Multi-fidelity, as the single-objective samplers rank trials (:meth:`History.ranked`): each
trial counts with its objectives at the highest resource it reached, and further-trained
trials come first, since the scheduler let them go on. Inside one such *level* (trials that
stopped at the same resource), trials are ordered by constraint-dominance fronts (Deb et al.
2002, https://doi.org/10.1109/4235.996017: feasible fronts first, then infeasible ones by
total violation), and inside a front by a tie-break: crowding distance for NSGA-II,
hypervolume contribution for MOTPE. With one objective and no constraint, the fronts are the
distinct scores in increasing order and every tie-break leaves equal scores to the trial
number: the order is exactly :meth:`History.ranked`'s.

A trial whose objectives are not all finite (a diverged run) counts as infeasible with an
infinite violation: after every trial with finite objectives at its level.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneyard.scheduler.multi import (
    crowding_distance,
    hypervolume,
    non_dominated_fronts,
    reference_point,
)
from tuneyard.scheduler.samplers.base import ModelSampler, Observation


def _encode(v: float) -> float | str:
    """A float as JSON allows it: non-finite values as the strings ``inf``, ``-inf``, ``nan``."""
    return v if math.isfinite(v) else str(v)


@dataclass(frozen=True)
class Table:
    """Per trial (in increasing number): its highest resource, objectives and violation there.
    Rows whose objectives are not all finite hold zeros and an infinite violation."""

    numbers: np.ndarray  # (n,) int
    resources: np.ndarray  # (n,)
    objectives: np.ndarray  # (n, m), finite
    violations: np.ndarray  # (n,), >= 0, inf for a failed row

    def __len__(self) -> int:
        return len(self.numbers)

    def levels(self) -> Iterator[np.ndarray]:
        """Row indexes grouped by resource, the highest first; each group in trial order."""
        for r in np.unique(self.resources)[::-1]:
            yield np.flatnonzero(self.resources == r)

    def fronts(self, rows: np.ndarray) -> list[np.ndarray]:
        """The constraint-dominance fronts of these rows, best first, each in trial order."""
        fronts = non_dominated_fronts(self.objectives[rows], self.violations[rows])
        return [rows[np.asarray(f, dtype=np.intp)] for f in fronts]


class ObjectiveRecord:
    """Per trial and resource: (objective vector, total violation)."""

    def __init__(self) -> None:
        self.trials: dict[int, dict[float, tuple[tuple[float, ...], float]]] = {}
        self.n_objectives: int | None = None

    def __len__(self) -> int:
        return len(self.trials)

    def check(self, batch: Sequence[Observation]) -> None:
        """Refuse, before anything is recorded, observations of inconsistent length or with a
        negative or NaN violation."""
        m = self.n_objectives
        for obs in batch:
            y = obs.objectives
            if not y:
                raise ValueError(f"trial {obs.number}: an observation needs an objective")
            if m is None:
                m = len(y)
            elif len(y) != m:
                raise ValueError(
                    f"trial {obs.number}: {len(y)} objectives where earlier observations had {m}"
                )
            if not float(obs.violation) >= 0:
                raise ValueError(f"trial {obs.number}: the violation must be >= 0 (0: feasible)")

    def extend(self, batch: Sequence[Observation]) -> None:
        self.check(batch)
        for obs in batch:
            y = obs.objectives
            self.n_objectives = len(y)
            self.trials.setdefault(int(obs.number), {})[float(obs.resource)] = (
                y,
                float(obs.violation),
            )

    def table(self) -> Table:
        """Every trial at its highest resource (see :class:`Table`)."""
        m = self.n_objectives or 1
        numbers = sorted(self.trials)
        n = len(numbers)
        resources = np.empty(n)
        y = np.zeros((n, m))
        v = np.zeros(n)
        for i, number in enumerate(numbers):
            by_resource = self.trials[number]
            r = max(by_resource)
            resources[i] = r
            y[i], v[i] = by_resource[r]
        failed = ~np.all(np.isfinite(y), axis=1)
        y[failed] = 0.0
        v[failed] = np.inf
        return Table(np.array(numbers, dtype=np.int64).reshape(n), resources, y, v)

    def to_json(self) -> dict[str, Any]:
        return {
            "objectives": self.n_objectives,
            "trials": [
                [n, [[r, [_encode(s) for s in y], _encode(v)] for r, (y, v) in sorted(rs.items())]]
                for n, rs in sorted(self.trials.items())
            ],
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        m = data.get("objectives")
        self.n_objectives = None if m is None else int(m)
        self.trials = {
            int(n): {float(r): (tuple(map(float, y)), float(v)) for r, y, v in entries}
            for n, entries in data.get("trials", [])
        }


class MultiObjective(ModelSampler):
    """A model-based sampler that also keeps an :class:`ObjectiveRecord` in its state. Mixed in
    before the single-objective sampler it extends: ``class NSGA2(MultiObjective, Genetic)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record = ObjectiveRecord()

    def observe(self, batch: Sequence[Observation]) -> None:
        self.record.check(batch)
        super().observe(batch)
        self.record.extend(batch)

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "objectives": self.record.to_json()}

    def load_extra_state(self, data: Mapping[str, Any]) -> None:
        super().load_extra_state(data)
        self.record.load_json(data.get("objectives", {}))


# -- orders --------------------------------------------------------------------------------------


def crowded_order(table: Table, size: int) -> list[int]:
    """NSGA-II's survivors: the best ``size`` rows by (level, front, crowding distance largest
    first, trial number), in that order. Fronts are filled whole; the last one is cut by its
    crowding distance, computed over the whole front. Levels and fronts past the cut are not
    sorted at all."""
    out: list[int] = []
    for level in table.levels():
        for members in table.fronts(level):
            crowd = crowding_distance(table.objectives[members])
            out.extend(members[np.lexsort((table.numbers[members], -crowd))].tolist())
            if len(out) >= size:
                return out[:size]
    return out


def hypervolume_order(table: Table, size: int) -> list[int]:
    """MOTPE's good set: the best ``size`` rows by (level, front), whole fronts first, the last
    front cut by :func:`select_by_hypervolume`. In that order."""
    out: list[int] = []
    for level in table.levels():
        for members in table.fronts(level):
            room = size - len(out)
            if len(members) <= room:
                out.extend(members.tolist())
            else:
                pick = select_by_hypervolume(table.objectives[members], room, members)
                out.extend(members[pick].tolist())
            if len(out) >= size:
                return out
    return out


def select_by_hypervolume(
    points: np.ndarray, k: int, keys: Sequence[int] | np.ndarray
) -> list[int]:
    """``k`` of the points whose union dominates a large hypervolume, greedily: each step adds
    the point that adds the most to what the points chosen so far dominate (ties to the
    smallest key), against :func:`reference_point` of all the points.

    The greedy choice is within 1 - 1/e of the best subset (the hypervolume is monotone and
    submodular), and lazy: a point's gain can only shrink as others join, so its last
    computed gain bounds it, and only the point on top of the heap is recomputed."""
    n = len(points)
    if k >= n:
        return list(range(n))
    if k <= 0:
        return []
    ref = reference_point(points)
    key = [int(x) for x in keys]
    boxes = np.prod(ref - points, axis=1)
    # Gains below this are rounding: a point the chosen ones cover gains exactly 0, so ties
    # among such points go by key.
    tiny = 1e-12 * float(boxes.max())
    heap = [(-float(boxes[i]), key[i], i) for i in range(n)]
    heapq.heapify(heap)
    chosen: list[int] = []
    volume = 0.0
    while len(chosen) < k:
        _, k_i, i = heapq.heappop(heap)
        gain = hypervolume(points[[*chosen, i]], ref) - volume
        gain = gain if gain > tiny else 0.0
        if not heap or (gain, -k_i) >= (-heap[0][0], -heap[0][1]):
            chosen.append(i)
            volume += gain
        else:
            heapq.heappush(heap, (-gain, k_i, i))
    return chosen
