"""The dashboard's JSON endpoints (``/api/v1/dashboard``) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.e2e.servers import free_port
from tests.helpers import API, drive, run_job, study_spec
from tuneyard.api.app import create_app
from tuneyard.api.dashboard_routes import POLL_SECONDS, Curves, History, ParamsSample
from tuneyard.service.dashboard import views as dashboard_views
from tuneyard.settings import Settings

DASH = f"{API}/dashboard"


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def get(http: TestClient, path: str, **params: Any) -> Any:
    r = http.get(f"{DASH}{path}", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def every_trial(http: TestClient, sid: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        page = http.get(f"{API}/studies/{sid}/trials", params=params).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def finished_study(http: TestClient, trials: int = 40, **overrides: Any) -> int:
    spec = study_spec(limits={"max_trials": trials, "max_concurrent": 2}, **overrides)
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid: int = r.json()["id"]
    drive(http, sid)
    return sid


def true_best(http: TestClient, sid: int) -> dict[str, Any]:
    best: dict[str, Any] = http.get(f"{API}/studies/{sid}").json()["best"]
    return best


# -- cards -----------------------------------------------------------------------------------
def test_study_cards_count_trials_and_resource_and_name_the_best(http: TestClient) -> None:
    sid = finished_study(http, trials=20)
    other = http.post(f"{API}/studies", json=study_spec(name="empty")).json()["id"]
    trials = every_trial(http, sid)

    page = get(http, "/studies")
    assert [c["id"] for c in page["items"]] == [other, sid] and page["next_cursor"] is None
    card = page["items"][1]
    expected = {s: sum(t["state"] == s for t in trials) for s in {t["state"] for t in trials}}
    assert {k: v for k, v in card["counts"].items() if v} == expected
    assert card["budget"]["resource"] == pytest.approx(sum(t["resource"] or 0 for t in trials))
    # No GPU-hour or wall-time limit: the budget shown is the trials', all of them started.
    assert (card["budget"]["used"], card["budget"]["total"]) == (20, 20)
    assert card["budget"]["unit"] == "trials" and card["budget"]["spent"]
    best = true_best(http, sid)
    assert card["best"] == {
        "trial_id": best["id"],
        "number": best["number"],
        "value": best["value"],
    }
    assert card["state"] == "completed" and card["trials_started"] == 20
    assert card["max_trials"] == 20 and card["age_s"] >= 0 and card["version"]
    assert page["items"][0]["best"] is None and sum(page["items"][0]["counts"].values()) == 0

    first = get(http, "/studies", limit=1)
    assert [c["id"] for c in first["items"]] == [other]
    rest = get(http, "/studies", limit=1, cursor=first["next_cursor"])
    assert [c["id"] for c in rest["items"]] == [sid] and rest["next_cursor"] is None

    summary = get(http, f"/studies/{sid}")
    assert summary["counts"] == card["counts"] and summary["best"] == card["best"]
    assert summary["rungs"] == [1.0, 3.0, 9.0, 27.0]
    space = {p["name"]: p for p in summary["space"]}
    assert space["y"]["log"] is True and space["y"]["low"] == pytest.approx(1e-3)
    assert space["kind"]["choices"] == ["a", "b"]
    assert summary["version"] == get(http, f"/studies/{sid}/version")["version"]


# -- history ---------------------------------------------------------------------------------
def _monotone(line: list[dict[str, Any]]) -> bool:
    values = [p["value"] for p in line]
    numbers = [p["number"] for p in line]
    return values == sorted(values, reverse=True) and numbers == sorted(numbers)


def test_history_holds_every_finished_trial_and_the_best_so_far(http: TestClient) -> None:
    sid = finished_study(http, trials=40)
    trials = every_trial(http, sid)
    done = [t for t in trials if t["state"] in ("completed", "stopped", "failed") and t["value"]]

    h = get(http, f"/studies/{sid}/history")
    History.model_validate(h)  # the body the OpenAPI schema documents
    assert h["downsampled"] is False and h["total"] == len(done) and h["direction"] == "minimize"
    assert [(p["number"], p["value"], p["state"]) for p in h["points"]] == [
        (t["number"], t["value"], t["state"]) for t in sorted(done, key=lambda t: t["number"])
    ]
    assert _monotone(h["best"])
    assert h["best"][-1]["value"] == true_best(http, sid)["value"]
    # Exactly the points where the best completed value so far improves.
    running = math.inf
    steps = []
    for t in sorted(done, key=lambda t: t["number"]):
        if t["state"] == "completed" and t["value"] < running:
            running = t["value"]
            steps.append({"number": t["number"], "value": t["value"]})
    assert h["best"] == steps


def assert_downsampled(http: TestClient, sid: int, h: dict[str, Any], points: int) -> None:
    """Every bucket's best and worst value and the study's best trial are among the points,
    and the best-so-far line ends on the best trial."""
    done = [
        t
        for t in every_trial(http, sid)
        if t["state"] in ("completed", "stopped", "failed") and t["value"] is not None
    ]
    History.model_validate(h)
    assert h["downsampled"] is True and h["total"] == len(done) and len(h["points"]) <= points
    width = h["bucket_width"]
    assert width > 1
    by_number = {t["number"]: t for t in done}
    for p in h["points"]:
        t = by_number[p["number"]]
        assert (p["value"], p["state"]) == (t["value"], t["state"])
    buckets: dict[int, list[float]] = {}
    for t in done:
        buckets.setdefault(t["number"] // width, []).append(t["value"])
    shown: dict[int, list[float]] = {}
    for p in h["points"]:
        shown.setdefault(p["number"] // width, []).append(p["value"])
    for b, values in buckets.items():
        assert min(values) in shown[b] and max(values) in shown[b]
    best = true_best(http, sid)
    assert (best["number"], best["value"]) in {(p["number"], p["value"]) for p in h["points"]}
    assert _monotone(h["best"])
    assert h["best"][-1] == {"number": best["number"], "value": best["value"]}


def test_downsampled_history_keeps_each_buckets_extremes_and_the_best(http: TestClient) -> None:
    sid = finished_study(http, trials=40)
    assert_downsampled(http, sid, get(http, f"/studies/{sid}/history", points=10), 10)


def test_downsampled_history_of_a_metric_with_few_distinct_values(
    http: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = study_spec(limits={"max_trials": 40, "max_concurrent": 2})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    # Values repeat across the whole study, as an accuracy on a small validation set does.
    drive(http, sid, objective=lambda p, step: round(p["x"] * 4) / 4 + round(1 / step, 1))
    h = get(http, f"/studies/{sid}/history", points=10)
    assert_downsampled(http, sid, h, 10)
    # The same answer when the extremes are found by a pass over the buckets instead of a
    # lookup by value (another process: nothing cached).
    monkeypatch.setattr(dashboard_views, "HISTORY_LOOKUP_FACTOR", 0)
    monkeypatch.setattr(dashboard_views, "HISTORY_LOOKUP_SLACK", 0)
    with TestClient(create_app(settings)) as other:
        assert get(other, f"/studies/{sid}/history", points=10) == h


def test_history_of_a_maximised_metric_climbs(http: TestClient) -> None:
    sid = finished_study(http, trials=20, direction="maximize")
    h = get(http, f"/studies/{sid}/history", points=10)
    values = [p["value"] for p in h["best"]]
    assert values == sorted(values) and values[-1] == true_best(http, sid)["value"]


# -- curves ----------------------------------------------------------------------------------
def test_curves_show_the_best_and_the_running_trials_with_their_reports_and_decisions(
    http: TestClient,
) -> None:
    spec = study_spec(limits={"max_trials": 32, "max_concurrent": 4})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    # Every job runs to its end, except the last two new trials: they report once and are
    # left running.
    running = []
    while True:
        r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"})
        if r.status_code != 200:
            break
        job = r.json()
        if job["kind"] == "new" and job["number"] >= 30:
            tid = job["trial_id"]
            r = http.post(
                f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 0.5, "value": 9.0}
            )
            assert r.status_code == 200, r.text
            running.append(tid)
        else:
            run_job(http, job)
    assert len(running) == 2

    c = get(http, f"/studies/{sid}/curves", trials=8)
    Curves.model_validate(c)
    assert c["shown"] == len(c["trials"]) <= 8 and c["total"] == 32
    assert c["rungs"] == [1.0, 3.0, 9.0, 27.0]
    ids = [t["id"] for t in c["trials"]]
    assert true_best(http, sid)["id"] in ids
    assert set(running) <= set(ids)
    assert [t["number"] for t in c["trials"]] == sorted(t["number"] for t in c["trials"])

    for curve in c["trials"]:
        trial = http.get(f"{API}/trials/{curve['id']}").json()
        assert curve["state"] == trial["state"] and curve["value"] == trial["value"]
        assert curve["steps"] == [r["step"] for r in trial["reports"]]
        assert curve["values"] == [r["value"] for r in trial["reports"]]
        decided = [d for d in trial["decisions"] if d["kind"] != "start"]
        assert [(m["kind"], m["reason"]) for m in curve["marks"]] == [
            (d["kind"], d["reason"]) for d in decided
        ]
        # A decision a report carried is marked at that report's step.
        for m in curve["marks"]:
            carried = [r["step"] for r in trial["reports"] if r["reason"] == m["reason"]]
            if carried:
                assert m["step"] == carried[0]
            if m["kind"] == "pause":
                assert m["step"] in c["rungs"]


def test_curves_of_all_trials_when_few(http: TestClient) -> None:
    sid = finished_study(http, trials=12)
    c = get(http, f"/studies/{sid}/curves")
    assert c["shown"] == 12 and [t["number"] for t in c["trials"]] == list(range(12))


# -- params ----------------------------------------------------------------------------------
def test_params_sample_holds_the_best_trial_and_a_spread(http: TestClient) -> None:
    sid = finished_study(http, trials=40)
    p = get(http, f"/studies/{sid}/params", trials=8)
    ParamsSample.model_validate(p)
    assert p["total"] == 40 and p["shown"] == len(p["trials"]) <= 8
    best = true_best(http, sid)
    by_id = {t["id"]: t for t in p["trials"]}
    assert best["id"] in by_id and by_id[best["id"]]["params"] == best["params"]
    numbers = sorted(t["number"] for t in p["trials"])
    assert numbers[0] <= 5 and numbers[-1] >= 34, "an even spread covers the whole study"
    assert {s["name"] for s in p["space"]} == {"x", "y", "kind"}
    everything = get(http, f"/studies/{sid}/params")
    assert everything["shown"] == 40


# -- importance ------------------------------------------------------------------------------
def test_importance_ranks_the_parameter_that_drives_the_value_first(http: TestClient) -> None:
    spec = study_spec(
        scheduler={"max_resource": 9},
        limits={"max_trials": 70, "max_concurrent": 4},
        sampler={"type": "random", "seed": 11},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]

    def objective(params: dict[str, Any], step: float) -> float:
        # x decides the value; y adds a tiny amount of noise; kind does nothing.
        return (params["x"] - 0.3) ** 2 + 1e-6 * params["y"] + 0.5 / math.sqrt(step)

    drive(http, sid, objective=objective)
    imp = get(http, f"/studies/{sid}/importance")
    names = [p["name"] for p in imp["params"]]
    assert names[0] == "x", imp
    by_name = {p["name"]: p for p in imp["params"]}
    assert by_name["x"]["importance"] > 0.8
    assert by_name["x"]["variance_explained"] > 0.5
    assert by_name["y"]["importance"] < by_name["x"]["importance"] / 4
    assert sum(p["importance"] for p in imp["params"]) == pytest.approx(1.0)
    assert imp["trials_used"] >= 50 and imp["resource"] in (1.0, 3.0, 9.0)
    assert imp["method"] and imp["computed_at"]
    # Cached: asked again at once, the same answer.
    assert get(http, f"/studies/{sid}/importance") == imp


def test_importance_of_a_study_without_results_is_all_zero(http: TestClient) -> None:
    sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
    imp = get(http, f"/studies/{sid}/importance")
    assert imp["trials_used"] == 0
    assert {p["name"] for p in imp["params"]} == {"x", "y", "kind"}
    assert all(p["importance"] == 0 for p in imp["params"])


# -- a trial ---------------------------------------------------------------------------------
def test_trial_detail_has_attempts_with_worker_host_gpus_and_durations(
    http: TestClient,
) -> None:
    gpu = {"index": "0", "name": "NVIDIA H100", "memory_mib": 81559}
    r = http.post(f"{API}/workers", json={"name": "node-1/gpu-0", "host": "node-1", "gpus": [gpu]})
    assert r.status_code == 201, r.text
    sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "node-1/gpu-0"}).json()
    tid = job["trial_id"]
    r = http.post(
        f"{API}/trials/{tid}/reports",
        json={"attempt": 1, "step": 1, "value": 0.5, "metrics": {"peak_memory_mib": 1234.0}},
    )
    assert r.status_code == 200, r.text

    d = get(http, f"/trials/{tid}")
    public = http.get(f"{API}/trials/{tid}").json()
    for key in ("id", "params", "state", "reports", "decisions", "attempt_log"):
        assert d[key] == public[key]
    (attempt,) = d["attempts"]
    assert attempt["worker"] == "node-1/gpu-0" and attempt["host"] == "node-1"
    assert attempt["gpus"] == [{**gpu, "uuid": None}]
    assert attempt["state"] == "running" and attempt["ended_at"] is None
    assert attempt["duration_s"] is not None and attempt["duration_s"] >= 0
    assert d["resources"]["gpus"] == attempt["gpus"]
    assert d["resources"]["peak_memory_mib"] == 1234.0
    assert d["resources"]["resource_trained"] == 1.0

    if r.json()["decision"] == "pause":
        assert http.post(f"{API}/trials/{tid}/pause", json={"attempt": 1}).status_code == 200
    else:
        run_job(http, {**job, "resource_from": 1})
    d = get(http, f"/trials/{tid}")
    (attempt,) = d["attempts"]
    assert attempt["ended_at"] is not None and attempt["state"] in ("paused", "stopped")
    assert d["resources"]["wall_time_s"] == pytest.approx(attempt["duration_s"])


# -- workers ---------------------------------------------------------------------------------
@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float, t0: datetime) -> None:
        self.now = t0 + timedelta(minutes=minutes)


def test_busy_fraction_is_the_share_of_the_last_hour_spent_on_trials(settings: Settings) -> None:
    t0 = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    clock = FakeClock(t0)
    with TestClient(create_app(settings, clock=clock)) as http:
        sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
        a = http.post(f"{API}/workers", json={"name": "a", "host": "h"}).json()["id"]
        # a: registered at 0, one trial from 10 to 40 minutes.
        clock.at(10, t0)
        job = http.post(f"{API}/studies/{sid}/next", json={"worker": "a"}).json()
        clock.at(40, t0)
        r = http.post(f"{API}/trials/{job['trial_id']}/complete", json={"attempt": 1, "value": 0.5})
        assert r.status_code == 200, r.text
        # b: registered at 30, running a trial since 45 (shorter life: 15 of its 30 minutes).
        clock.at(30, t0)
        b = http.post(f"{API}/workers", json={"name": "b", "host": "h"}).json()["id"]
        clock.at(45, t0)
        job_b = http.post(f"{API}/studies/{sid}/next", json={"worker": "b"}).json()
        # c: registered at 0, never ran anything.
        clock.at(0, t0)
        c = http.post(f"{API}/workers", json={"name": "c", "host": "h"}).json()["id"]

        clock.at(60, t0)
        for w in (a, c):
            http.post(f"{API}/workers/{w}/heartbeat", json={})
        http.post(f"{API}/workers/{b}/heartbeat", json={"trial_id": job_b["trial_id"]})
        items = {w["name"]: w for w in get(http, "/workers")["items"]}
        assert items["a"]["busy_fraction"] == pytest.approx(0.5)
        assert items["b"]["busy_fraction"] == pytest.approx(0.5)
        assert items["c"]["busy_fraction"] == 0.0
        assert all(w["online"] and w["state"] == "active" for w in items.values())
        assert items["b"]["trial_id"] == job_b["trial_id"]
        assert items["b"]["trial_number"] == job_b["number"] and items["b"]["study_id"] == sid
        assert items["a"]["trial_id"] is None

        # An hour later a's trial is out of the window; b has been busy all along.
        clock.at(120, t0)
        for w in (a, b):
            http.post(f"{API}/workers/{w}/heartbeat", json={})
        items = {w["name"]: w for w in get(http, "/workers")["items"]}
        assert items["a"]["busy_fraction"] == 0.0
        assert items["b"]["busy_fraction"] == pytest.approx(1.0)
        # c went silent at 60: offline, and gone for the whole hour.
        assert items["c"]["online"] is False and items["c"]["state"] == "lost"
        assert items["c"]["busy_fraction"] is None
        for w in items.values():
            assert w["busy_fraction"] is None or 0.0 <= w["busy_fraction"] <= 1.0


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/studies/999",
        "/studies/999/history",
        "/studies/999/curves",
        "/studies/999/params",
        "/studies/999/importance",
        "/studies/999/version",
        "/studies/999/events",
        "/trials/999",
    ],
)
def test_a_missing_study_or_trial_is_a_problem_404(http: TestClient, path: str) -> None:
    r = http.get(f"{DASH}{path}")
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "999" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/studies/1/history", {"points": 1}, "points"),
        ("/studies/1/history", {"points": "many"}, "points"),
        ("/studies/1/curves", {"trials": 0}, "trials"),
        ("/studies/1/curves", {"trials": 5000}, "trials"),
        ("/studies/1/params", {"trials": -3}, "trials"),
        ("/studies", {"limit": 0}, "limit"),
        ("/studies", {"cursor": "not-a-cursor"}, "cursor"),
        ("/workers", {"limit": 0}, "limit"),
    ],
)
def test_bad_query_parameters_are_a_422_naming_the_field(
    http: TestClient, path: str, params: dict[str, Any], field: str
) -> None:
    http.post(f"{API}/studies", json=study_spec())
    r = http.get(f"{DASH}{path}", params=params)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field]


def test_dashboard_routes_are_in_the_openapi_schema(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    for p in (
        "/studies",
        "/studies/{study_id}",
        "/studies/{study_id}/history",
        "/studies/{study_id}/curves",
        "/studies/{study_id}/params",
        "/studies/{study_id}/importance",
        "/studies/{study_id}/version",
        "/studies/{study_id}/events",
        "/trials/{trial_id}",
        "/workers",
    ):
        assert f"{DASH}{p}" in paths
    history = paths[f"{DASH}/studies/{{study_id}}/history"]["get"]
    assert "History" in json.dumps(history["responses"]["200"])


# -- events ----------------------------------------------------------------------------------
@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn in a thread: TestClient can't read an endless stream."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream."""
    event, data = "message", ""
    for line in lines:
        if line == "":
            if data:
                yield event, data
            event, data = "message", ""
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def test_events_stream_a_change_after_a_report(live: str) -> None:
    with httpx.Client(base_url=live, timeout=10) as client:
        sid = client.post(f"{API}/studies", json=study_spec()).json()["id"]
        job = client.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()
        with client.stream("GET", f"{DASH}/studies/{sid}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = _events(stream.iter_lines())
            kind, data = next(events)
            first = json.loads(data)
            assert kind == "change" and first["state"] == "running"
            assert first["counts"]["running"] == 1
            r = client.post(
                f"{API}/trials/{job['trial_id']}/reports",
                json={"attempt": 1, "step": 1, "value": 0.25},
            )
            assert r.status_code == 200, r.text
            # Read with a deadline: the server checks about once a second.
            deadline = time.monotonic() + 20
            for kind, data in events:
                assert time.monotonic() < deadline, "no change event after the report"
                if kind == "change" and json.loads(data)["version"] != first["version"]:
                    break
            polled = client.get(f"{DASH}/studies/{sid}/version").json()
            assert polled["version"] == json.loads(data)["version"]


def test_the_event_stream_stops_polling_when_the_client_goes(
    live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuneyard.service.dashboard import DashboardService

    calls = []
    version = DashboardService.version

    def counted(self: DashboardService, study_id: int) -> Any:
        calls.append(study_id)
        return version(self, study_id)

    monkeypatch.setattr(DashboardService, "version", counted)
    with httpx.Client(base_url=live, timeout=10) as client:
        sid = client.post(f"{API}/studies", json=study_spec()).json()["id"]
        with client.stream("GET", f"{DASH}/studies/{sid}/events") as stream:
            events = _events(stream.iter_lines())
            assert next(events)[0] == "change"
            deadline = time.monotonic() + 20
            while not calls:  # the stream polls the version while the client is there
                assert time.monotonic() < deadline, "the stream never checked the version"
                time.sleep(0.1)

    def settled() -> int:
        # Once the server has seen the client go, the count stops moving.
        seen = len(calls)
        time.sleep(3 * POLL_SECONDS)
        return seen if len(calls) == seen else -1

    deadline = time.monotonic() + 30
    while settled() < 0:
        assert time.monotonic() < deadline, "the stream kept polling after the client left"
