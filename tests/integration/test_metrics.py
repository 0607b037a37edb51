"""``/metrics`` on SQLite and PostgreSQL: counters move by what the API did, the gauges show the
database's state, the HTTP histogram is labelled by route template, Redis is optional."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeClock
from tests.helpers import API, drive, run_job, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

Labels = tuple[tuple[str, str], ...]
Samples = dict[str, dict[Labels, float]]


def scrape(http: TestClient) -> Samples:
    """Every sample of ``/metrics``: name -> (sorted labels) -> value."""
    r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def by_label(samples: Samples, name: str, label: str, **where: str) -> dict[str, float]:
    """The samples of ``name`` matching ``where``, keyed by their ``label``."""
    out: dict[str, float] = {}
    for key, v in samples.get(name, {}).items():
        labels = dict(key)
        if all(labels.get(k) == w for k, w in where.items()):
            out[labels[label]] = out.get(labels[label], 0.0) + v
    return out


def moved(before: Samples, after: Samples, name: str, label: str) -> dict[str, float]:
    """How much each series of a counter grew between two scrapes (zeros left out)."""
    old, new = by_label(before, name, label), by_label(after, name, label)
    return {k: v - old.get(k, 0.0) for k, v in new.items() if v - old.get(k, 0.0)}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def decision_log(http: TestClient, study_id: int) -> Counter[str]:
    trials = http.get(f"{API}/studies/{study_id}/trials", params={"limit": 500}).json()["items"]
    kinds: Counter[str] = Counter()
    for t in trials:
        kinds.update(d["kind"] for d in http.get(f"{API}/trials/{t['id']}").json()["decisions"])
    return kinds


def test_counters_and_gauges_follow_an_asha_study(http: TestClient) -> None:
    before = scrape(http)
    spec = study_spec(limits={"max_trials": 9, "max_concurrent": 3})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]

    answers: Counter[str] = Counter()

    def count(job: object, step: float, ans: dict[str, object]) -> None:
        answers[str(ans["decision"])] += 1

    # Part of the study: it is still running, so the trials gauge shows it.
    for _ in range(5):
        job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
        run_job(http, job, on_report=count)
    middle = scrape(http)
    reports = sum(answers.values())
    assert moved(before, middle, "tuneyard_reports_total", "decision") == dict(answers)
    assert sum(moved(before, middle, "tuneyard_reports_total", "decision").values()) == reports
    counts = {
        k: float(v) for k, v in http.get(f"{API}/studies/{sid}").json()["counts"].items() if v
    }
    assert by_label(middle, "tuneyard_trials", "state", study=str(sid)) == counts
    assert counts.get("paused"), "ASHA paused a trial at its first rung"

    drive(http, sid, on_report=count)
    after = scrape(http)
    reports = sum(answers.values())
    assert moved(before, after, "tuneyard_reports_total", "decision") == dict(answers)

    log = decision_log(http, sid)
    assert moved(before, after, "tuneyard_decisions_total", "kind") == dict(log)
    assert log["start"] == 9 and log["pause"] >= 1
    started = value(after, "tuneyard_trials_started_total") - value(
        before, "tuneyard_trials_started_total"
    )
    assert started == 9
    promoted = value(after, "tuneyard_promotions_total") - value(
        before, "tuneyard_promotions_total"
    )
    assert promoted == log["promote"]
    assert value(after, "tuneyard_suggest_seconds_count", sampler="random") == 9

    # A finished study leaves the trials gauge.
    assert by_label(after, "tuneyard_trials", "state", study=str(sid)) == {}

    # HTTP latency by route template: bounded label values, one series per route.
    routes = by_label(after, "tuneyard_http_request_duration_seconds_count", "route", method="POST")
    assert all(r == "/api/v1/studies" or "_id}" in r for r in routes), routes
    assert routes["/api/v1/trials/{trial_id}/reports"] == reports
    assert routes["/api/v1/studies/{study_id}/next"] >= 9
    assert routes["/api/v1/studies"] == 1
    assert (
        value(
            after,
            "tuneyard_http_request_duration_seconds_count",
            method="GET",
            route="/metrics",
            status="200",
        )
        == 2  # the scrapes before this one: a request is observed once it has ended
    )
    http.get("/no/such/path")
    missing = scrape(http)
    assert (
        value(
            missing,
            "tuneyard_http_request_duration_seconds_count",
            method="GET",
            route="unmatched",
            status="404",
        )
        == 1
    )


def test_a_repeated_report_is_counted_once(http: TestClient) -> None:
    sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
    url = f"{API}/trials/{job['trial_id']}/reports"
    before = scrape(http)
    body = {"attempt": job["attempt"], "step": 1, "value": 0.5}
    decision = http.post(url, json=body).json()["decision"]
    once = scrape(http)
    assert http.post(url, json=body).json()["decision"] == decision
    assert moved(before, once, "tuneyard_reports_total", "decision") == {decision: 1}
    assert moved(once, scrape(http), "tuneyard_reports_total", "decision") == {}


def test_workers_and_stale_leases_are_read_at_scrape_time(
    http: TestClient, clock: FakeClock
) -> None:
    sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
    http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"})
    for name in ("a", "b"):
        r = http.post(f"{API}/workers", json={"name": name, "host": "h"})
        assert r.status_code == 201, r.text
    now = scrape(http)
    assert by_label(now, "tuneyard_workers", "state") == {"active": 2.0, "lost": 0.0}
    assert value(now, "tuneyard_stale_leases") == 0
    assert value(now, "tuneyard_scrape_source_up", source="database") == 1

    clock.advance(61)  # past the 60 s lease: the trial's and the silent worker's
    wid = http.post(f"{API}/workers", json={"name": "b", "host": "h"}).json()["id"]
    http.post(f"{API}/workers/{wid}/heartbeat", json={})
    later = scrape(http)
    assert by_label(later, "tuneyard_workers", "state") == {"active": 1.0, "lost": 1.0}
    assert value(later, "tuneyard_stale_leases") == 1
    assert by_label(later, "tuneyard_trials", "state", study=str(sid)) == {"running": 1.0}


def test_queue_depth_comes_from_redis(settings: Settings, redis_url: str) -> None:
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(redis_url)
    queue = Queue("tq-metrics", connection=conn)
    for i in range(3):
        queue.enqueue("builtins.print", i)
    with TestClient(create_app(settings.model_copy(update={"redis_url": redis_url}))) as http:
        samples = scrape(http)
    conn.close()
    assert by_label(samples, "tuneyard_queue_depth", "queue") == {"tq-metrics": 3.0}
    assert value(samples, "tuneyard_scrape_source_up", source="redis") == 1


def test_an_unreachable_redis_leaves_out_queue_depth(settings: Settings) -> None:
    gone = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(gone)) as http:
        samples = scrape(http)
    assert "tuneyard_queue_depth" not in samples
    assert value(samples, "tuneyard_scrape_source_up", source="redis") == 0
    assert value(samples, "tuneyard_scrape_source_up", source="database") == 1


def test_each_app_counts_in_its_own_registry(settings: Settings) -> None:
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        sid = one.post(f"{API}/studies", json=study_spec()).json()["id"]
        one.post(f"{API}/studies/{sid}/next", json={"worker": "w0"})
        assert value(scrape(one), "tuneyard_trials_started_total") == 1
        assert value(scrape(two), "tuneyard_trials_started_total") == 0
        # The gauges read the shared database, so both processes show the trial.
        assert by_label(scrape(two), "tuneyard_trials", "state", study=str(sid)) == {"running": 1.0}
