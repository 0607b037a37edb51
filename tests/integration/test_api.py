"""The HTTP API on SQLite and on real PostgreSQL: the same tests on both backends."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, checkpoint, curve, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def create(http: TestClient, **overrides: Any) -> dict[str, Any]:
    r = http.post(f"{API}/studies", json=study_spec(**overrides))
    assert r.status_code == 201, r.text
    return r.json()


def test_create_get_list_study(http: TestClient) -> None:
    st = create(http, name="first")
    assert st["state"] == "running"
    assert st["spec"]["scheduler"]["type"] == "asha"
    got = http.get(f"{API}/studies/{st['id']}").json()
    assert got["name"] == "first"
    assert got["counts"]["running"] == 0 and got["best"] is None
    create(http, name="second")
    create(http, name="third")
    page = http.get(f"{API}/studies", params={"limit": 2}).json()
    assert [s["name"] for s in page["items"]] == ["third", "second"]
    rest = http.get(f"{API}/studies", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [s["name"] for s in rest["items"]] == ["first"] and rest["next_cursor"] is None


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"space": {"x": {"type": "float", "low": 2, "high": 1}}}, "space.x", "low"),
        ({"space": {"x": {"type": "float", "low": 0, "high": 1, "log": True}}}, "space.x", "log"),
        ({"space": {"c": {"type": "categorical", "choices": []}}}, "space.c.choices", "empty"),
        (
            {
                "space": {
                    "a": {"type": "float", "low": 0, "high": 1},
                    "b": {"type": "int", "low": 0, "high": 3, "when": {"nope": 1}},
                }
            },
            "",
            "unknown parameter 'nope'",
        ),
        (
            {
                "space": {
                    "a": {"type": "float", "low": 0, "high": 1},
                    "b": {"type": "int", "low": 0, "high": 3, "when": {"a": 0.5}},
                }
            },
            "",
            "categorical",
        ),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"space": {"x": {"type": "float", "low": 0, "high": 1, "bogus": 1}}}, "space.x.bogus", ""),
        (
            {
                "sampler": {"type": "grid"},
                "space": {f"p{i}": {"type": "int", "low": 0, "high": 9} for i in range(9)},
            },
            "",
            "1e+09 points",
        ),
        ({"scheduler": {"min_resource": 30, "max_resource": 27}}, "scheduler", "min_resource"),
        ({"limits": {"max_trials": 0}}, "limits.max_trials", "greater than"),
    ],
)
def test_invalid_definitions_are_422_naming_the_field(
    http: TestClient, change: dict[str, Any], field: str, words: str
) -> None:
    r = http.post(f"{API}/studies", json=study_spec(**change))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["status"] == 422
    assert words in body["detail"]
    if field:
        assert any(e["field"].startswith(field) for e in body["errors"]), body
    assert http.get(f"{API}/studies").json()["items"] == []


def test_malformed_and_invalid_calls_are_4xx(http: TestClient) -> None:
    st = create(http)
    r = http.post(
        f"{API}/studies", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]
    assert http.get(f"{API}/studies/999").status_code == 404
    assert http.get(f"{API}/trials/999").status_code == 404
    assert (
        http.post(
            f"{API}/trials/999/reports", json={"attempt": 1, "step": 1, "value": 1}
        ).status_code
        == 404
    )
    assert http.post(f"{API}/studies/999/next").status_code == 404
    job = http.post(f"{API}/studies/{st['id']}/next").json()
    tid = job["trial_id"]
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": -1, "value": 0.5})
    assert r.status_code == 422 and "step" in r.json()["detail"]
    r = http.post(
        f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": 0.5, "extra": 1}
    )
    assert r.status_code == 422
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 50, "value": 0.5})
    assert r.status_code == 422 and "max_resource" in r.json()["detail"]
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 2, "value": 0.5})
    assert r.status_code == 409 and "resource_to" in r.json()["detail"]
    r = http.get(f"{API}/studies/{st['id']}/trials", params={"order": "sideways"})
    assert r.status_code == 422 and "order" in r.json()["detail"]
    r = http.get(f"{API}/studies/{st['id']}/trials", params={"cursor": "garbage!"})
    assert r.status_code == 422 and "cursor" in r.json()["detail"]


def test_report_is_idempotent_and_decisions_are_recorded(http: TestClient) -> None:
    st = create(http, limits={"max_trials": 3, "max_concurrent": 1})
    job = http.post(f"{API}/studies/{st['id']}/next", json={"worker": "w1"}).json()
    assert job["kind"] == "new" and job["resource_from"] == 0 and job["resource_to"] == 1
    tid = job["trial_id"]
    first = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": 0.7})
    again = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": 0.1})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    # The first trial is alone at rung 0: top floor(1/3) = 0, so it pauses.
    assert first.json()["decision"] == "pause"
    detail = http.get(f"{API}/trials/{tid}").json()
    assert len(detail["reports"]) == 1 and detail["reports"][0]["value"] == 0.7
    assert [d["kind"] for d in detail["decisions"]] == ["start", "pause"]
    assert "rung 0" in detail["decisions"][1]["reason"]
    assert detail["attempt_log"][0]["worker"] == "w1"
    # Before the pause is acknowledged, the slot is still taken (max_concurrent 1).
    assert http.post(f"{API}/studies/{st['id']}/next").status_code == 204
    saved = checkpoint(http, tid, 1)
    body = {"attempt": 1, "checkpoint": saved}
    assert http.post(f"{API}/trials/{tid}/pause", json=body).status_code == 200
    assert http.post(f"{API}/trials/{tid}/pause", json=body).status_code == 200
    assert http.get(f"{API}/trials/{tid}").json()["state"] == "paused"
    # A finished or paused trial takes no new report; the stored one is still returned.
    assert (
        http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": 9}).json()
        == first.json()
    )
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 2, "value": 0.5})
    assert r.status_code == 409 and "paused" in r.json()["detail"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_nan_infinite_or_missing_metric_fails_the_trial(
    http: TestClient, bad: float | None
) -> None:
    st = create(http, limits={"max_trials": 2, "max_concurrent": 2})
    job = http.post(f"{API}/studies/{st['id']}/next").json()
    # JSON has no NaN: send the value as a metric the way a worker would, or leave it out.
    body: dict[str, Any] = {"attempt": 1, "step": 1, "metrics": {"accuracy": 0.5}}
    if bad is not None:
        body = {"attempt": 1, "step": 1, "metrics": {"loss": bad}}
    content = __import__("json").dumps(body)  # allow_nan: Python emits NaN / Infinity
    r = http.post(
        f"{API}/trials/{job['trial_id']}/reports",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    ans = r.json()
    assert ans["decision"] == "stop"
    word = {None: "missing"}.get(bad, "NaN" if bad is not None and math.isnan(bad) else "infinite")
    assert word in ans["reason"]
    t = http.get(f"{API}/trials/{job['trial_id']}").json()
    assert t["state"] == "failed" and word in t["error"]
    # The study goes on.
    nxt = http.post(f"{API}/studies/{st['id']}/next")
    assert nxt.status_code == 200 and nxt.json()["number"] == 1


def test_fifo_study_runs_to_completion_and_reports_best(http: TestClient) -> None:
    st = create(
        http,
        direction="maximize",
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 3},
        limits={"max_trials": 5, "max_concurrent": 2},
    )
    jobs = drive(http, st["id"], objective=lambda p, s: -curve(p, s))
    assert len(jobs) == 5 and all(j["resource_to"] == 3 for j in jobs)
    got = http.get(f"{API}/studies/{st['id']}").json()
    assert got["state"] == "completed" and got["counts"]["completed"] == 5
    values = [t["value"] for t in http.get(f"{API}/studies/{st['id']}/trials").json()["items"]]
    assert got["best"]["value"] == max(values)
    assert http.post(f"{API}/studies/{st['id']}/next").status_code == 409


def test_trials_listing_filters_orders_and_pages(http: TestClient) -> None:
    st = create(
        http,
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 2},
        limits={"max_trials": 7, "max_concurrent": 7},
    )
    drive(http, st["id"])
    url = f"{API}/studies/{st['id']}/trials"
    seen, cursor = [], None
    while True:
        page = http.get(
            url, params={"limit": 3, "order": "value", **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    values = [t["value"] for t in seen]
    assert len(seen) == 7 and values == sorted(values)
    desc = http.get(url, params={"order": "-number", "limit": 100}).json()["items"]
    assert [t["number"] for t in desc] == list(range(6, -1, -1))
    assert http.get(url, params={"state": "failed"}).json()["items"] == []
    assert len(http.get(url, params={"state": "completed"}).json()["items"]) == 7


def test_pause_resume_stop_and_delete_a_study(http: TestClient) -> None:
    st = create(http)
    sid = st["id"]
    job = http.post(f"{API}/studies/{sid}/next").json()
    assert http.patch(f"{API}/studies/{sid}", json={"state": "paused"}).json()["state"] == "paused"
    assert http.post(f"{API}/studies/{sid}/next").status_code == 204
    assert (
        http.patch(f"{API}/studies/{sid}", json={"state": "running"}).json()["state"] == "running"
    )
    assert http.post(f"{API}/studies/{sid}/next").status_code == 200
    r = http.patch(f"{API}/studies/{sid}", json={"state": "stopped"})
    assert r.status_code == 200 and r.json()["state"] == "stopped"
    # A running trial learns at its next report that the study was stopped.
    ans = http.post(
        f"{API}/trials/{job['trial_id']}/reports", json={"attempt": 1, "step": 1, "value": 0.3}
    ).json()
    assert ans["decision"] == "stop" and "stopped" in ans["reason"]
    assert http.post(f"{API}/studies/{sid}/next").status_code == 409
    r = http.patch(f"{API}/studies/{sid}", json={"state": "running"})
    assert r.status_code == 409 and "stopped" in r.json()["detail"]
    assert http.patch(f"{API}/studies/{sid}", json={"state": "exploded"}).status_code == 422
    assert http.delete(f"{API}/studies/{sid}").status_code == 204
    assert http.get(f"{API}/studies/{sid}").status_code == 404
    assert http.get(f"{API}/trials/{job['trial_id']}").status_code == 404


def test_complete_and_fail_are_idempotent(http: TestClient) -> None:
    st = create(http, scheduler={"type": "fifo", "min_resource": 1, "max_resource": 5})
    a = http.post(f"{API}/studies/{st['id']}/next").json()
    b = http.post(f"{API}/studies/{st['id']}/next").json()
    r1 = http.post(f"{API}/trials/{a['trial_id']}/complete", json={"attempt": 1, "value": 0.25})
    r2 = http.post(f"{API}/trials/{a['trial_id']}/complete", json={"attempt": 1, "value": 0.99})
    assert r1.status_code == r2.status_code == 200
    assert r2.json()["value"] == 0.25 and r2.json()["state"] == "completed"
    f1 = http.post(
        f"{API}/trials/{b['trial_id']}/fail",
        json={"attempt": 1, "error": "Traceback...\nValueError: boom"},
    )
    assert (
        f1.status_code == 200 and f1.json()["state"] == "failed" and "boom" in f1.json()["reason"]
    )
    assert (
        http.post(
            f"{API}/trials/{b['trial_id']}/fail", json={"attempt": 1, "error": "again"}
        ).status_code
        == 200
    )
    r = http.post(f"{API}/trials/{b['trial_id']}/complete", json={"attempt": 1, "value": 1})
    assert r.status_code == 409
    assert (
        http.post(f"{API}/trials/{a['trial_id']}/heartbeat", json={"attempt": 1}).status_code == 409
    )


def test_health_and_ready(http: TestClient) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["status"] == "ready"


@pytest.mark.redis
def test_ready_reports_redis(settings: Settings, redis_url: str) -> None:
    with TestClient(create_app(settings.model_copy(update={"redis_url": redis_url}))) as c:
        assert c.get("/readyz").json()["redis"] == "ok"
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    with TestClient(create_app(down)) as c:
        body = c.get("/readyz").json()
        assert body["status"] == "ready" and body["redis"].startswith("unreachable")


def test_median_and_hyperband_studies_finish(http: TestClient) -> None:
    for sched in (
        {"type": "median", "min_resource": 1, "max_resource": 9, "min_trials": 3},
        {"type": "hyperband", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        {"type": "sha", "min_resource": 1, "max_resource": 9, "bracket_size": 9},
        {"type": "asha", "min_resource": 1, "max_resource": 9, "brackets": 2, "mode": "stopping"},
    ):
        st = create(http, scheduler=sched, limits={"max_trials": 20, "max_concurrent": 3})
        drive(http, st["id"])
        got = http.get(f"{API}/studies/{st['id']}").json()
        assert got["state"] == "completed", (sched, got)
        counts = got["counts"]
        assert counts["running"] == counts["paused"] == counts["queued"] == 0, (sched, counts)
        assert sum(counts.values()) == 20
        assert got["best"] is not None
