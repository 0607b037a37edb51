"""What a sampler offers, and the factory that picks one from the study definition.

Two kinds of samplers:

- **Stateless** (random, grid, sobol): trial n's configuration depends on the study's seed and
  n only, so two API replicas agree on trial n without sharing anything.
- **Model-based** (tpe, gp, cmaes, genetic, bohb): they learn from results. The service feeds
  them :class:`Observation` s, the rung results and final values of the study's trials, in
  the order they were recorded, and only those newer than the sampler's watermark. Their
  state is versioned JSON, kept in the database, so any API replica continues where another
  stopped and a suggestion never re-reads the study.

Observations carry a *score*: the metric with the sign that makes lower better, at a
*resource* (the step it was reported at). Early-stopped trials thus still inform a model: at
the rung where they stopped.

Determinism: a model-based sampler draws its randomness for trial n from
``numpy.random.default_rng([seed, n])``, so the same seed and the same observations give the
same suggestions. ``running`` are the configurations of trials running now, which a sampler
uses to spread parallel workers out (e.g. TPE's constant liar).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec


@dataclass(frozen=True)
class Observation:
    """A trial's score (lower is better) at a resource."""

    number: int
    params: Mapping[str, Any]
    resource: float
    score: float


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


class History:
    """The observations a model-based sampler has seen, compactly: per trial, its params (as
    a point of the unit cube) and its score at each resource it was observed at.

    JSON round-trips through :meth:`to_json` / :meth:`from_json`."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        # number -> (unit-cube point, {resource: score})
        self.trials: dict[int, tuple[list[float], dict[float, float]]] = {}
        # The points tried, rounded (see point_key): kept up to date, so checking a proposal
        # for a repeat costs one lookup rather than a pass over the history.
        self.keys: set[tuple[float, ...]] = set()

    def add(self, obs: Observation) -> None:
        entry = self.trials.get(obs.number)
        if entry is None:
            x = self.space.to_unit(obs.params).tolist()
            entry = (x, {})
            self.trials[obs.number] = entry
            self.keys.add(point_key(x))
        entry[1][float(obs.resource)] = float(obs.score)

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
        one that went on), then by score at their highest resource. (number, point, score)"""
        rows = self.latest()
        rows.sort(key=lambda t: (-t[2], t[3], t[0]))
        return [(n, x, s) for n, x, _, s in rows]

    def at_resource(self, resource: float) -> list[tuple[int, np.ndarray, float]]:
        """Trials observed at exactly this resource: (number, point, score)."""
        return [
            (n, np.asarray(x), scores[resource])
            for n, (x, scores) in self.trials.items()
            if resource in scores
        ]

    def resources(self) -> dict[float, int]:
        """How many trials were observed at each resource."""
        counts: dict[float, int] = {}
        for _, scores in self.trials.values():
            for r in scores:
                counts[r] = counts.get(r, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "trials": [
                [n, x, [[r, s] for r, s in sorted(scores.items())]]
                for n, (x, scores) in sorted(self.trials.items())
            ]
        }

    def load_json(self, data: Mapping[str, Any]) -> None:
        self.trials = {}
        for n, x, scores in data.get("trials", []):
            self.trials[int(n)] = (list(map(float, x)), {float(r): float(s) for r, s in scores})
        self.keys = {point_key(x) for x, _ in self.trials.values()}


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
        # Where this in-memory copy stands against the stored state (kept by the service).
        self.revision = -1
        self.watermark = 0
        self.unsaved = 0  # observations taken in since the state was last saved

    def rng(self, number: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, number])

    def observe(self, batch: Sequence[Observation]) -> None:
        """Learn from new observations (only those not seen before)."""
        for obs in batch:
            self.history.add(obs)

    @abstractmethod
    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """The configuration of trial ``number``, given the trials running now."""

    def capacity(self) -> int | None:
        return None

    # -- no repeats ----------------------------------------------------------------------------
    def _key(self, point: np.ndarray | Sequence[float]) -> tuple[float, ...]:
        return point_key(point)

    def ensure_new(
        self,
        params: dict[str, Any],
        running: Sequence[Mapping[str, Any]],
        rng: np.random.Generator,
        tries: int = 64,
    ) -> dict[str, Any]:
        """``params`` if no trial tried or is running it; otherwise an untried configuration
        (random draws, then the grid in order when the space is discrete and small), or
        ``params`` when every configuration has been tried. Continuous spaces almost never
        repeat, so this costs one set lookup there."""
        busy = {point_key(self.space.to_unit(p)) for p in running}

        def taken(p: Mapping[str, Any]) -> bool:
            key = point_key(self.space.to_unit(p))
            return key in self.history.keys or key in busy

        if not taken(params):
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


def make_sampler(spec: SamplerSpec, space: SearchSpace, seed: int) -> Sampler | ModelSampler:
    """The sampler ``spec`` names, seeded with ``seed`` (the service draws one if spec has none)."""
    from tuneyard.scheduler.samplers import registry

    factory = registry.SAMPLERS.get(spec.type)
    if factory is None:
        raise ValueError(f"sampler: unknown type {spec.type!r}")
    return factory(space, seed, spec)
