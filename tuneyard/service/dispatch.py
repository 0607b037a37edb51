"""The dispatcher: keeps each running study's RQ queue holding as many slot jobs as it has free
concurrency (``max_concurrent`` minus running trials minus jobs already queued).

The database is the source of truth; Redis holds only work in flight. The jobs queued for a
study are a Redis set of job ids; ids whose job left the queue (started, or lost with Redis)
are dropped on each pass, so a flushed or restarted Redis is refilled on the next tick.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import func, select
from sqlalchemy.exc import (
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tuneyard.outage import Outage
from tuneyard.protocol import PENDING_KEY, SLOT_JOB
from tuneyard.redact import redact_text
from tuneyard.service.context import Toolkit
from tuneyard.service.notifications import Notifier
from tuneyard.service.trials import TrialService
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState
from tuneyard.store.models import Study, StudyCounters

log = logging.getLogger("tuneyard.dispatcher")
WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


@dataclass(frozen=True)
class Fill:
    study_id: int
    queue: str
    enqueued: int


class Dispatcher:
    def __init__(self, kit: Toolkit, redis: Redis, api_url: str) -> None:
        self.kit = kit
        self.redis = redis
        self.api_url = api_url
        where = redis.connection_pool.connection_kwargs
        self.redis_outage = Outage(f"Redis at {where.get('host')}:{where.get('port')}", log)
        self.database_outage = Outage("the database", log)
        self.notifier = Notifier(kit)

    def _pending(self, study_id: int, queue: str) -> int:
        """Jobs of the study still waiting in its queue. Ids whose job started, vanished with
        Redis, or waits in another queue (one the study no longer uses, or another
        deployment's study of the same id sharing this Redis) are dropped."""
        key = PENDING_KEY.format(study_id=study_id)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in self.redis.smembers(key)]
        if not ids:
            return 0
        jobs = Job.fetch_many(ids, connection=self.redis)
        gone = [
            i
            for i, j in zip(ids, jobs, strict=True)
            if j is None or j.origin != queue or j.get_status() not in WAITING
        ]
        if gone:
            self.redis.srem(key, *gone)
        return len(ids) - len(gone)

    def tick(self) -> list[Fill]:
        """One pass: reap expired trial leases, post the studies' due webhook events (a
        few, for a few seconds at most: Redis being down holds none back), then fill each
        running study's queue."""
        reaped = TrialService(self.kit).reap_expired()
        if reaped:
            log.info("reaped expired leases in studies %s", reaped)
        self.notifier.deliver_due(limit=10, budget=5.0)
        with self.kit.transaction() as s:
            rows = s.execute(
                select(Study.id, Study.spec, func.coalesce(StudyCounters.active, 0))
                .outerjoin(StudyCounters, StudyCounters.study_id == Study.id)
                .where(Study.state == StudyState.RUNNING)
            ).all()
        fills = []
        for study_id, raw, active in rows:
            spec = StudySpec.from_stored(raw)
            if spec.execution is None or not (spec.execution.entrypoint or spec.execution.command):
                continue  # an ask/tell study: its clients bring their own workers
            pending = self._pending(study_id, spec.execution.queue)
            free = spec.limits.max_concurrent - active - pending
            if free <= 0:
                continue
            queue = Queue(spec.execution.queue, connection=self.redis)
            timeout = int(spec.execution.timeout + 120) if spec.execution.timeout else -1
            key = PENDING_KEY.format(study_id=study_id)
            for _ in range(free):
                job = queue.enqueue(
                    SLOT_JOB,  # by name: the dispatcher imports nothing of the worker
                    study_id,
                    self.api_url,
                    job_timeout=timeout,
                    result_ttl=600,
                    failure_ttl=86400,
                    description=f"study {study_id} slot",
                )
                self.redis.sadd(key, job.id)
            fills.append(Fill(study_id, spec.execution.queue, free))
        return fills

    def run(self, interval: float = 0.5, stop: threading.Event | None = None) -> None:
        """Pass after pass, ``interval`` seconds apart. A lost Redis or database is one
        warning; the passes then back off (up to 30 s) until it answers, which is one line
        more. An error of another kind is logged with its traceback, once per kind in a row."""
        stop = stop or threading.Event()
        last_error: str | None = None
        while not stop.is_set():
            wait = interval
            try:
                for fill in self.tick():
                    log.info(
                        "study %s: %s slot jobs on %s", fill.study_id, fill.enqueued, fill.queue
                    )
                self.redis_outage.ok()
                self.database_outage.ok()
                last_error = None
            except RedisError as exc:
                self.database_outage.ok()  # the pass read the database before Redis failed
                wait = max(interval, self.redis_outage.failed(redact_text(str(exc))))
            except SQLAlchemyError as exc:
                if _lost_connection(exc):
                    cause = getattr(exc, "orig", None) or exc
                    why = redact_text((str(cause).strip().splitlines() or ["?"])[0])
                    wait = max(interval, self.database_outage.failed(why))
                else:
                    last_error = self._unexpected(exc, last_error)
            except Exception as exc:
                last_error = self._unexpected(exc, last_error)
            stop.wait(wait)

    @staticmethod
    def _unexpected(exc: Exception, last: str | None) -> str:
        """Log a pass's unexpected error with its traceback, unless the last pass failed
        with the same; returns its text."""
        kind = f"{type(exc).__name__}: {exc}"
        if kind != last:
            log.exception("dispatcher pass failed; retrying")
        return kind


def _lost_connection(exc: SQLAlchemyError) -> bool:
    """Whether the error is one of reaching the database (down, restarting, saturated), as
    the API answers 503 for, not one of the statement."""
    lost = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)
    return isinstance(exc, lost) or bool(getattr(exc, "connection_invalidated", False))
