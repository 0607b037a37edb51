"""What every use case needs: sessions, settings, a clock, and per-study algorithm objects."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from tuneyard.lru import LRU
from tuneyard.scheduler.engine import Engine
from tuneyard.scheduler.pbt import PopulationRule
from tuneyard.scheduler.samplers import make_sampler
from tuneyard.scheduler.samplers.base import ModelSampler, Sampler
from tuneyard.scheduler.schedulers import Scheduler, make_scheduler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.service.ahead import StudySampler, SuggestAhead
from tuneyard.service.objectives import Objectives
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.spec.algorithms import POPULATION_TYPES
from tuneyard.store.board import RungCache, SqlBoard
from tuneyard.store.db import READ_ONLY
from tuneyard.store.fast_paths import FastPaths
from tuneyard.store.models import Study

if TYPE_CHECKING:
    from tuneyard.service.metrics import Metrics

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class StudyContext:
    """The immutable, derived parts of a study: its spec and its algorithm objects."""

    spec: StudySpec
    space: SearchSpace
    scheduler: Scheduler
    sampler: Sampler
    # Trials the study will start: max_trials, or fewer when the sampler runs out (grid).
    capacity: int
    # +1 when minimising, -1 when maximising: the scheduler always minimises sign * value.
    sign: float
    # The scheduling rules, as the simulator runs them too.
    engine: Engine
    # How reports are read: the objectives and constraints.
    objectives: Objectives
    # A model-based sampler as this process holds it (None for a stateless one): the same
    # sampler, with its lock and where it stands against the stored state.
    model: StudySampler | None = None
    # A pbt or pb2 study's exploit-and-explore rule.
    population: PopulationRule | None = None
    # The study's rung vectors this process read (a study ranked by fronts).
    rungs: RungCache = field(default_factory=RungCache)

    def board(self, session: Session, study_id: int) -> SqlBoard:
        return SqlBoard(
            session, study_id, self.scheduler.resources, self.scheduler.cutoff_rank, self.rungs
        )

    @classmethod
    def build(cls, spec: StudySpec, seed: int) -> StudyContext:
        space = SearchSpace(spec.space)
        sampler = make_sampler(spec.sampler, space, seed, objectives=len(spec.objective_list))
        cap = sampler.capacity()
        capacity = spec.limits.max_trials if cap is None else min(cap, spec.limits.max_trials)
        scheduler = make_scheduler(spec.scheduler, spec.direction, fronts=spec.ranked_by_fronts)
        return cls(
            spec=spec,
            space=space,
            scheduler=scheduler,
            sampler=sampler,
            capacity=capacity,
            sign=1.0 if spec.direction == "minimize" else -1.0,
            engine=Engine(scheduler, capacity),
            objectives=Objectives(spec),
            model=StudySampler(sampler) if isinstance(sampler, ModelSampler) else None,
            population=_population_rule(spec, space, seed),
        )


class Toolkit:
    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        clock: Clock = utc_clock,
        cache_size: int = 256,
        metrics: Metrics | None = None,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.clock = clock
        # The plain report's statements on the driver's connection (PostgreSQL), else None.
        bind = factory.kw.get("bind")
        self.fast_paths = FastPaths(bind) if bind is not None and FastPaths.usable(bind) else None
        # Counters and histograms (the API app's); None: nothing is counted.
        self.metrics = metrics
        if metrics is not None:
            metrics.watch(factory)
        self._cache: LRU[tuple[int, float], StudyContext] = LRU(cache_size)
        # The suggestions this process makes ahead of a study's lock, and its next calls' turns.
        self.ahead = SuggestAhead()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.factory() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A transaction that only reads: on SQLite it does not take the write lock, so the
        writers go on meanwhile (on PostgreSQL it is a plain transaction)."""
        with self.factory() as session, session.begin():
            session.connection(execution_options={READ_ONLY: True})
            yield session

    def cached_context(self, study_id: int, created_at: datetime) -> StudyContext | None:
        """The study's algorithm objects when this process has built them already."""
        # Keyed by creation time too: SQLite may give a deleted study's id to a new one.
        key = (study_id, created_at.timestamp())
        return self._cache.get(key)

    def context(self, study: Study) -> StudyContext:
        """The study's algorithm objects; a spec never changes, so they are cached by id."""
        ctx = self.cached_context(study.id, study.created_at)
        if ctx is not None:
            return ctx
        key = (study.id, study.created_at.timestamp())
        # Checked when the study was created: parsed, not judged again.
        ctx = StudyContext.build(StudySpec.from_stored(study.spec), study.seed)
        self._cache.put(key, ctx)
        return ctx


def _population_rule(spec: StudySpec, space: SearchSpace, seed: int) -> PopulationRule | None:
    if spec.scheduler.type not in POPULATION_TYPES:
        return None
    mutable = [name for name, p in spec.space.items() if p.mutable]
    sign = 1.0 if spec.direction == "minimize" else -1.0
    return PopulationRule(space, spec.scheduler.population_spec(), seed, mutable, sign)
