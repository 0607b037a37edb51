"""``POST /trials/{id}/reports`` and ``.../heartbeat`` are answered before the router when they
are well-formed (tuneyard/api/fast_calls.py). Every answer must be the route's own: the same
requests sent through an app without the shortcut get the same status and body, and what the
shortcut does not take reaches the route with its body intact."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.api.fast_calls import FastCalls
from tuneyard.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

JSON = {"content-type": "application/json"}


@pytest.fixture
def clients(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """The app as served, and the same app without the shortcut, on one database."""
    limited = settings.model_copy(update={"report_rate": 5.0, "report_burst": 100})
    fast, slow = create_app(limited), create_app(limited)
    slow.user_middleware = [m for m in slow.user_middleware if m.cls is not FastCalls]
    assert len(fast.user_middleware) == len(slow.user_middleware) + 1
    with TestClient(fast) as f, TestClient(slow) as s:
        yield f, s


def _trial(http: TestClient, sid: int) -> int:
    r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"})
    assert r.status_code == 200, r.text
    trial_id: int = r.json()["trial_id"]
    return trial_id


def _same(answer: Any, trial_id: int) -> tuple[int, Any]:
    """An answer without what differs between two trials: timestamps and the trial's id."""
    body = answer.json()
    if isinstance(body, dict):
        body.pop("created_at", None)
        body = json.loads(re.sub(rf"\btrial {trial_id}\b", "trial N", json.dumps(body)))
    return answer.status_code, body


# Each request as (path suffix or None for the trial's reports, headers, body bytes).
CASES: list[tuple[str, dict[str, str], bytes]] = [
    ("plain", JSON, b'{"step": 0.5, "value": 0.7, "attempt": 1}'),
    ("repeat", JSON, b'{"step": 0.5, "value": 0.7, "attempt": 1}'),
    ("metric in metrics", JSON, b'{"step": 0.6, "metrics": {"loss": 0.65}, "attempt": 1}'),
    (
        "charset",
        {"content-type": "application/json; charset=utf-8"},
        b'{"step": 0.7, "value": 0.6, "attempt": 1}',
    ),
    ("rung", JSON, b'{"step": 1, "value": 0.6, "attempt": 1}'),
    ("no attempt", JSON, b'{"step": 1.2, "value": 0.6}'),
    ("negative step", JSON, b'{"step": -1, "value": 0.6, "attempt": 1}'),
    ("unknown field", JSON, b'{"step": 1.3, "value": 0.6, "attempt": 1, "x": 1}'),
    ("malformed", JSON, b'{"step": 1.3, "value": '),
    ("empty", JSON, b""),
    ("text", {"content-type": "text/plain"}, b'{"step": 1.3, "value": 0.6, "attempt": 1}'),
    ("no content type", {}, b'{"step": 1.3, "value": 0.6, "attempt": 1}'),
    ("stale attempt", JSON, b'{"step": 1.4, "value": 0.6, "attempt": 7}'),
    ("past max_resource", JSON, b'{"step": 99, "value": 0.6, "attempt": 1}'),
    ("string value", JSON, b'{"step": 1.5, "value": "0.5", "attempt": 1}'),
    ("NaN", JSON, b'{"step": 2, "value": NaN, "attempt": 1}'),
    ("after the stop", JSON, b'{"step": 2.5, "value": 0.5, "attempt": 1}'),
]


def test_the_shortcut_answers_as_the_route(clients: tuple[TestClient, TestClient]) -> None:
    fast, slow = clients
    spec = study_spec(scheduler={"mode": "stopping"}, limits={"max_trials": 4})
    # Two studies alike, a trial of each: the rung a report reaches holds its study's only.
    a = _trial(fast, fast.post(f"{API}/studies", json=spec).json()["id"])
    b = _trial(slow, slow.post(f"{API}/studies", json=spec).json()["id"])
    # Heartbeats while the trial runs, then reports until it stops.
    beats: list[tuple[str, bytes]] = [
        ("beat", b'{"attempt": 1}'),
        ("stale beat", b'{"attempt": 2}'),
        ("beat without attempt", b"{}"),
        ("beat with a string attempt", b'{"attempt": "1"}'),
    ]
    for name, body in beats:
        got = fast.post(f"{API}/trials/{a}/heartbeat", content=body, headers=JSON)
        want = slow.post(f"{API}/trials/{b}/heartbeat", content=body, headers=JSON)
        assert got.status_code == want.status_code, name
        if name == "beat":
            assert got.status_code == 200, got.text
        if got.status_code == 200:
            # The lease is later for the later call; the shape is the same.
            assert got.json().keys() == want.json().keys() == {"lease_expires_at"}
            assert got.json()["lease_expires_at"].endswith("Z") == (
                want.json()["lease_expires_at"].endswith("Z")
            )
        else:
            assert _same(got, a) == _same(want, b), name
    for name, headers, body in CASES:
        got = fast.post(f"{API}/trials/{a}/reports", content=body, headers=headers)
        want = slow.post(f"{API}/trials/{b}/reports", content=body, headers=headers)
        assert _same(got, a) == _same(want, b), name
    # Paths the shortcut leaves to the router: a trial that does not exist, an id spelled
    # another way, one out of range.
    body = b'{"step": 0.5, "value": 0.7, "attempt": 1}'
    for path in ("999999", "01", "+3", str(2**63)):
        for call in ("reports", "heartbeat"):
            got = fast.post(f"{API}/trials/{path}/{call}", content=body, headers=JSON)
            want = slow.post(f"{API}/trials/{path}/{call}", content=body, headers=JSON)
            assert (got.status_code, got.json()) == (want.status_code, want.json()), path


def test_reports_faster_than_the_rate_are_refused_alike(settings: Settings) -> None:
    limited = settings.model_copy(update={"report_rate": 0.001, "report_burst": 2})
    app = create_app(limited)
    with TestClient(app) as http:
        spec = study_spec(scheduler={"mode": "stopping"}, limits={"max_trials": 4})
        sid = http.post(f"{API}/studies", json=spec).json()["id"]
        tid = _trial(http, sid)
        codes = []
        for step in (0.2, 0.3, 0.4, 0.5):
            r = http.post(
                f"{API}/trials/{tid}/reports", json={"step": step, "value": 0.5, "attempt": 1}
            )
            codes.append(r.status_code)
        assert codes == [200, 200, 429, 429]
        assert r.json()["limit"] == "report_rate" and "Retry-After" in r.headers
        # A refused body is answered by the route, and counts against the rate once.
        r = http.post(f"{API}/trials/{tid}/reports", json={"step": 0.6, "attempt": "x"})
        assert r.status_code == 429


def test_what_the_shortcut_does_not_take_reaches_the_route_whole(settings: Settings) -> None:
    seen: list[tuple[str, bytes]] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        seen.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    api = create_app(settings)
    with TestClient(api) as http:
        sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
        tid = _trial(http, sid)
    fast = FastCalls(route, api)

    async def served(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = api  # as the app sets it for its middleware
        await fast(scope, receive, send)

    shortcut = TestClient(served)
    ok = shortcut.post(
        f"{API}/trials/{tid}/reports", json={"step": 0.5, "value": 0.7, "attempt": 1}
    )
    assert ok.status_code == 200 and ok.json()["decision"] == "continue"
    assert seen == []  # answered without the route
    bad = b'{"step": "soon", "value": 0.7, "attempt": 1}'
    r = shortcut.post(f"{API}/trials/{tid}/reports", content=bad, headers=JSON)
    assert r.status_code == 299
    assert seen == [(f"{API}/trials/{tid}/reports", bad)]
    r = shortcut.get(f"{API}/trials/{tid}")
    assert r.status_code == 299 and len(seen) == 2
