"""Prometheus metrics: the counters and histograms the use cases feed, and the gauges read from
the database (and Redis) at scrape time.

Counters and histograms live in the process that counted them, as is usual with Prometheus:
each API replica exposes its own, and a dashboard sums their rates across replicas. Decisions
taken by a process without a metrics registry (a stand-alone ``tuneyard dispatcher`` reaping
leases) are not counted anywhere. Counts are applied when the transaction that took the
decision commits, so a rolled-back call or a repeated report (answered from the stored
decision) counts nothing.

The gauges are computed by ``StateCollector`` from a few aggregate queries on each scrape, so
every replica reports the same values for the shared state: aggregate them with ``max``, not
``sum``. They cost one GROUP BY over the trials of unfinished studies (index
``ix_trials_study_state_number``), one over the workers table, one range count on
``ix_trials_state_lease`` and one Redis round trip.

Every metric object is registered on the ``CollectorRegistry`` given to ``Metrics``, never on
prometheus-client's global default one, so several apps in one process keep apart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, event, func, select
from sqlalchemy.orm import Session, sessionmaker

from tuneyard.redact import redact_url
from tuneyard.service.workers import LOST_AFTER_LEASES
from tuneyard.states import DecisionKind, LogKind, StudyState, TrialState, WorkerState
from tuneyard.store.models import Study, Trial, Worker

if TYPE_CHECKING:
    from tuneyard.service.context import StudyContext, Toolkit

log = logging.getLogger("tuneyard.metrics")

R = TypeVar("R")

DECISION_KINDS = tuple(LogKind)
REPORT_DECISIONS = tuple(DecisionKind)
# Studies whose trials are shown by ``tuneyard_trials``: finished ones would only add series.
LIVE_STUDY_STATES = (StudyState.RUNNING, StudyState.PAUSED, StudyState.FAILING)
# RQ's own bookkeeping: the set of queue keys, and the prefix of each queue's job list.
RQ_QUEUES_KEY = "rq:queues"
RQ_QUEUE_PREFIX = "rq:queue:"
REDIS_TIMEOUT_S = 0.25

# A suggestion takes a millisecond (random) to a second or more (a GP over many observations).
SUGGEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_PENDING = "tuneyard.metrics.pending"


class Metrics:
    """The counters and histograms of one app, registered on its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.reports = Counter(
            "tuneyard_reports",
            "Reports stored, by the decision they were answered with.",
            ["decision"],
            registry=registry,
        )
        self.decisions = Counter(
            "tuneyard_decisions",
            "Decisions taken on trials (the decision log), by kind.",
            ["kind"],
            registry=registry,
        )
        self.promotions = Counter(
            "tuneyard_promotions", "Trials promoted to a higher rung.", registry=registry
        )
        self.trials_started = Counter(
            "tuneyard_trials_started", "New trials started.", registry=registry
        )
        self.suggest_seconds = Histogram(
            "tuneyard_suggest_seconds",
            "Time to choose a new trial's configuration, by sampler.",
            ["sampler"],
            buckets=SUGGEST_BUCKETS,
            registry=registry,
        )
        self.http_seconds = Histogram(
            "tuneyard_http_request_duration_seconds",
            "HTTP request latency, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        # Series that exist from the start, so that rate() sees their first increment.
        for kind in DECISION_KINDS:
            self.decisions.labels(kind=kind)
        for decision in REPORT_DECISIONS:
            self.reports.labels(decision=decision)

    # -- counting on commit ----------------------------------------------------------------------
    def watch(self, factory: sessionmaker[Session]) -> None:
        """Apply the counts recorded in a session when it commits; drop them on rollback."""
        event.listen(factory, "after_commit", self._after_commit)
        event.listen(factory, "after_rollback", self._after_rollback)

    def _after_commit(self, session: Session) -> None:
        for name, label in session.info.pop(_PENDING, ()):
            self._apply(name, label)

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop(_PENDING, None)

    def _apply(self, name: str, label: str) -> None:
        if name == "report":
            self.reports.labels(decision=label).inc()
            return
        self.decisions.labels(kind=label).inc()
        if label == LogKind.PROMOTE:
            self.promotions.inc()
        elif label == LogKind.START:
            self.trials_started.inc()


# -- helpers called by the use cases: each a no-op on a Toolkit without metrics -----------------
def _defer(kit: Toolkit, s: Session, name: str, label: str) -> None:
    if getattr(kit, "metrics", None) is not None:
        s.info.setdefault(_PENDING, []).append((name, label))


def decided(kit: Toolkit, s: Session, kind: LogKind) -> None:
    """Count a decision logged in ``s`` (and a promotion or a start), once ``s`` commits."""
    _defer(kit, s, "decision", kind)


def reported(kit: Toolkit, s: Session, decision: str) -> None:
    """Count a report stored in ``s`` with its decision, once ``s`` commits."""
    _defer(kit, s, "report", decision)


def reported_now(kit: Toolkit, decision: str) -> None:
    """Count a report stored outside a session (autocommit), already committed."""
    metrics: Metrics | None = getattr(kit, "metrics", None)
    if metrics is not None:
        metrics._apply("report", decision)


def timed_suggest(kit: Toolkit, ctx: StudyContext, suggest: Callable[[], R]) -> R:
    """``suggest()``, its duration observed in ``tuneyard_suggest_seconds`` under the study's
    sampler."""
    metrics: Metrics | None = getattr(kit, "metrics", None)
    if metrics is None:
        return suggest()
    start = time.perf_counter()
    try:
        return suggest()
    finally:
        elapsed = time.perf_counter() - start
        metrics.suggest_seconds.labels(sampler=ctx.spec.sampler.type).observe(elapsed)


# -- gauges read at scrape time ------------------------------------------------------------------
class StateCollector(Collector):
    """Gauges of the shared state, read from the database and Redis on each scrape.

    A source that can't be read is left out of the scrape (and logged) rather than failing
    it; ``tuneyard_scrape_source_up{source}`` says which were read."""

    def __init__(self, kit: Toolkit, redis_url: str | None) -> None:
        self.kit = kit
        self.redis_url = redis_url

    def describe(self) -> Iterable[Metric]:
        # Nothing to check at registration: keeps the registry from calling collect() then.
        return []

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "tuneyard_scrape_source_up",
            "Whether this scrape could read a source (database, redis) of its gauges.",
            labels=["source"],
        )
        try:
            db: list[Metric] | None = self._database()
        except Exception:
            log.warning("metrics: reading the database failed", exc_info=True)
            db = None
        up.add_metric(["database"], 0.0 if db is None else 1.0)
        yield from db or ()
        if self.redis_url:
            queues = self._queues(self.redis_url)
            up.add_metric(["redis"], 0.0 if queues is None else 1.0)
            if queues is not None:
                yield queues
        yield up

    def _database(self) -> list[Metric]:
        now = self.kit.clock()
        lost_before = now - timedelta(seconds=self.kit.settings.lease_seconds * LOST_AFTER_LEASES)
        with self.kit.transaction() as s:
            trials = s.execute(
                select(Trial.study_id, Trial.state, func.count())
                .join(Study, Study.id == Trial.study_id)
                .where(Study.state.in_(LIVE_STUDY_STATES), Trial.parent_id.is_(None))
                .group_by(Trial.study_id, Trial.state)
            ).all()
            workers = s.execute(
                select(
                    Worker.state,
                    func.count(),
                    func.sum(case((Worker.last_seen_at < lost_before, 1), else_=0)),
                ).group_by(Worker.state)
            ).all()
            stale = s.scalar(
                select(func.count())
                .select_from(Trial)
                .where(Trial.state == TrialState.RUNNING, Trial.lease_expires_at < now)
            )

        by_state = GaugeMetricFamily(
            "tuneyard_trials",
            "Trials of running and paused studies, by study id and state.",
            labels=["study", "state"],
        )
        for study_id, state, n in trials:
            by_state.add_metric([str(study_id), state], float(n))

        counts = {WorkerState.ACTIVE.value: 0.0, WorkerState.LOST.value: 0.0}
        for state, n, silent in workers:
            if state == WorkerState.ACTIVE:
                # An active worker silent for longer than a lease is shown as lost.
                counts[WorkerState.LOST] += float(silent or 0)
                counts[WorkerState.ACTIVE] += float(n) - float(silent or 0)
            else:
                counts[state] = counts.get(state, 0.0) + float(n)
        online = GaugeMetricFamily(
            "tuneyard_workers",
            "Registered workers by state; an active one silent for over a lease is lost.",
            labels=["state"],
        )
        for state, count in sorted(counts.items()):
            online.add_metric([state], count)

        leases = GaugeMetricFamily(
            "tuneyard_stale_leases",
            "Running trials whose lease has expired and that are not reaped yet.",
            value=float(stale or 0),
        )
        return [by_state, online, leases]

    @staticmethod
    def _queues(url: str) -> Metric | None:
        """Jobs waiting in each RQ queue, or None when Redis does not answer in time."""
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        )
        try:
            keys = sorted(_text(k) for k in client.smembers(RQ_QUEUES_KEY))
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.llen(key)
            lengths: list[Any] = pipe.execute() if keys else []
        except (redis.RedisError, OSError) as exc:
            # The URL may carry Redis' password: never log it as it is.
            log.warning("metrics: Redis at %s unreadable: %s", redact_url(url), type(exc).__name__)
            return None
        finally:
            client.close()
        depth = GaugeMetricFamily(
            "tuneyard_queue_depth", "Jobs waiting in each RQ queue.", labels=["queue"]
        )
        for key, n in zip(keys, lengths, strict=True):
            depth.add_metric([key.removeprefix(RQ_QUEUE_PREFIX)], float(n))
        return depth


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
