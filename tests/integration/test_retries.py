"""A failed attempt (lease expired, or the worker reported a crash) is retried up to
execution.max_retries, running the same job again from the checkpoint it started from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API, checkpoint, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def spec(retries: int) -> dict:  # type: ignore[type-arg]
    return study_spec(
        limits={"max_trials": 3, "max_concurrent": 1},
        execution={"entrypoint": "examples.mlp_digits:train", "max_retries": retries},
    )


def test_expired_lease_is_retried_then_failed(http: TestClient, clock: FakeClock) -> None:
    sid = http.post(f"{API}/studies", json=spec(1)).json()["id"]
    first = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
    clock.advance(61)  # the worker vanished: no report, no heartbeat
    again = http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).json()
    assert again["trial_id"] == first["trial_id"] and again["number"] == 0
    assert (again["resource_from"], again["resource_to"]) == (0, 1)
    assert "retry 1 of 1: lease expired" in again["reason"]
    clock.advance(61)
    third = http.post(f"{API}/studies/{sid}/next", json={"worker": "w3"}).json()
    assert third["number"] == 1, "retries exhausted: the study moves on"
    t = http.get(f"{API}/trials/{first['trial_id']}").json()
    assert t["state"] == "failed" and "lease expired" in t["error"]
    assert [a["worker"] for a in t["attempt_log"]] == ["w1", "w2"]
    assert [a["state"] for a in t["attempt_log"]] == ["failed", "failed"]
    assert "retry" in [d["kind"] for d in t["decisions"]]


def test_reported_crash_is_retried_from_the_checkpoint_it_started_from(http: TestClient) -> None:
    sid = http.post(f"{API}/studies", json=spec(2)).json()["id"]
    # Three trials at rung 0 so that the best one gets promoted and resumed.
    for _ in range(3):
        job = http.post(f"{API}/studies/{sid}/next").json()
        tid = job["trial_id"]
        ans = http.post(
            f"{API}/trials/{tid}/reports",
            json={"attempt": 1, "step": 1, "value": 1.0 - 0.1 * job["number"]},
        ).json()
        if ans["decision"] == "pause":
            http.post(
                f"{API}/trials/{tid}/pause",
                json={"attempt": 1, "checkpoint": checkpoint(http, tid, 1)},
            )
        else:
            assert ans["decision"] == "continue" and ans["resource_to"] == 3
            resumed = job | {"resource_from": 1.0, "resource_to": 3.0}
    tid = resumed["trial_id"]
    http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 2, "value": 0.5})
    r = http.post(
        f"{API}/trials/{tid}/fail",
        json={"attempt": 1, "error": "Traceback\nRuntimeError: CUDA OOM"},
    )
    assert r.status_code == 200 and r.json()["state"] == "queued"
    assert (
        http.post(
            f"{API}/trials/{tid}/fail",
            json={"attempt": 1, "error": "Traceback\nRuntimeError: CUDA OOM"},
        ).status_code
        == 200
    )
    retry = http.post(f"{API}/studies/{sid}/next").json()
    assert retry["trial_id"] == tid and retry["kind"] == "new"
    assert (retry["resource_from"], retry["resource_to"]) == (0.0, 3.0)
    assert retry["attempt"] == 2
    # The retry's report of step 2 replaces the failed attempt's (its answer means "stored");
    # a repeat of it is answered from what is stored; step 3 is new.
    body = {"attempt": 2, "step": 2, "value": 0.9}
    assert http.post(f"{API}/trials/{tid}/reports", json=body).json()["value"] == 0.9
    body = {"attempt": 2, "step": 2, "value": 0.7}
    assert http.post(f"{API}/trials/{tid}/reports", json=body).json()["value"] == 0.9
    done = http.post(
        f"{API}/trials/{tid}/reports", json={"attempt": 2, "step": 3, "value": 0.4}
    ).json()
    assert done["decision"] in ("pause", "continue")
    reports = http.get(f"{API}/trials/{tid}").json()["reports"]
    assert [(r["step"], r["value"], r["attempt"]) for r in reports if r["step"] >= 2] == [
        (2, 0.9, 2),
        (3, 0.4, 2),
    ]


def test_reaping_without_anyone_asking_for_work(settings: Settings, clock: FakeClock) -> None:
    from tuneyard.service.context import Toolkit
    from tuneyard.service.trials import TrialService
    from tuneyard.store.db import make_engine, make_sessionmaker

    with TestClient(create_app(settings, clock=clock)) as http:
        sid = http.post(f"{API}/studies", json=spec(1)).json()["id"]
        tid = http.post(f"{API}/studies/{sid}/next").json()["trial_id"]
        engine = make_engine(settings.resolved_database_url())
        service = TrialService(Toolkit(make_sessionmaker(engine), settings, clock))
        assert service.reap_expired() == []
        clock.advance(61)
        assert service.reap_expired() == [sid]
        engine.dispose()
        assert http.get(f"{API}/trials/{tid}").json()["state"] == "queued"
