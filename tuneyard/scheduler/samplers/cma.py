"""CMA-ES: an evolution strategy that adapts a Gaussian's mean, step size and covariance.

Hansen, "The CMA Evolution Strategy: A Tutorial", https://arxiv.org/abs/1604.00772; the
restarts are IPOP-CMA-ES, Auger & Hansen, "A Restart CMA Evolution Strategy With Increasing
Population Size", CEC 2005, https://doi.org/10.1109/CEC.2005.1554902. The algorithm itself is
the ``cmaes`` package's :class:`cmaes.CMA` (Nomura & Shibata, https://arxiv.org/abs/2402.01373);
this module only maps an asynchronous service onto its ask/tell interface.

The search runs in the unit cube of :class:`~tuneyard.scheduler.space.SearchSpace` with
bounds [0, 1] (the library resamples points outside them), so log scales need nothing special.
Options: ``sigma0`` (initial step size, default 0.2 of the cube's side), ``popsize`` (default
the library's 4 + floor(3 ln d)), ``n_startup`` (random trials first, default 0) and
``restarts`` (default on).

Which dimensions CMA-ES sees
----------------------------
Floats and ints, continuous or stepped. A discrete one is relaxed to the continuous
coordinate whose equal bins decode to its values: CMA-ES moves through the bins, and
:meth:`SearchSpace.from_unit` rounds. A conditional numeric parameter keeps its coordinate
when inactive; the sampled value just has no effect on the score.

Categoricals are not given to CMA-ES: a choice has no order, so a Gaussian over its bins would
invent one. Each categorical is drawn independently, with each choice's probability its
frequency among the ``popsize`` best-ranked trials where the parameter was active, plus one
(Laplace smoothing): the search leans towards the choices that worked, and never stops
trying the others. A space of categoricals only thus becomes that frequency model alone.

Asynchronous ask/tell
---------------------
``cmaes.CMA.tell`` wants exactly ``popsize`` solutions of the generation it last asked for.
Workers ask and report at their own pace, so:

- every suggestion made while a generation is open asks that generation for one more member
  (a generation may have more members than ``popsize``; parallel workers draw distinct
  points of the same Gaussian);
- the generation is told as soon as ``popsize`` of its members have an observation, the first
  ``popsize`` observed in the order they were asked. Members that report later, or never
  (failed trials), are left out, so a lost trial can never block the search; their results
  still enter the history (and the categorical model). With more workers than ``popsize``
  some results are thus spent on stale generations: give ``popsize`` at least the number of
  parallel workers;
- a member's value is its trial's rank among the generation's members by the score at its
  highest resource (an early-stopped trial counts with its last score), ties going to the
  further-trained trial. Not :meth:`History.ranked`'s resource-first order: a generation is
  told as soon as its members report, mostly all at the first rung, where both orders
  agree; when they differ, resource-first would sort the generation by what the scheduler
  promoted so far rather than by the objective, and on the contract suite's bowl that made
  CMA-ES worse than random search. The study-wide "best" (the first mean, the categorical
  model) does use :meth:`History.ranked`. CMA-ES only uses ranks, except for the "flat
  fitness" stopping rule, which sees equal scores as equal ranks;
- a proposal that decodes to a configuration already evaluated (stepped and categorical
  spaces) is told with that evaluation's result, because the objective is a function of the
  configuration; the trial then gets the next proposal. This keeps a search that has
  converged onto one configuration moving: its generations fill with equal values and IPOP
  restarts it. A proposal equal to a running configuration is skipped; after ``2 * popsize``
  such proposals the trial gets :meth:`ModelSampler.ensure_new`'s fresh configuration, which
  is not a CMA-ES member.

IPOP: after each tell, when the library's ``should_stop()`` fires (flat fitness, a step size
collapsed to nothing, a degenerate covariance), a new CMA-ES starts from a uniformly random
mean with twice the population (capped at :data:`_MAX_POPSIZE`, or ``popsize`` when larger).
The first one starts from the best observed trial (e.g. one of the ``n_startup`` random
ones), or from the centre of the cube when nothing has been observed.

State and determinism
---------------------
The state is JSON: an append-only event log ("restart" with its population size and mean,
"tell" with its solutions and values), a chained digest per event, and the open generation's
members (trial number, the trial whose result scores it, the point asked). The live
``cmaes.CMA`` object is rebuilt by replaying the log; an instance keeps its object and, when
another API process moved the state on, replays only the events past the digest it holds.
Each proposal for trial n reseeds the library's generator from (seed, n, attempt), so a point
depends on the distribution and the trial number, never on which process asked before.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from cmaes import CMA

from tuneyard.scheduler.samplers.base import ModelSampler, Observation, StateError
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import CategoricalParam, SamplerSpec

# Mixed into seeds so CMA-ES's draws are not the streams of a random sampler's trials.
_STREAM = 0x636D61  # "cma"
_RESTART_STREAM = 0x6970  # "ip"
# IPOP stops doubling the population here (a popsize given larger than this is kept).
_MAX_POPSIZE = 1024
_DIGEST_CHARS = 16

Event = list[Any]


def _default_popsize(dim: int) -> int:
    return 4 + math.floor(3 * math.log(max(dim, 1)))


def _rank_key(scores: Mapping[float, float]) -> tuple[float, float]:
    """History.ranked()'s order: further-trained first, then the score there."""
    r = max(scores)
    return (-r, scores[r])


def _generation_key(scores: Mapping[float, float]) -> tuple[float, float]:
    """Within a generation: the score at the highest resource, then further-trained first."""
    r = max(scores)
    return (scores[r], -r)


def _chain(previous: str, event: Event) -> str:
    payload = previous + json.dumps(event, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:_DIGEST_CHARS]


class CMASampler(ModelSampler):
    kind = "cmaes"
    changes_on_suggest = True
    version = 1

    def __init__(self, space: SearchSpace, seed: int, spec: SamplerSpec) -> None:
        super().__init__(space, seed, spec)
        self.sigma0 = float(spec.option("sigma0", 0.2))
        self.n_startup = int(spec.option("n_startup", 0))
        self.restarts = bool(spec.option("restarts", True))
        params = [space.params[n] for n in space.names]
        self._num = [i for i, p in enumerate(params) if not isinstance(p, CategoricalParam)]
        self._cat = [
            (i, len(p.choices)) for i, p in enumerate(params) if isinstance(p, CategoricalParam)
        ]
        self.popsize = int(spec.option("popsize", _default_popsize(len(self._num))))
        self._bounds = np.tile([0.0, 1.0], (len(self._num), 1))
        # Persisted: the event log, a digest per event, the open generation's members as
        # [trial number, number of the trial whose result scores it, *point].
        self._events: list[Event] = []
        self._digests: list[str] = []
        self._open: list[list[Any]] = []
        # Not persisted: the live optimizer, with how many events it has applied and the
        # digest of the last one.
        self._cma: CMA | None = None
        self._cma_at = 0
        self._cma_digest = ""
        # Configuration key -> the lowest number of an observed trial with it (kept up to date
        # by observe, rebuilt after set_state).
        self._seen: dict[tuple[float, ...], int] | None = None

    # -- observations ------------------------------------------------------------------------
    def observe(self, batch: Sequence[Observation]) -> None:
        super().observe(batch)
        if self._seen is not None:
            for obs in batch:
                self._see(self._seen, obs.number)

    def _see(self, seen: dict[tuple[float, ...], int], number: int) -> None:
        # The lowest-numbered trial stands for its configuration, whatever order results
        # arrived in, so a reloaded instance picks the same one.
        key = self._key(self.history.trials[number][0])
        if number < seen.get(key, number + 1):
            seen[key] = number

    def _observed_keys(self) -> dict[tuple[float, ...], int]:
        if self._seen is None:
            self._seen = {}
            for n in self.history.trials:
                self._see(self._seen, n)
        return self._seen

    # -- suggestions -------------------------------------------------------------------------
    def suggest(self, number: int, running: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
        if number < 0:
            raise ValueError(f"trial number must be >= 0, got {number}")
        rng = self.rng(number)
        busy = self.running(running)
        if number < self.n_startup:
            return self.ensure_new(self.space.sample(rng), busy, rng)
        if not self._num:  # categoricals only: nothing for CMA-ES to adapt
            probs = self._choice_probs(self.popsize)
            return self.ensure_new(self._decode(np.empty(0), probs, rng), busy, rng)

        cma = self._catch_up(self._live_or_start())
        probs = self._choice_probs(cma.population_size)
        seen = self._observed_keys()
        params: dict[str, Any] | None = None
        for attempt in range(2 * cma.population_size):
            cma.reseed_rng(self._seed32(_STREAM, number, attempt))
            x = cma.ask()
            params = self._decode(x, probs, rng)
            key = self._key(self.space.to_unit(params, check=False))
            if key in busy.keys:
                continue
            source = seen.get(key)
            if source is None:
                self._join(number, number, x)
                break
            # Evaluated already: the earlier result scores this member.
            self._open.append([number, source, *x.tolist()])
            cma = self._catch_up(cma)
            params = None
        if params is None:
            params = self.space.sample(rng)
        return self.ensure_new(params, busy, rng)

    def _decode(
        self, x: np.ndarray, probs: list[np.ndarray], rng: np.random.Generator
    ) -> dict[str, Any]:
        u = np.full(len(self.space.names), 0.5)
        u[self._num] = x
        for (i, n), p in zip(self._cat, probs, strict=True):
            u[i] = (int(rng.choice(n, p=p)) + 0.5) / n
        return self.space.from_unit(u)

    def _choice_probs(self, k: int) -> list[np.ndarray]:
        """Per categorical: its choices' frequencies among the k best trials, plus one each."""
        if not self._cat:
            return []
        best = heapq.nsmallest(
            k, ((_rank_key(sc), n, x) for n, (x, sc) in self.history.trials.items())
        )
        counts = [np.ones(n) for _, n in self._cat]
        for _, _, x in best:
            active = self.space.from_unit(np.asarray(x))
            for (i, n), c in zip(self._cat, counts, strict=True):
                if self.space.names[i] in active:
                    c[min(n - 1, max(0, math.floor(x[i] * n)))] += 1
        return [c / c.sum() for c in counts]

    def _join(self, number: int, source: int, x: np.ndarray) -> None:
        # A repeated request for the same trial replaces its earlier proposal.
        self._open = [m for m in self._open if not (m[0] == number and m[1] == number)]
        self._open.append([number, source, *x.tolist()])

    # -- the generation bookkeeping ----------------------------------------------------------
    def _catch_up(self, cma: CMA) -> CMA:
        """Tell the open generation once ``popsize`` of its members are observed."""
        while True:
            done = [m for m in self._open if m[1] in self.history.trials]
            if len(done) < cma.population_size:
                return cma
            members = done[: cma.population_size]
            keys = [_generation_key(self.history.trials[m[1]][1]) for m in members]
            dense = {k: r for r, k in enumerate(sorted(set(keys)))}
            rows = [[dense[k], *m[2:]] for k, m in zip(keys, members, strict=True)]
            self._open = []
            cma = self._push(["tell", rows])
            if self.restarts and cma.should_stop():
                popsize = cma.population_size
                cap = max(_MAX_POPSIZE, self.popsize)
                restart = sum(1 for e in self._events if e[0] == "restart")
                mean = np.random.default_rng([self.seed, _RESTART_STREAM, restart]).random(
                    len(self._num)
                )
                cma = self._push(["restart", restart, min(2 * popsize, cap), mean.tolist()])

    def _live_or_start(self) -> CMA:
        cma = self._sync()
        if cma is not None:
            return cma
        ranked = heapq.nsmallest(
            1, ((_rank_key(sc), n, x) for n, (x, sc) in self.history.trials.items())
        )
        mean = [ranked[0][2][i] for i in self._num] if ranked else [0.5] * len(self._num)
        return self._push(["restart", 0, self.popsize, mean])

    def _seed32(self, *words: int) -> int:
        return int(np.random.SeedSequence([self.seed, *words]).generate_state(1)[0])

    # -- the event log -----------------------------------------------------------------------
    def _apply(self, cma: CMA | None, event: Event) -> CMA:
        """One event on the optimizer; the same code serves live updates and replays."""
        if event[0] == "restart":
            _, restart, popsize, mean = event
            return CMA(
                mean=np.asarray(mean, dtype=float),
                sigma=self.sigma0,
                bounds=self._bounds,
                seed=self._seed32(_RESTART_STREAM, int(restart)),
                population_size=int(popsize),
            )
        if event[0] == "tell" and cma is not None:
            cma.tell([(np.asarray(row[1:], dtype=float), float(row[0])) for row in event[1]])
            # The stopping test caches the eigendecomposition (and re-symmetrises C): run it
            # after every tell, live or replayed, so both follow the same arithmetic.
            cma.should_stop()
            return cma
        raise StateError(f"cmaes state: cannot apply event {event[0]!r} here")

    def _sync(self) -> CMA | None:
        """The optimizer after every event of the log, replaying only what it lacks."""
        n = len(self._events)
        if self._cma_at > n or (
            self._cma_at and self._digests[self._cma_at - 1] != self._cma_digest
        ):
            self._cma, self._cma_at, self._cma_digest = None, 0, ""
        cma, digest = self._cma, self._cma_digest
        try:
            for k in range(self._cma_at, n):
                digest = _chain(digest, self._events[k])
                if digest != self._digests[k]:
                    raise StateError(f"cmaes state: event {k} does not match its digest")
                cma = self._apply(cma, self._events[k])
        except (TypeError, ValueError, IndexError, AssertionError) as exc:
            if isinstance(exc, StateError):
                raise
            raise StateError(f"cmaes state: cannot replay the event log: {exc}") from exc
        self._cma, self._cma_at, self._cma_digest = cma, n, digest
        return cma

    def _push(self, event: Event) -> CMA:
        cma = self._sync()
        digest = _chain(self._cma_digest, event)
        cma = self._apply(cma, event)
        self._events.append(event)
        self._digests.append(digest)
        self._cma, self._cma_at, self._cma_digest = cma, len(self._events), digest
        return cma

    # -- state -------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        # Events and members are never mutated once made; fresh outer lists are enough for
        # a stored copy not to change under the caller.
        return {
            "events": list(self._events),
            "digests": list(self._digests),
            "open": list(self._open),
        }

    def load_extra_state(self, data: Mapping[str, Any]) -> None:
        events = list(data.get("events", []))
        digests = [str(d) for d in data.get("digests", [])]
        members = list(data.get("open", []))
        if len(events) != len(digests):
            raise StateError("cmaes state: events and digests differ in length")
        width = 2 + len(self._num)
        if any(not isinstance(m, list) or len(m) != width for m in members):
            raise StateError(
                f"cmaes state: an open member is not [number, source, *point({width})]"
            )
        self._events, self._digests = events, digests
        self._open = [[int(m[0]), int(m[1]), *map(float, m[2:])] for m in members]
        self._seen = None
        # The live optimizer stays if the log still extends what it has applied (_sync checks).
