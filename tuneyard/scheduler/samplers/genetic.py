"""A genetic algorithm: tournament selection, uniform crossover, per-gene mutation, elitism.

Goldberg, "Genetic Algorithms in Search, Optimization, and Machine Learning" (1989), and
Goldberg & Deb, "A Comparative Analysis of Selection Schemes Used in Genetic Algorithms",
FOGA 1991, https://doi.org/10.1016/B978-0-08-050684-5.50008-2, for tournament selection.
Asynchronous workers make this the steady-state variant (Syswerda, FOGA 1991): each trial is
one offspring bred from the current population, as in the aging evolution of Real et al.,
"Regularized Evolution for Image Classifier Architecture Search", AAAI 2019,
https://arxiv.org/abs/1802.01548, plus elitism.

Genes are the coordinates of a configuration in the unit cube of
:class:`~tuneyard.scheduler.space.SearchSpace`, one per parameter.

- The first ``population_size`` trials (default 20) are random: the first generation.
- The population is the ``elitism`` best trials observed so far (default 2), kept however old
  they are, and the most recently numbered other observed trials, ``population_size`` in
  all. Older trials age out, which keeps the population moving (Real et al.) while the best
  ones stay as parents.
- Fitness is :meth:`History.ranked`'s order: further-trained trials first, then the score at
  their highest resource, so an early-stopped trial counts with its last score and ranks
  below those that went on.
- Tournament selection: ``tournament_size`` (default 3) distinct members drawn at random,
  the fittest wins. One tournament per parent.
- Uniform crossover with probability ``crossover_rate`` (default 0.9): each gene from either
  parent with equal chance; otherwise the child copies its first parent.
- Mutation, each gene with probability ``mutation_rate`` (default 0.1): numeric genes
  (floats, ints, stepped or log) move by a Gaussian with standard deviation
  ``mutation_scale`` (default 0.1, in the unit cube), reflected at 0 and 1; a categorical gene
  is reset to another of its choices, drawn uniformly.

Conditional parameters. A parent carries 0.5 in a dimension inactive in its configuration,
a placeholder. When crossover takes such a gene while the other parent has that dimension
active, the child takes the other parent's gene; when neither parent has it active, the
gene is drawn uniformly. :meth:`SearchSpace.from_unit` decodes the child and drops whatever
its own categorical genes leave inactive.

Parallel workers: trial n draws everything from ``rng(n)``, so concurrent suggestions are
independent offspring; :meth:`ModelSampler.ensure_new` replaces one that repeats a tried or
running configuration. The state is the history alone: the population is recomputed from it
at each suggestion in O(n log P) for n trials.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import CategoricalParam, SamplerSpec


class Member(NamedTuple):
    """A trial in the population; members sort fittest first."""

    fitness: tuple[float, float]  # (-highest resource, score there): lower is fitter
    number: int
    point: list[float]


class GeneticSampler(ModelSampler):
    kind = "genetic"
    version = 1
    # Defaults of the options a subclass may change (NSGA-II is elitist by its survival).
    default_population: ClassVar[int] = 20
    default_elitism: ClassVar[int] = 2

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        super().__init__(space, seed, spec)
        self.population_size = int(spec.option("population_size", self.default_population))
        self.tournament_size = int(spec.option("tournament_size", 3))
        self.crossover_rate = float(spec.option("crossover_rate", 0.9))
        self.mutation_rate = float(spec.option("mutation_rate", 0.1))
        self.mutation_scale = float(spec.option("mutation_scale", 0.1))
        self.elitism = int(spec.option("elitism", self.default_elitism))
        if self.elitism >= self.population_size:
            raise ValueError(
                f"sampler: elitism ({self.elitism}) must be smaller than population_size "
                f"({self.population_size})"
            )
        params = [space.params[n] for n in space.names]
        self._dim = len(params)
        # Per dimension: the number of choices of a categorical, 0 for a numeric gene.
        self._choices = np.array(
            [len(p.choices) if isinstance(p, CategoricalParam) else 0 for p in params], dtype=int
        )

    # -- suggestions -------------------------------------------------------------------------
    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        rng = self.rng(number)
        if number < self.population_size or not self.history.trials:
            params = self.space.sample(rng)
        else:
            params = self.space.from_unit(self.offspring(rng))
        return self.ensure_new(params, running, rng)

    # -- the operators -----------------------------------------------------------------------
    def population(self) -> list[Member]:
        """The elites and the most recent other observed trials, fittest first."""
        members = []
        for n, (x, scores) in self.history.trials.items():
            r = max(scores)
            members.append(Member((-r, scores[r]), n, x))
        elites = heapq.nsmallest(self.elitism, members)
        kept = {m.number for m in elites}
        recent = heapq.nlargest(
            self.population_size - len(elites),
            (m for m in members if m.number not in kept),
            key=lambda m: m.number,
        )
        return sorted(elites + recent)

    def tournament(self, population: Sequence[Member], rng: np.random.Generator) -> Member:
        """The fittest of ``tournament_size`` distinct members drawn at random."""
        k = min(self.tournament_size, len(population))
        picks = rng.choice(len(population), size=k, replace=False)
        return population[int(picks.min())]  # the population is sorted fittest first

    def offspring(self, rng: np.random.Generator) -> np.ndarray:
        """A child of the current population, as a point of the unit cube."""
        population = self.population()
        if not population:
            raise ValueError("genetic: no observed trial to breed from")
        first = self.tournament(population, rng)
        if rng.random() < self.crossover_rate:
            second = self.tournament(population, rng)
            child = self.crossover(np.asarray(first.point), np.asarray(second.point), rng)
        else:
            child = np.array(first.point, dtype=float)
        return self.mutate(child, rng)

    def crossover(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uniform crossover; a gene inactive in the parent it came from is taken from the
        other parent when active there, else drawn uniformly."""
        take_a = rng.random(self._dim) < 0.5
        fresh = rng.random(self._dim)
        active_a, active_b = self._active(a), self._active(b)
        child = np.where(take_a, a, b)
        own = np.where(take_a, active_a, active_b)
        other_active = np.where(take_a, active_b, active_a)
        child = np.where(~own & other_active, np.where(take_a, b, a), child)
        return np.where(~active_a & ~active_b, fresh, child)

    def mutate(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each gene with probability ``mutation_rate``: a reflected Gaussian step for numeric
        genes, another choice drawn uniformly for categorical ones."""
        hit = rng.random(self._dim) < self.mutation_rate
        step = rng.normal(0.0, self.mutation_scale, self._dim)
        shift = rng.random(self._dim)
        out = np.array(x, dtype=float)
        numeric = hit & (self._choices == 0)
        out[numeric] = _reflect(out[numeric] + step[numeric])
        for i in np.flatnonzero(hit & (self._choices > 1)):
            n = int(self._choices[i])
            current = min(n - 1, max(0, int(out[i] * n)))
            # A uniform draw among the n - 1 other choices.
            new = (current + 1 + min(n - 2, int(shift[i] * (n - 1)))) % n
            out[i] = (new + 0.5) / n
        return out

    def _active(self, x: np.ndarray) -> np.ndarray:
        config = self.space.from_unit(x)
        return np.array([name in config for name in self.space.names])


def _reflect(v: np.ndarray) -> np.ndarray:
    """Fold values back into [0, 1] at its ends (a mirror, not a clip, so no mass piles up)."""
    v = np.abs(v) % 2.0
    return np.where(v > 1.0, 2.0 - v, v)
