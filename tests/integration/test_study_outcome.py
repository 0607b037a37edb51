"""How a study says what became of it: fail fast (``failing``, with the error, and resume), an
end with no completed trial (``failed`` or ``exhausted``, never ``completed``), the warnings
given at creation, and its best values (the best completed trial, the best at each rung)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

NO_ATTR = (
    "Traceback (most recent call last):\n"
    '  File "/w/objective.py", line 3, in train\n'
    "    train.train_slow()\n"
    "AttributeError: module 'train' has no attribute 'train_slow'\n"
)
SUMMARY = "AttributeError: module 'train' has no attribute 'train_slow'"


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=FakeClock())) as c:
        yield c


def spec(max_trials: int = 10, **limits: Any) -> dict[str, Any]:
    return study_spec(
        limits={"max_trials": max_trials, "max_concurrent": 1, **limits},
        execution={"entrypoint": "examples.mlp_digits:train", "max_retries": 0},
    )


def create(http: TestClient, body: dict[str, Any]) -> int:
    r = http.post(f"{API}/studies", json=body)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def start(http: TestClient, sid: int) -> dict[str, Any]:
    r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def fail(http: TestClient, job: dict[str, Any], error: str = NO_ATTR) -> None:
    r = http.post(
        f"{API}/trials/{job['trial_id']}/fail", json={"attempt": job["attempt"], "error": error}
    )
    assert r.status_code == 200, r.text


def report(http: TestClient, job: dict[str, Any], step: float, value: float) -> str:
    r = http.post(
        f"{API}/trials/{job['trial_id']}/reports",
        json={"attempt": job["attempt"], "step": step, "value": value},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["decision"])


def study(http: TestClient, sid: int) -> dict[str, Any]:
    return dict(http.get(f"{API}/studies/{sid}").json())


# -- fail fast -----------------------------------------------------------------------------------
def test_three_first_trials_failing_alike_make_the_study_fail_fast(http: TestClient) -> None:
    sid = create(http, spec())
    jobs = []
    for _ in range(3):
        assert study(http, sid)["state"] == "running"
        jobs.append(start(http, sid))
        fail(http, jobs[-1])
    st = study(http, sid)
    assert st["state"] == "failing"
    assert st["error"] == {
        "summary": SUMMARY,
        "type": "AttributeError",
        "trial_id": jobs[-1]["trial_id"],
        "count": 3,
    }
    assert "the first 3 trials failed with the same error" in st["reason"]
    assert SUMMARY in st["reason"]
    # It starts nothing more: no new trial for any worker, and it is listed as failing.
    assert http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).status_code == 204
    assert st["trials_started"] == 3
    listed = http.get(f"{API}/studies").json()["items"]
    assert [(s["id"], s["state"]) for s in listed] == [(sid, "failing")]
    assert listed[0]["error"]["summary"] == SUMMARY

    # Resumed (the code fixed), it goes on; the same error three times more fails it again.
    r = http.patch(f"{API}/studies/{sid}", json={"state": "running"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "running" and r.json()["error"] is None
    assert "resumed after failing" in r.json()["reason"]
    job = start(http, sid)
    assert job["number"] == 3
    fail(http, job)
    assert study(http, sid)["state"] == "running", "the streak starts over at a resume"
    for _ in range(2):
        fail(http, start(http, sid))
    assert study(http, sid)["state"] == "failing"


def test_the_dashboards_study_json_carries_the_error_and_the_best_per_rung(
    http: TestClient,
) -> None:
    sid = create(http, spec())
    first = start(http, sid)
    report(http, first, 1, 0.25)  # reaches rung 0, then it and the next ones crash alike
    fail(http, first)
    for _ in range(3):
        fail(http, start(http, sid))
    dash = f"{API}/dashboard/studies"
    (card,) = http.get(dash).json()["items"]
    assert card["state"] == "running" and card["error"] is None  # it reached a rung: no fail fast
    http.patch(f"{API}/studies/{sid}", json={"state": "stopped"})
    sid = create(http, spec())
    jobs = [start(http, sid)]
    fail(http, jobs[0])
    for _ in range(2):
        jobs.append(start(http, sid))
        fail(http, jobs[-1])
    card = http.get(dash).json()["items"][0]
    assert card["id"] == sid and card["state"] == "failing"
    assert card["error"]["summary"] == SUMMARY and card["error"]["trial_id"] == jobs[-1]["trial_id"]
    assert card["reason"].startswith("failing: the first 3 trials")
    page = http.get(f"{dash}/{sid}").json()
    assert page["error"] == card["error"] and page["best_by_rung"] == []
    (old,) = [c for c in http.get(dash).json()["items"] if c["id"] != sid]
    detail = http.get(f"{dash}/{old['id']}").json()
    assert detail["best_by_rung"] == [
        {
            "rung": 0,
            "resource": 1.0,
            "entries": 1,
            "value": 0.25,
            "trial_id": first["trial_id"],
            "number": 0,
        }
    ]


def test_a_failing_study_can_be_stopped_and_not_paused(http: TestClient) -> None:
    sid = create(http, spec(fail_fast=1))
    fail(http, start(http, sid))
    assert study(http, sid)["state"] == "failing"
    r = http.patch(f"{API}/studies/{sid}", json={"state": "paused"})
    assert r.status_code == 409 and "failing and cannot become paused" in r.text
    r = http.patch(f"{API}/studies/{sid}", json={"state": "stopped"})
    assert r.status_code == 200 and r.json()["state"] == "stopped"


def test_running_trials_finish_while_the_study_is_failing(http: TestClient) -> None:
    body = spec()
    body["limits"]["max_concurrent"] = 3
    sid = create(http, body)
    jobs = [start(http, sid) for _ in range(3)]
    assert http.post(f"{API}/studies/{sid}/next", json={}).status_code == 204  # slots full
    fail(http, jobs[0])
    fail(http, jobs[1])
    late = start(http, sid)  # a slot freed: a fourth trial starts while two run
    fail(http, jobs[2])
    assert study(http, sid)["state"] == "failing"
    # The trial still running reports and is answered as usual.
    assert report(http, late, 1, 0.4) in ("pause", "continue")


def test_different_errors_or_a_trial_that_reached_a_rung_do_not_fail_fast(
    http: TestClient,
) -> None:
    sid = create(http, spec())
    for n in range(4):
        fail(http, start(http, sid), f"Traceback (most recent call last):\nValueError: bad {n}")
    assert study(http, sid)["state"] == "running"

    sid = create(http, spec())
    first = start(http, sid)
    report(http, first, 1, 0.5)  # it reached the first rung: the code runs
    fail(http, first)
    for _ in range(3):
        fail(http, start(http, sid))
    assert study(http, sid)["state"] == "running"


def test_fail_fast_zero_turns_it_off_and_a_study_of_failures_ends_failed(
    http: TestClient,
) -> None:
    sid = create(http, spec(max_trials=4, fail_fast=0))
    for _ in range(4):
        fail(http, start(http, sid))
    st = study(http, sid)
    assert st["state"] == "failed"
    assert st["reason"] == f"no trial completed: all 4 trials failed; the last error: {SUMMARY}"
    assert st["error"]["summary"] == SUMMARY and st["error"]["count"] == 4
    assert st["best"] is None
    assert http.post(f"{API}/studies/{sid}/next", json={}).status_code == 409


def test_a_streak_that_ends_the_budget_ends_the_study_failed_not_failing(
    http: TestClient,
) -> None:
    # Nothing is left to start: failing would only wait for a resume that could do nothing.
    sid = create(http, spec(max_trials=3))
    for _ in range(3):
        fail(http, start(http, sid))
    st = study(http, sid)
    assert st["state"] == "failed" and st["error"]["count"] == 3
    assert st["reason"] == f"no trial completed: all 3 trials failed; the last error: {SUMMARY}"


def test_a_failing_study_resumed_with_nothing_left_to_start_ends_failed(
    http: TestClient,
) -> None:
    body = spec(max_trials=4)
    body["limits"]["max_concurrent"] = 2
    sid = create(http, body)
    first, second = start(http, sid), start(http, sid)
    fail(http, first)
    fail(http, second)
    third, fourth = start(http, sid), start(http, sid)
    fail(http, third)  # the third alike: failing, with the fourth still running
    assert study(http, sid)["state"] == "failing"
    fail(http, fourth, "Traceback (most recent call last):\nOSError: disk full")
    assert study(http, sid)["state"] == "failing", "it waits for a resume"
    # Resumed with its budget spent, it ends at once.
    r = http.patch(f"{API}/studies/{sid}", json={"state": "running"})
    assert r.status_code == 200 and r.json()["state"] == "failed"
    assert http.post(f"{API}/studies/{sid}/next", json={}).status_code == 409
    st = study(http, sid)
    assert st["state"] == "failed" and st["error"]["summary"] == "OSError: disk full"


def test_fail_fast_is_validated(http: TestClient) -> None:
    r = http.post(f"{API}/studies", json=spec(fail_fast=-1))
    assert r.status_code == 422 and "fail_fast" in r.text


# -- an honest end -------------------------------------------------------------------------------
def test_a_budget_spent_on_stopped_and_failed_trials_ends_exhausted(http: TestClient) -> None:
    body = spec(max_trials=2)
    body["scheduler"]["mode"] = "stopping"
    sid = create(http, body)
    first = start(http, sid)
    assert report(http, first, 1, 0.5) == "continue"
    fail(http, first, "Traceback (most recent call last):\nRuntimeError: CUDA out of memory")
    second = start(http, sid)
    assert report(http, second, 1, 0.9) == "stop"
    if study(http, sid)["state"] == "running":  # ended at the next call if not at the stop
        assert http.post(f"{API}/studies/{sid}/next", json={}).status_code == 409
    st = study(http, sid)
    assert st["state"] == "exhausted"
    assert st["reason"].startswith("no trial completed: all 2 trials of the budget")
    assert st["error"]["type"] == "RuntimeError"
    assert st["best"] is None


def test_a_study_with_a_completed_trial_still_completes(http: TestClient) -> None:
    body = study_spec(scheduler={"max_resource": 9}, limits={"max_trials": 9})
    sid = create(http, body)
    drive(http, sid)
    st = study(http, sid)
    assert st["state"] == "completed" and st["reason"] == "all trials finished"
    assert st["error"] is None and st["best"]["state"] == "completed"


# -- warnings at creation ------------------------------------------------------------------------
def test_a_max_trials_too_small_for_the_rungs_is_warned_of(http: TestClient) -> None:
    r = http.post(f"{API}/studies", json=study_spec(limits={"max_trials": 24}))
    assert r.status_code == 201
    (warning,) = r.json()["warnings"]
    assert "limits.max_trials (24)" in warning
    assert "reduction_factor 3 and 4 rungs (1, 3, 9, 27)" in warning
    assert "at least 27 trials" in warning
    assert study(http, r.json()["id"])["warnings"] == [warning]

    r = http.post(f"{API}/studies", json=study_spec(limits={"max_trials": 27}))
    assert r.status_code == 201 and r.json()["warnings"] == []


# -- best values ---------------------------------------------------------------------------------
def test_best_is_the_best_completed_trial_and_each_rung_shows_its_best(http: TestClient) -> None:
    sid = create(
        http,
        study_spec(
            scheduler={"max_resource": 9},
            limits={"max_trials": 12, "max_concurrent": 1},
            execution={"entrypoint": "examples.mlp_digits:train", "max_retries": 0},
        ),
    )
    # Trial 0 reports a value better than any other at the first rung, then crashes.
    crashed = start(http, sid)
    report(http, crashed, 1, -100.0)
    fail(http, crashed, "Traceback (most recent call last):\nRuntimeError: boom")
    drive(http, sid)
    st = study(http, sid)
    assert st["state"] == "completed"
    assert st["best"]["state"] == "completed" and st["best"]["value"] > -100

    # The best at each rung is the best report at that rung's resource, over every trial.
    seen: dict[float, tuple[float, int]] = {}
    trials = http.get(f"{API}/studies/{sid}/trials", params={"limit": 100}).json()["items"]
    for t in trials:
        for rep in http.get(f"{API}/trials/{t['id']}").json()["reports"]:
            step, value = rep["step"], rep["value"]
            if step in (1, 3, 9) and (step not in seen or value < seen[step][0]):
                seen[step] = (value, t["id"])
    rungs = st["best_by_rung"]
    assert [r["resource"] for r in rungs] == [1, 3, 9]
    assert [r["rung"] for r in rungs] == [0, 1, 2]
    assert {r["resource"]: (r["value"], r["trial_id"]) for r in rungs} == seen
    assert rungs[0]["value"] == -100.0 and rungs[0]["trial_id"] == crashed["trial_id"]
    assert rungs[0]["entries"] == 12
    assert rungs[-1]["value"] == st["best"]["value"]
    # Listings leave the per-rung bests out.
    assert http.get(f"{API}/studies").json()["items"][0]["best_by_rung"] is None


def test_a_maximised_metric_has_its_best_per_rung_the_largest(http: TestClient) -> None:
    sid = create(
        http,
        study_spec(
            direction="maximize",
            scheduler={"max_resource": 3},
            limits={"max_trials": 3, "max_concurrent": 3},
        ),
    )
    values = [0.2, 0.7, 0.5]
    for v in values:
        job = start(http, sid)
        report(http, job, 1, v)
    (rung0, *_) = study(http, sid)["best_by_rung"]
    assert rung0["value"] == 0.7 and rung0["entries"] == 3
