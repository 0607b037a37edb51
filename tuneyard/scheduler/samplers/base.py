"""What a sampler offers, and the factory that picks one from the study definition.

Two kinds of samplers:

- **Stateless** (random, grid, sobol): trial n's configuration depends on the study's seed and
  n only, so two API replicas agree on trial n without sharing anything.
- **Model-based** (tpe, gp, mfgp, cmaes, genetic, bohb): they learn from results. The service feeds
  them :class:`Observation` s, the rung results and final values of the study's trials, in
  the order they were recorded, each once (the service keeps their watermark). Their
  state is versioned JSON, kept in the database, so any API replica continues where another
  stopped and a suggestion never re-reads the study.

Observations carry a *score*: the metric with the sign that makes lower better, at a
*resource* (the step it was reported at). Early-stopped trials thus still inform a model: at
the rung where they stopped.

Determinism: a model-based sampler draws its randomness for trial n from
``numpy.random.default_rng([seed, n])``, so the same seed and the same observations give the
same suggestions. ``running`` are the configurations of trials running now, which a sampler
uses to spread parallel workers out (e.g. TPE's constant liar); it converts them to the unit
cube once per suggestion (:class:`Running`).
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec


@dataclass(frozen=True)
class Observation:
    """A trial's score (lower is better) at a resource.

    A multi-objective study also gives ``scores``, every objective minimised (callers negate
    the maximised ones), and ``violation``, the trial's total constraint violation there (0:
    feasible). Single-objective samplers read ``score`` alone; the multi-objective ones read
    :attr:`objectives`, which is ``(score,)`` when ``scores`` is not given, so they also run
    on a single-objective study.
    """

    number: int
    params: Mapping[str, Any]
    resource: float
    score: float
    scores: tuple[float, ...] | None = None
    violation: float = 0.0
    # The variance of ``score`` when it is an estimate: a trial evaluated on folds or seeds is
    # observed at their mean, whose squared standard error this is. 0: the score as measured.
    noise: float = 0.0

    @property
    def objectives(self) -> tuple[float, ...]:
        """The minimised objective vector: ``scores``, or ``(score,)`` without them."""
        return (float(self.score),) if self.scores is None else tuple(map(float, self.scores))


class Sampler(Protocol):
    def suggest(self, number: int) -> dict[str, Any]:
        """The configuration of the trial with this (0-based) number."""
        ...

    def capacity(self) -> int | None:
        """How many distinct configurations it produces; None when unbounded."""
        ...


def point_key(point: np.ndarray | Sequence[float]) -> tuple[float, ...]:
    """A unit-cube point, rounded so that the same configuration always gives the same key."""
    return tuple(round(float(v), 9) for v in point)


class StateError(ValueError):
    """Stored sampler state that this version cannot read."""


def _rank_key(number: int, scores: Mapping[float, float]) -> tuple[float, float, int]:
    """A trial's place in :meth:`History.ranked`: further-trained first, then the score at its
    highest resource (NaN as the worst), then the trial number."""
    r = max(scores)
    s = scores[r]
    return (-r, s if s == s else math.inf, number)


class History:
    """The observations a model-based sampler has seen, compactly: per trial, its params (as
    a point of the unit cube) and its score at each resource it was observed at.

    Besides the trials, kept up to date as observations come in, so that a suggestion does
    not pass over the whole history: the trials in :meth:`ranked` order (a sorted list: a
    trial moves when it is observed at a higher resource), their numbers in order, their
    points as the rows of a numpy array that grows by doubling, and per resource the trials
    observed there. The best k then cost O(k + log n), and selecting points one numpy index.

    JSON round-trips through :meth:`to_json` / :meth:`load_json`."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        # number -> (unit-cube point, {resource: score})
        self.trials: dict[int, tuple[list[float], dict[float, float]]] = {}
        # The points tried, rounded (see point_key): kept up to date, so checking a proposal
        # for a repeat costs one lookup rather than a pass over the history.
        self.keys: set[tuple[float, ...]] = set()
        # (number, resource) -> the variance of that score, for the scores that are estimates
        # (Observation.noise > 0) only.
        self.noise: dict[tuple[int, float], float] = {}
        self._clear()

    def _clear(self) -> None:
        self._order: list[tuple[float, float, int]] = []  # _rank_key of every trial, sorted
        self._numbers: list[int] = []  # sorted
        self._points = np.empty((16, len(self.space.names)))
        self._row: dict[int, int] = {}  # number -> its row of _points
        # resource -> {number: score} and {number: row}, in the order trials reached it
        self._scores_at: dict[float, dict[int, float]] = {}
        self._rows_at: dict[float, dict[int, int]] = {}

    def _append_point(self, number: int, x: np.ndarray) -> None:
        row = len(self._row)
        if row == len(self._points):
            grown = np.empty((2 * row, self._points.shape[1]))
            grown[:row] = self._points
            self._points = grown
        self._points[row] = x
        self._row[number] = row

    def _observed_at(self, number: int, resource: float, score: float) -> None:
        self._scores_at.setdefault(resource, {})[number] = score
        self._rows_at.setdefault(resource, {})[number] = self._row[number]

    def add(self, obs: Observation) -> None:
        self._add(obs, ordered=True)

    def extend(self, batch: Sequence[Observation]) -> None:
        """:meth:`add` each observation. A batch large against the history (a sampler
        catching up) is ordered with one sort at the end rather than an insertion each."""
        ordered = len(batch) < max(64, len(self) // 8)
        try:
            for obs in batch:
                self._add(obs, ordered)
        finally:
            if not ordered:
                self._numbers.sort()
                self._order = sorted(_rank_key(n, sc) for n, (_, sc) in self.trials.items())

    def _add(self, obs: Observation, ordered: bool) -> None:
        number, resource, score = obs.number, float(obs.resource), float(obs.score)
        entry = self.trials.get(number)
        old = None
        if entry is None:
            x = self.space.to_unit(obs.params)
            entry = (x.tolist(), {})
            self.trials[number] = entry
            self.keys.add(point_key(entry[0]))
            self._append_point(number, x)
            if ordered:
                bisect.insort(self._numbers, number)
            else:
                self._numbers.append(number)
        elif ordered:
            old = _rank_key(number, entry[1])
        entry[1][resource] = score
        if obs.noise > 0:
            self.noise[(number, resource)] = float(obs.noise)
        else:
            self.noise.pop((number, resource), None)
        self._observed_at(number, resource, score)
        if ordered:
            key = _rank_key(number, entry[1])
            if key != old:
                if old is not None:
                    del self._order[bisect.bisect_left(self._order, old)]
                bisect.insort(self._order, key)

    def __len__(self) -> int:
        return len(self.trials)

    def latest(self) -> list[tuple[int, np.ndarray, float, float]]:
        """Per trial: (number, point, highest resource observed, score there)."""
        out = []
        for n, (x, scores) in self.trials.items():
            r = max(scores)
            out.append((n, np.asarray(x), r, scores[r]))
        return out

    def ranked(self) -> list[tuple[int, np.ndarray, float]]:
        """Trials best first: further-trained trials first (an early-stopped trial ranks below
        one that went on), then by score at their highest resource (NaN last), then by trial
        number. (number, point, score)"""
        out = []
        for neg_r, _, n in self._order:
            x, scores = self.trials[n]
            out.append((n, np.asarray(x), scores[-neg_r]))
        return out

    def ranked_numbers(self, start: int = 0, stop: int | None = None) -> list[int]:
        """The numbers of the trials from ``start`` to ``stop`` in :meth:`ranked` order."""
        return [n for _, _, n in self._order[start:stop]]

    def best_and_rest(self, k: int, limit: int) -> tuple[list[int], list[int]]:
        """The numbers of the best k trials, in :meth:`ranked` order, and of the others: all
        of them in that order while there are at most ``limit``, otherwise the ``limit``
        highest-numbered (the most recent) in increasing order. Costs O(k + limit + log n)."""
        best = [n for _, _, n in self._order[:k]]
        if len(self._order) - len(best) <= limit:
            return best, [n for _, _, n in self._order[k:]]
        # At most k of the last k + limit numbers are among the best.
        exclude = set(best)
        recent = [n for n in self._numbers[len(self._numbers) - k - limit :] if n not in exclude]
        return best, recent[len(recent) - limit :]

    def numbers(self) -> list[int]:
        """Every trial's number, in increasing order."""
        return list(self._numbers)

    def points(self, numbers: Sequence[int]) -> np.ndarray:
        """The points of these trials as the rows of an (n, d) matrix."""
        row = self._row
        return self._points[np.array([row[n] for n in numbers], dtype=np.intp)]

    def at_resource(self, resource: float) -> list[tuple[int, np.ndarray, float]]:
        """Trials observed at exactly this resource: (number, point, score)."""
        rows = self._rows_at.get(resource, {})
        scores = self._scores_at.get(resource, {})
        return [
            (n, np.asarray(self.trials[n][0]), scores[n])
            for n in sorted(rows, key=rows.__getitem__)  # in the order of self.trials
        ]

    def resource_table(self, resource: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The trials observed at exactly this resource as arrays: (numbers, points, scores),
        in no particular order, and with no Python loop over them."""
        scores = self._scores_at.get(resource, {})
        rows = self._rows_at.get(resource, {})
        m = len(scores)
        return (
            np.fromiter(scores.keys(), dtype=np.int64, count=m),
            self._points[np.fromiter(rows.values(), dtype=np.intp, count=m)],
            np.fromiter(scores.values(), dtype=float, count=m),
        )

    def resources(self) -> dict[float, int]:
        """How many trials were observed at each resource."""
        return {r: len(scores) for r, scores in self._scores_at.items()}

    def noise_of(self, numbers: Sequence[int], resources: Sequence[float]) -> np.ndarray | None:
        """The variance of each trial's score at the paired resource; None when none of them
        is an estimate (so a model of exact scores computes exactly as without noise)."""
        if not self.noise:
            return None
        out = np.array(
            [self.noise.get((n, float(r)), 0.0) for n, r in zip(numbers, resources, strict=True)]
        )
        return out if out.any() else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "trials": [
                [n, x, [[r, s] for r, s in sorted(scores.items())]]
                for n, (x, scores) in sorted(self.trials.items())
            ]
        }
        if self.noise:
            out["noise"] = [[n, r, v] for (n, r), v in sorted(self.noise.items())]
        return out

    def load_json(self, data: Mapping[str, Any]) -> None:
        self.noise = {(int(n), float(r)): float(v) for n, r, v in data.get("noise", [])}
        self.trials = {}
        for n, x, scores in data.get("trials", []):
            self.trials[int(n)] = (list(map(float, x)), {float(r): float(s) for r, s in scores})
        self.keys = {point_key(x) for x, _ in self.trials.values()}
        self._clear()
        d = len(self.space.names)
        points = np.array([x for x, _ in self.trials.values()], dtype=float).reshape(len(self), d)
        self._points = np.empty((max(16, 2 * len(points)), d))
        self._points[: len(points)] = points
        self._row = {n: row for row, n in enumerate(self.trials)}
        self._numbers = sorted(self.trials)
        self._order = sorted(_rank_key(n, scores) for n, (_, scores) in self.trials.items())
        for n, (_, scores) in self.trials.items():
            for r, s in scores.items():
                self._observed_at(n, r, s)


class Running:
    """The configurations of the trials running now, converted to the unit cube once per
    suggestion: the model, the pick among its candidates and :meth:`ModelSampler.ensure_new`
    share these points and keys.

    The configurations come from the database, validated when they were stored, so they are
    encoded without validating them again: with 64 running trials, validating them three
    times over was most of the cost of a TPE suggestion."""

    def __init__(self, space: SearchSpace, configs: Sequence[Mapping[str, Any]]) -> None:
        self.configs = configs
        self.points = space.unit_points(configs)
        self.keys = {point_key(x) for x in self.points}

    def __len__(self) -> int:
        return len(self.configs)


class ModelSampler(ABC):
    """A sampler that learns from observations. Subclasses set ``kind`` and ``version`` (bump
    it when the state's shape changes) and implement the abstract methods."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1
    # True when suggest() itself changes the state (e.g. CMA-ES records the member it asked),
    # so the service must save it after every suggestion; otherwise only observations do.
    changes_on_suggest: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        if seed < 0:
            raise ValueError(f"sampler: seed must be >= 0, got {seed}")
        self.space = space
        self.seed = seed
        self.spec = spec
        self.history = History(space)

    def rng(self, number: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, number])

    def observe(self, batch: Sequence[Observation]) -> None:
        """Learn from new observations (only those not seen before)."""
        self.history.extend(batch)

    @abstractmethod
    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The configuration of trial ``number``, given the trials running now."""

    def capacity(self) -> int | None:
        return None

    # -- no repeats ----------------------------------------------------------------------------
    def _key(self, point: np.ndarray | Sequence[float]) -> tuple[float, ...]:
        return point_key(point)

    def running(self, running: Running | Sequence[Mapping[str, Any]]) -> Running:
        """The running configurations as points and keys (converted once per suggestion)."""
        return running if isinstance(running, Running) else Running(self.space, running)

    def ensure_new(
        self,
        params: dict[str, Any],
        running: Running | Sequence[Mapping[str, Any]],
        rng: np.random.Generator,
        tries: int = 64,
    ) -> dict[str, Any]:
        """``params`` if no trial tried or is running it; otherwise an untried configuration
        (random draws, then the grid in order when the space is discrete and small), or
        ``params`` when every configuration has been tried. Continuous spaces almost never
        repeat, so this costs one set lookup there."""
        busy = self.running(running).keys

        def taken(p: Mapping[str, Any], check: bool = False) -> bool:
            key = point_key(self.space.to_unit(p, check=check))
            return key in self.history.keys or key in busy

        if not taken(params, check=True):
            return params
        for _ in range(tries):
            p = self.space.sample(rng)
            if not taken(p):
                return p
        try:
            size = self.space.grid_size()
        except ValueError:
            return params  # continuous: an exact repeat is as good as any point
        if size > 100_000:
            return params
        start = int(rng.integers(size))
        for i in range(size):
            p = self.space.grid_point((start + i) % size)
            if not taken(p):
                return p
        return params  # everything has been tried

    # -- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """What a subclass keeps besides the history (JSON types only)."""
        return {}

    def load_extra_state(self, data: Mapping[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore what :meth:`extra_state` returned."""

    def get_state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "history": self.history.to_json(),
            "extra": self.extra_state(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind or state.get("version") != self.version:
            raise StateError(
                f"stored {state.get('kind')} sampler state version {state.get('version')} "
                f"is not {self.kind} version {self.version}"
            )
        self.history.load_json(state.get("history", {}))
        self.load_extra_state(state.get("extra", {}))


def make_sampler(
    spec: SamplerSpec, space: SearchSpace, seed: int, objectives: int = 1
) -> Sampler | ModelSampler:
    """The sampler ``spec`` names, seeded with ``seed`` (the service draws one if spec has none),
    in its multi-objective form when the study has several ``objectives``."""
    from tuneyard.scheduler.samplers import registry

    if objectives < 1:
        raise ValueError(f"sampler: a study needs at least one objective, got {objectives}")
    table = registry.SAMPLERS if objectives == 1 else registry.MULTI_OBJECTIVE
    factory = table.get(spec.type)
    if factory is None:
        if spec.type in registry.SAMPLERS:
            takes = ", ".join(sorted(registry.MULTI_OBJECTIVE))
            raise ValueError(
                f"sampler: {spec.type} optimises one objective; a study with {objectives} "
                f"objectives takes one of {takes}"
            )
        raise ValueError(f"sampler: unknown type {spec.type!r}")
    return factory(space, seed, spec)
