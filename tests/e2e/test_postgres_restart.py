"""PostgreSQL restarted under load: while it is down the API answers 503 with Retry-After, it
recovers by itself within seconds once the database is back, and no acknowledged report is
lost (workers and clients retry the unacknowledged ones; reports are idempotent)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from tests.conftest import IN_CI
from tests.e2e.pg_instance import PgInstance, binaries
from tests.e2e.stack import Deployment, assert_no_report_lost, running, wait_for
from tuneyard.client import Client
from tuneyard.store.models import Base, Report

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture
def pg() -> Iterator[PgInstance]:
    bin_dir = binaries()
    if bin_dir is None:
        if IN_CI:
            pytest.fail("PostgreSQL's initdb and pg_ctl are required under CI=true")
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) to start a private server")
    instance = PgInstance(bin_dir)
    try:
        instance.start()
        engine = create_engine(instance.url)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield instance
    finally:
        instance.close()


@pytest.fixture
def deployment(pg: PgInstance, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    # A lease longer than the outage: the test is about reports, not about reaping.
    with running(pg.url, redis_url, tmp_path, lease=30.0) as d:
        yield d


class Reporter(threading.Thread):
    """A client of its own study reporting as fast as the server lets it, through the typed
    client (which retries 503s): every report it got an answer to is recorded."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, retries=30, timeout=10, max_backoff=2)
        self.client.http.headers.update(headers)
        self.statuses: list[tuple[int, str | None]] = []
        self.client.http.event_hooks["response"].append(
            lambda r: self.statuses.append((r.status_code, r.headers.get("retry-after")))
        )
        spec = {
            "name": "reporter",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "scheduler": {"type": "fifo", "max_resource": 100_000},
            "limits": {"max_trials": 1, "max_concurrent": 1},
        }
        self.study = self.client.create_study(spec).id
        job = self.client.next(self.study)
        assert job is not None
        self.trial, self.attempt = job.trial_id, job.attempt
        self.acked: dict[float, float] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        step = 0
        try:
            while not self.stop.is_set():
                step += 1
                value = 1.0 / step
                ans = self.client.report(self.trial, step, value, attempt=self.attempt)
                assert ans.decision == "continue", ans
                self.acked[float(step)] = value
                time.sleep(0.03)
        except BaseException as exc:
            self.error = exc


def test_postgres_restarted_while_workers_report(deployment: Deployment, pg: PgInstance) -> None:
    d = deployment
    queue = f"pg-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 3)
    sid = d.create(
        {
            "name": "pg-restart",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "sampler": {"type": "random", "seed": 4},
            "scheduler": {"type": "fifo", "max_resource": 16},
            "limits": {"max_trials": 6, "max_concurrent": 3},
            "execution": {
                "entrypoint": "tests.e2e.objectives:slow_curve",
                "queue": queue,
                "max_retries": 0,
            },
        }
    )
    reporter = Reporter(d.url, dict(d.http.headers))
    reporter.start()

    seen: list[tuple[float, int, str | None]] = []
    polling = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=d.url, timeout=5, headers=d.http.headers) as http:
            while not polling.is_set():
                try:
                    r = http.get(f"/api/v1/studies/{sid}")
                    seen.append((time.monotonic(), r.status_code, r.headers.get("retry-after")))
                except httpx.HTTPError:
                    seen.append((time.monotonic(), 0, None))
                time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    def reporting() -> bool:
        items = d.http.get(f"/api/v1/studies/{sid}/trials?state=running").json()["items"]
        return len(items) >= 2 and all(t["resource"] for t in items)

    wait_for(reporting, 60, "trials reporting")
    api = d.procs["api"]
    old_pid = pg.pid()
    pg.stop("immediate")  # as a crash: connections cut, in-flight transactions lost
    down_at = time.monotonic()
    time.sleep(4)
    restart_at = time.monotonic()
    pg.start()
    up_at = time.monotonic()
    assert pg.pid() != old_pid

    def recovered() -> float | None:
        after = [t for t, status, _ in seen if t > up_at and status == 200]
        return after[0] if after else None

    back = wait_for(recovered, 30, "the API answering 200 again")
    assert back - up_at < 10, f"recovered {back - up_at:.1f} s after the database"
    assert api.poll() is None, "the API process recovered by itself"

    during = [(s, ra) for t, s, ra in seen if down_at + 0.5 < t < restart_at]
    assert during and all(s == 503 for s, _ in during), sorted(set(during))
    assert all(ra is not None and int(ra) >= 1 for _, ra in during), "503 carries Retry-After"

    time.sleep(1)  # a few more reports after the recovery
    reporter.stop.set()
    reporter.join(60)
    polling.set()
    poller.join(10)
    assert reporter.error is None, repr(reporter.error)
    assert any(s == 503 for s, _ in reporter.statuses), "the client saw 503s and retried"

    assert d.wait_finished(sid, timeout=240)["state"] == "completed"
    trials = d.trials(sid)
    assert {t["state"] for t in trials} == {"completed"}, [
        (t["number"], t["error"]) for t in trials
    ]
    for t in trials:
        assert_no_report_lost(t)
        assert t["reports"][-1]["step"] == 16

    # Every report the reporter had an answer to is stored, with its value.
    engine = create_engine(pg.url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Report.step, Report.value).where(Report.trial_id == reporter.trial)
        ).all()
    engine.dispose()
    stored: dict[float, Any] = {float(s): v for s, v in rows}
    missing = sorted(set(reporter.acked) - set(stored))
    assert not missing, f"acknowledged reports lost: {missing[:10]}"
    assert all(stored[s] == v for s, v in reporter.acked.items())
    assert len(reporter.acked) > 20
