"""Every worker call about a trial names its attempt; a call of an attempt that is no longer
the trial's live one is refused with 409 "Stale attempt" and changes nothing (SQLite and
PostgreSQL). A re-run's report of a step an earlier attempt reported is stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API, archive, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

STALE = "urn:tuneyard:problem:stale-attempt"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def _rerun(http: TestClient, clock: FakeClock) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """A trial whose first attempt reported steps 1-2 then went silent past its lease, and
    that runs again as attempt 2 (FIFO: a job runs to max_resource without pausing)."""
    spec = study_spec(
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 9},
        limits={"max_trials": 1, "max_concurrent": 1},
        execution={"entrypoint": "x:y", "max_retries": 2},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    first = http.post(f"{API}/studies/{sid}/next", json={"worker": "zombie"}).json()
    assert first["attempt"] == 1
    tid = first["trial_id"]
    for step, value in ((1, 0.9), (2, 0.8)):
        r = http.post(
            f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": step, "value": value}
        )
        assert r.status_code == 200, r.text
    clock.advance(61)  # frozen: no report, no heartbeat for longer than the lease
    second = http.post(f"{API}/studies/{sid}/next", json={"worker": "live"}).json()
    assert second["trial_id"] == tid and second["attempt"] == 2
    return tid, first, second


def _stale(r: Any) -> None:
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["type"] == STALE and body["title"] == "Stale attempt", body
    assert "stop this job" in body["detail"] and body["current_attempt"] == 2


def test_every_call_of_a_superseded_attempt_is_refused_and_changes_nothing(
    http: TestClient, clock: FakeClock
) -> None:
    tid, _, _ = _rerun(http, clock)
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 2, "step": 1, "value": 0.5})
    assert r.status_code == 200 and r.json()["attempt"] == 2
    before = http.get(f"{API}/trials/{tid}").json()

    zombie = {
        "reports": {"attempt": 1, "step": 3, "value": 0.01},
        "heartbeat": {"attempt": 1},
        "pause": {"attempt": 1, "checkpoint": None},
        "complete": {"attempt": 1, "value": 0.01},
        "fail": {"attempt": 1, "error": "timed out (45 s)"},
        "release": {"attempt": 1, "reason": "the worker is stopping"},
        "log": {"attempt": 1, "offset": 0, "text": "late output of the zombie\n"},
    }
    for call, body in zombie.items():
        _stale(http.post(f"{API}/trials/{tid}/{call}", json=body))
    # A step the live attempt already reported, sent again by the zombie, is refused too.
    _stale(http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": 0.01}))
    upload = http.put(
        f"{API}/trials/{tid}/checkpoint", params={"attempt": 1}, content=archive(b"weights")
    )
    _stale(upload)

    after = http.get(f"{API}/trials/{tid}").json()
    assert after == before, "a stale call changed the trial"
    assert after["state"] == "running" and after["attempts"] == 2
    assert "zombie" not in http.get(f"{API}/trials/{tid}/log").text

    # The live attempt goes on and ends well.
    r = http.post(f"{API}/trials/{tid}/heartbeat", json={"attempt": 2})
    assert r.status_code == 200, r.text
    ok = http.put(
        f"{API}/trials/{tid}/checkpoint", params={"attempt": 2}, content=archive(b"weights")
    )
    assert ok.status_code == 201, ok.text
    done = http.post(f"{API}/trials/{tid}/complete", json={"attempt": 2, "value": 0.3})
    assert done.status_code == 200 and done.json()["state"] == "completed"


def test_a_call_between_the_reap_and_the_rerun_is_refused_as_stale(
    http: TestClient, clock: FakeClock
) -> None:
    spec = study_spec(
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 9},
        limits={"max_trials": 2, "max_concurrent": 1},
        execution={"entrypoint": "x:y", "max_retries": 2},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    tid = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()["trial_id"]
    clock.advance(61)
    http.post(f"{API}/studies/{sid}/next", json={"worker": "other"})  # reaps, re-runs it
    http.post(f"{API}/trials/{tid}/release", json={"attempt": 2, "reason": "stopping"})
    # Now queued again with attempt 2 over: attempt 2's late calls are stale as well.
    assert http.get(f"{API}/trials/{tid}").json()["state"] == "queued"
    r = http.post(f"{API}/trials/{tid}/heartbeat", json={"attempt": 2})
    assert r.status_code == 409 and r.json()["type"] == STALE
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 2, "step": 1, "value": 0.4})
    assert r.status_code == 409 and r.json()["type"] == STALE
    # ... while the repeat of the release itself still gets its stored answer.
    again = http.post(f"{API}/trials/{tid}/release", json={"attempt": 2, "reason": "stopping"})
    assert again.status_code == 200 and again.json()["state"] == "queued"


def test_a_reruns_report_of_an_earlier_step_is_stored(http: TestClient, clock: FakeClock) -> None:
    """Attempt 1 stored steps 1 and 2; the re-run (from the job's start) reports them again
    with other values: each acknowledgement means the value is stored."""
    tid, _, _ = _rerun(http, clock)
    for step, value in ((1, 0.5), (2, 0.4), (3, 0.3)):
        r = http.post(
            f"{API}/trials/{tid}/reports", json={"attempt": 2, "step": step, "value": value}
        )
        assert r.status_code == 200, r.text
        assert r.json()["value"] == value and r.json()["attempt"] == 2
    # A repeat of the re-run's own report is answered from what is stored (idempotent).
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 2, "step": 2, "value": 0.99})
    assert r.json()["value"] == 0.4
    detail = http.get(f"{API}/trials/{tid}").json()
    curve = [(rep["step"], rep["value"]) for rep in detail["reports"]]
    assert curve == [(1, 0.5), (2, 0.4), (3, 0.3)]
    assert detail["value"] == 0.3


def test_reason_is_the_error_and_a_good_ending_drops_an_earlier_error(
    http: TestClient, clock: FakeClock
) -> None:
    spec = study_spec(
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 9},
        limits={"max_trials": 1, "max_concurrent": 1},
        execution={"entrypoint": "x:y", "max_retries": 1},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    tid = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()["trial_id"]
    r = http.post(
        f"{API}/trials/{tid}/fail",
        json={
            "attempt": 1,
            "error": "timed out: the objective ran past execution.timeout (45 s)",
            "output": "epoch 3 loss 0.2\nepoch 4 loss 0.1",
        },
    )
    assert r.status_code == 200, r.text
    t = http.get(f"{API}/trials/{tid}").json()
    assert t["reason"].endswith("timed out: the objective ran past execution.timeout (45 s)")
    assert "epoch 4 loss 0.1" in t["error"]  # the output is kept with the error
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()
    assert job["attempt"] == 2
    r = http.post(f"{API}/trials/{tid}/complete", json={"attempt": 2, "value": 0.1})
    t = http.get(f"{API}/trials/{tid}").json()
    assert t["state"] == "completed" and t["error"] is None
    assert [a["error"] is not None for a in t["attempt_log"]] == [True, False]


def test_a_traceback_reason_is_its_exception_line(http: TestClient) -> None:
    spec = study_spec(limits={"max_trials": 1, "max_concurrent": 1})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    tid = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()["trial_id"]
    tb = (
        "Traceback (most recent call last):\n"
        '  File "train.py", line 3, in train\n'
        "    raise ValueError('loss exploded')\n"
        "ValueError: loss exploded\n"
    )
    r = http.post(f"{API}/trials/{tid}/fail", json={"attempt": 1, "error": tb, "output": "x\ny"})
    assert r.json()["reason"] == "ValueError: loss exploded"


def test_a_worker_call_without_an_attempt_is_refused(http: TestClient) -> None:
    spec = study_spec(limits={"max_trials": 1, "max_concurrent": 1})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    tid = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()["trial_id"]
    for call, body in {
        "reports": {"step": 1, "value": 0.5},
        "heartbeat": {},
        "complete": {"value": 0.5},
        "fail": {"error": "boom"},
    }.items():
        r = http.post(f"{API}/trials/{tid}/{call}", json=body)
        assert r.status_code == 422, r.text
        assert any(e["field"] == "attempt" for e in r.json()["errors"]), r.json()
    r = http.put(f"{API}/trials/{tid}/checkpoint", content=archive(b"weights"))
    assert r.status_code == 422 and "attempt" in r.text
    assert http.get(f"{API}/trials/{tid}").json()["state"] == "running"


def test_a_rerun_pauses_where_the_lost_attempt_was_told_to_pause(
    http: TestClient, clock: FakeClock
) -> None:
    """An attempt told to pause at a rung dies before it saves its checkpoint; its re-run
    reports the same steps again: each is stored, and the rung's decision stands."""
    spec = study_spec(
        limits={"max_trials": 4, "max_concurrent": 1},
        execution={"entrypoint": "x:y", "max_retries": 2},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "gone"}).json()
    tid = job["trial_id"]
    first = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": 0.5})
    assert first.json()["decision"] == "pause"
    clock.advance(61)  # the worker vanished before /pause
    again = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()
    assert (again["trial_id"], again["attempt"], again["resource_to"]) == (tid, 2, 1)
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 2, "step": 1, "value": 0.4})
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "pause" and r.json()["reason"] == first.json()["reason"]
    p = http.post(f"{API}/trials/{tid}/pause", json={"attempt": 2, "checkpoint": None})
    assert p.status_code == 200 and p.json()["state"] == "paused"
    t = http.get(f"{API}/trials/{tid}").json()
    assert [(r["step"], r["value"], r["attempt"]) for r in t["reports"]] == [(1, 0.4, 2)]
