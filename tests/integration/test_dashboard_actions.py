"""What the dashboard acts through, on SQLite and PostgreSQL: who a token is, notes and tags on
studies and trials (validation, scope, the study list's tag filter), the timeline of the
workers' attempts (window, bounds, order, pages) and the rung importance is computed at."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, text, update

from tests.helpers import API, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.context import Toolkit
from tuneyard.service.dashboard import DashboardService
from tuneyard.service.dashboard import importance as importance_service
from tuneyard.service.tokens import Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Attempt

DASH = f"{API}/dashboard"


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def tokens(settings: Settings) -> dict[str, str]:
    on = settings.model_copy(update={"auth": True})
    engine = create_engine(on.resolved_database_url())
    service = TokenService(Toolkit(make_sessionmaker(engine), on))
    out = {scope.value: service.create(f"{scope.value} test", scope).secret for scope in Scope}
    engine.dispose()
    return out


@pytest.fixture
def secured(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings.model_copy(update={"auth": True}))) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_study(http: TestClient, **overrides: Any) -> int:
    r = http.post(f"{API}/studies", json=study_spec(**overrides))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def problem_field(r: Any) -> str:
    assert r.status_code == 422, r.text
    return str(r.json().get("field") or r.json()["detail"])


# -- who am I ----------------------------------------------------------------------------------
def test_whoami_names_the_scope_and_what_it_grants(
    secured: TestClient, tokens: dict[str, str]
) -> None:
    read = secured.get(f"{API}/whoami", headers=bearer(tokens["read"]))
    assert read.status_code == 200, read.text
    assert read.json() == {
        "name": "read test",
        "scope": "read",
        "grants": ["read"],
        "queues": None,
        "auth": True,
    }
    write = secured.get(f"{API}/whoami", headers=bearer(tokens["write"])).json()
    assert write["scope"] == "write" and set(write["grants"]) == {"write", "read"}
    assert secured.get(f"{API}/whoami").status_code == 401


# -- notes and tags ----------------------------------------------------------------------------
def test_study_notes_and_tags_are_stored_shown_and_filtered(http: TestClient) -> None:
    a = new_study(http, name="a")
    b = new_study(http, name="b")
    r = http.patch(
        f"{API}/studies/{a}/notes",
        json={"note": "lr too high?\nretry with warm-up", "tags": ["baseline", "v2", "baseline"]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"note": "lr too high?\nretry with warm-up", "tags": ["baseline", "v2"]}
    http.patch(f"{API}/studies/{b}/notes", json={"tags": ["v2"]})

    summary = http.get(f"{DASH}/studies/{a}").json()
    assert summary["note"] == "lr too high?\nretry with warm-up"
    assert summary["tags"] == ["baseline", "v2"]
    # Tags alone leave the note as it was; a blank note clears it.
    r = http.patch(f"{API}/studies/{a}/notes", json={"tags": ["v2", "baseline"]})
    assert r.json()["note"].startswith("lr too high")
    assert r.json()["tags"] == ["v2", "baseline"]
    r = http.patch(f"{API}/studies/{a}/notes", json={"note": "  "})
    assert r.json() == {"note": None, "tags": ["v2", "baseline"]}

    cards = {c["id"]: c for c in http.get(f"{DASH}/studies").json()["items"]}
    assert cards[a]["tags"] == ["v2", "baseline"] and cards[b]["tags"] == ["v2"]
    only = http.get(f"{DASH}/studies", params={"tag": "baseline"}).json()
    assert [c["id"] for c in only["items"]] == [a]
    both = http.get(f"{DASH}/studies", params=[("tag", "v2"), ("tag", "baseline")]).json()
    assert [c["id"] for c in both["items"]] == [a]
    # The filter pages like the unfiltered list.
    tagged = [a, b] + [new_study(http, name=f"s{i}") for i in range(3)]
    for sid in tagged[2:]:
        http.patch(f"{API}/studies/{sid}/notes", json={"tags": ["v2"]})
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"tag": "v2", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = http.get(f"{DASH}/studies", params=params).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(tagged, reverse=True)
    assert http.get(f"{DASH}/studies", params={"tag": "nobody"}).json()["items"] == []
    assert problem_field(http.get(f"{DASH}/studies", params={"tag": "no spaces"})) == "tag"


def test_trial_notes_and_tags_show_on_the_trial(http: TestClient) -> None:
    sid = new_study(http)
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
    tid = job["trial_id"]
    r = http.patch(f"{API}/trials/{tid}/notes", json={"note": "diverged", "tags": ["nan"]})
    assert r.status_code == 200, r.text
    detail = http.get(f"{DASH}/trials/{tid}").json()
    assert detail["note"] == "diverged" and detail["tags"] == ["nan"]
    assert http.patch(f"{API}/trials/{tid}/notes", json={"tags": []}).json()["tags"] == []
    assert http.get(f"{DASH}/trials/{tid}").json()["note"] == "diverged"
    assert http.patch(f"{API}/trials/999999/notes", json={"note": "x"}).status_code == 404
    assert http.patch(f"{API}/studies/999999/notes", json={"note": "x"}).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"note": "x" * 10_001}, "note"),
        ({"note": "bell\x07"}, "note"),
        ({"note": "nul\x00"}, "note"),
        ({"tags": ["ok"] * 21}, "tags"),
        ({"tags": ["has space"]}, "tags"),
        ({"tags": ["-leading-dash"]}, "tags"),
        ({"tags": [""]}, "tags"),
        ({"tags": ["x" * 41]}, "tags"),
        ({"tags": ["<b>"]}, "tags"),
        ({"tags": [3]}, "tags"),
        ({"tags": "baseline"}, "tags"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_notes_and_tags_are_a_422_naming_the_field_and_store_nothing(
    http: TestClient, body: dict[str, Any], field: str
) -> None:
    sid = new_study(http)
    http.patch(f"{API}/studies/{sid}/notes", json={"note": "kept", "tags": ["kept"]})
    r = http.patch(f"{API}/studies/{sid}/notes", json=body)
    assert field in problem_field(r)
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
    assert field in problem_field(http.patch(f"{API}/trials/{job['trial_id']}/notes", json=body))
    summary = http.get(f"{DASH}/studies/{sid}").json()
    assert summary["note"] == "kept" and summary["tags"] == ["kept"]


def test_notes_need_write_scope(secured: TestClient, tokens: dict[str, str]) -> None:
    r = secured.post(f"{API}/studies", json=study_spec(), headers=bearer(tokens["write"]))
    sid = r.json()["id"]
    for scope, status in (("read", 403), ("worker", 403), ("write", 200), ("admin", 200)):
        r = secured.patch(
            f"{API}/studies/{sid}/notes", json={"note": scope}, headers=bearer(tokens[scope])
        )
        assert r.status_code == status, (scope, r.text)
    r = secured.get(f"{DASH}/studies/{sid}", headers=bearer(tokens["read"]))
    assert r.json()["note"] == "admin"


# -- the timeline ------------------------------------------------------------------------------
def _set_times(settings: Settings, times: dict[tuple[int, int], tuple[datetime, Any]]) -> None:
    """Give attempts (trial id, attempt number) the start and end the test wants."""
    engine = create_engine(settings.resolved_database_url())
    with engine.begin() as c:
        for (tid, n), (start, end) in times.items():
            c.execute(
                update(Attempt)
                .where(Attempt.trial_id == tid, Attempt.number == n)
                .values(started_at=start, ended_at=end)
            )
    engine.dispose()


def test_timeline_window_order_pages_and_bounds(http: TestClient, settings: Settings) -> None:
    sid = new_study(http, limits={"max_trials": 8, "max_concurrent": 8})
    other = new_study(http, name="other", limits={"max_trials": 2, "max_concurrent": 2})
    jobs = [
        http.post(f"{API}/studies/{sid}/next", json={"worker": f"w{i % 2}"}).json()
        for i in range(6)
    ]
    foreign = http.post(f"{API}/studies/{other}/next", json={"worker": "w0"}).json()
    t0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
    m = timedelta(minutes=1)
    times = {
        (jobs[0]["trial_id"], 1): (t0 - 30 * m, t0 + 5 * m),  # began before the window
        (jobs[1]["trial_id"], 1): (t0 + 10 * m, t0 + 20 * m),
        (jobs[2]["trial_id"], 1): (t0 + 10 * m, t0 + 12 * m),  # same start: by id
        (jobs[3]["trial_id"], 1): (t0 + 50 * m, None),  # still running
        (jobs[4]["trial_id"], 1): (t0 - 90 * m, t0 - 40 * m),  # ended before the window
        (jobs[5]["trial_id"], 1): (t0 + 70 * m, t0 + 80 * m),  # starts after the window
        (foreign["trial_id"], 1): (t0 + 15 * m, t0 + 16 * m),
    }
    _set_times(settings, times)
    since, until = t0.isoformat(), (t0 + 60 * m).isoformat()
    got = http.get(f"{DASH}/timeline", params={"since": since, "until": until}).json()
    order = [i["trial_id"] for i in got["items"]]
    expected = [jobs[0], jobs[1], jobs[2], foreign, jobs[3]]
    same_start = sorted([jobs[1]["trial_id"], jobs[2]["trial_id"]])
    assert order[0] == jobs[0]["trial_id"]
    assert order[1:3] == same_start  # ids of attempts follow their trials' here
    assert order[3:] == [foreign["trial_id"], jobs[3]["trial_id"]]
    assert len(order) == len(expected)
    running = got["items"][-1]
    assert running["state"] == "running" and running["ended_at"] is None
    assert {w["name"] for w in got["workers"]} == {"w0", "w1"}
    assert got["next_cursor"] is None

    # One study only, in pages of two: each attempt once, in the same order.
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"since": since, "until": until, "study_id": sid, "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = http.get(f"{DASH}/timeline", params=params).json()
        assert len(page["items"]) <= 2
        seen += [i["trial_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [t for t in order if t != foreign["trial_id"]]

    # Bounds: an empty or reversed window, one wider than 31 days, a big page, a bad cursor.
    assert problem_field(http.get(f"{DASH}/timeline", params={"since": until, "until": since}))
    wide = {"since": (t0 - timedelta(days=32)).isoformat(), "until": since}
    assert "since" in problem_field(http.get(f"{DASH}/timeline", params=wide))
    assert "limit" in problem_field(http.get(f"{DASH}/timeline", params={"limit": 5001}))
    assert "cursor" in problem_field(http.get(f"{DASH}/timeline", params={"cursor": "nope"}))
    far = base64.urlsafe_b64encode(json.dumps([2**63 - 1, 1]).encode()).decode()
    assert "cursor" in problem_field(http.get(f"{DASH}/timeline", params={"cursor": far}))
    assert http.get(f"{DASH}/timeline", params={"study_id": 999999}).status_code == 404


def test_a_study_timeline_defaults_to_the_study_lifetime(http: TestClient) -> None:
    sid = new_study(http, limits={"max_trials": 4, "max_concurrent": 2})
    drive(http, sid)
    got = http.get(f"{DASH}/timeline", params={"study_id": sid}).json()
    study = http.get(f"{API}/studies/{sid}").json()
    attempts = sum(t["attempts"] for t in http.get(f"{API}/studies/{sid}/trials").json()["items"])
    assert len(got["items"]) == attempts > 0
    assert {i["worker"] for i in got["items"]} == {"w0"}
    assert datetime.fromisoformat(got["since"]) <= datetime.fromisoformat(study["created_at"])
    starts = [i["started_at"] for i in got["items"]]
    assert starts == sorted(starts)
    assert all(i["state"] in {"completed", "paused", "stopped"} for i in got["items"])


def test_timeline_reads_the_attempts_by_index_ranges(http: TestClient, settings: Settings) -> None:
    """Every query the timeline makes of the attempts is an index range (SQLite: a SEARCH,
    not a SCAN; PostgreSQL, with sequential scans priced out: no Seq Scan on attempts), for
    the whole database and for one study, and on a later page."""
    sid = new_study(http, limits={"max_trials": 4, "max_concurrent": 4})
    for _ in range(3):
        http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"})
    engine = make_engine(settings.resolved_database_url())
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM attempts" in statement:
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", record)
    try:
        dash = DashboardService(Toolkit(make_sessionmaker(engine), settings))
        first = dash.timeline(None, None, None, 2, None)
        assert len(first["items"]) == 2 and first["next_cursor"]
        dash.timeline(None, None, None, 2, first["next_cursor"])
        dash.timeline(None, None, sid, 100, None)
        event.remove(engine, "before_cursor_execute", record)
        assert len(seen) >= 7  # two or three reads per call (the third when there is room)
        with engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                conn.execute(text("SET enable_seqscan = off"))
            for statement, params in seen:
                explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
                raw = conn.exec_driver_sql(explain + statement, params).all()
                plan = "\n".join(str(r[-1]) for r in raw)
                if postgres:
                    assert "Seq Scan on attempts" not in plan, (statement, plan)
                else:
                    assert "SCAN attempts" not in plan, (statement, plan)
                    assert "SEARCH attempts USING INDEX" in plan, (statement, plan)
    finally:
        engine.dispose()


# -- importance --------------------------------------------------------------------------------
def test_importance_uses_the_highest_rung_with_enough_trials(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = new_study(http, limits={"max_trials": 40, "max_concurrent": 2})
    drive(http, sid)
    rungs = http.get(f"{DASH}/studies/{sid}").json()["rungs"]
    trials = http.get(f"{API}/studies/{sid}/trials", params={"limit": 100}).json()["items"]
    reached = [sum(1 for t in trials if (t["resource"] or 0) >= r) for r in rungs]
    enough = 10
    expected = max(k for k, n in enumerate(reached) if n >= enough)
    assert 0 < expected < len(rungs) - 1, reached  # a rung above 0, but not the top one
    monkeypatch.setattr(importance_service, "IMPORTANCE_RUNG_TRIALS", enough)
    got = http.get(f"{DASH}/studies/{sid}/importance").json()
    assert got["rung"] == expected
    assert got["resource"] == rungs[expected]
    assert got["trials_used"] == reached[expected]
    assert got["rung_trials"] == enough
    assert f"rung {expected}" in got["basis"] and f"({reached[expected]})" in got["basis"]
