"""Hardening around the tokens: stream tickets in place of tokens in URLs, the token checked
before a body is read, worker tokens held to their queues in the worker registry, a server
without authentication closed to other origins, and nosniff on every response."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from tests.fakes import FakeClock
from tests.helpers import API, serve, study_spec
from tuneyard.api.app import create_app
from tuneyard.api.auth import route_scope
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import TICKET_SECONDS, Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_sessionmaker
from tuneyard.store.models import StreamTicket

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DASH = f"{API}/dashboard"
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": True})


@pytest.fixture
def tokens(auth_settings: Settings) -> dict[str, Any]:
    engine = create_engine(auth_settings.resolved_database_url())
    service = TokenService(Toolkit(make_sessionmaker(engine), auth_settings))
    out: dict[str, Any] = {s.value: service.create(s.value, s).secret for s in Scope}
    out["worker-q1"] = service.create("q1 only", Scope.WORKER, ["q1"]).secret
    doomed = service.create("to revoke", Scope.READ)
    out["doomed"], out["doomed_id"] = doomed.secret, doomed.token.id
    engine.dispose()
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
def client(auth_settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings, clock=clock)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_study(client: TestClient, tokens: dict[str, Any], queue: str = "default") -> int:
    spec = study_spec(execution={"entrypoint": "examples.mlp_digits:train", "queue": queue})
    r = client.post(f"{API}/studies", json=spec, headers=bearer(tokens["admin"]))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def ticket(client: TestClient, token: str, sid: int) -> str:
    r = client.post(f"{DASH}/studies/{sid}/stream-ticket", headers=bearer(token))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["events_url"] == f"{DASH}/studies/{sid}/events?ticket={body['ticket']}"
    return str(body["ticket"])


def events_status(client: TestClient, sid: int, **params: str) -> int:
    """The answer of the event stream's checks, for a study deleted after its ticket was
    issued: 404 means the ticket was accepted (the stream itself is for the live test)."""
    return client.get(f"{DASH}/studies/{sid}/events", params=params).status_code


# -- stream tickets ----------------------------------------------------------------------------
def test_a_stream_ticket_opens_one_study_for_a_minute(
    client: TestClient, tokens: dict[str, Any], clock: FakeClock, auth_settings: Settings
) -> None:
    a, b = new_study(client, tokens), new_study(client, tokens)
    t = ticket(client, tokens["read"], a)
    assert t.startswith("tyt_") and len(t) > 40
    assert tokens["read"] not in t
    admin = bearer(tokens["admin"])
    assert client.delete(f"{API}/studies/{a}", headers=admin).status_code == 204
    assert client.delete(f"{API}/studies/{b}", headers=admin).status_code == 204
    assert events_status(client, a, ticket=t) == 404, "accepted: the study is gone"
    assert events_status(client, b, ticket=t) == 401, "a ticket opens its own study only"
    assert events_status(client, a) == 401
    assert events_status(client, a, ticket="tyt_" + "x" * 43) == 401
    # No token in a URL, on the stream or anywhere else.
    assert events_status(client, a, access_token=tokens["read"]) == 401
    assert events_status(client, a, ticket=tokens["read"]) == 401
    r = client.get(f"{API}/studies", params={"ticket": t})
    assert r.status_code == 401, "a ticket is for the stream only"
    # Stored as its hash.
    engine = create_engine(auth_settings.resolved_database_url())
    with engine.connect() as conn:
        rows = conn.execute(select(StreamTicket)).all()
    engine.dispose()
    assert [r.secret_sha256 for r in rows] == [hashlib.sha256(t.encode()).hexdigest()]
    assert t not in repr(rows)
    # A minute later it is worth nothing.
    clock.now += timedelta(seconds=TICKET_SECONDS - 1)
    assert events_status(client, a, ticket=t) == 404
    clock.now += timedelta(seconds=1)
    r = client.get(f"{DASH}/studies/{a}/events", params={"ticket": t})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_a_ticket_dies_with_its_token_and_expired_ones_are_purged(
    client: TestClient, tokens: dict[str, Any], clock: FakeClock, auth_settings: Settings
) -> None:
    sid = new_study(client, tokens)
    t = ticket(client, tokens["doomed"], sid)
    for _ in range(3):
        ticket(client, tokens["read"], sid)
    admin = bearer(tokens["admin"])
    assert client.delete(f"{API}/tokens/{tokens['doomed_id']}", headers=admin).status_code == 200
    assert client.delete(f"{API}/studies/{sid}", headers=admin).status_code == 204
    assert events_status(client, sid, ticket=t) == 401
    # Issuing deletes what has expired.
    clock.now += timedelta(seconds=TICKET_SECONDS + 1)
    other = new_study(client, tokens)
    ticket(client, tokens["read"], other)
    engine = create_engine(auth_settings.resolved_database_url())
    with engine.connect() as conn:
        assert len(conn.execute(select(StreamTicket.id)).all()) == 1
    engine.dispose()


def test_tickets_of_one_api_process_open_streams_on_another(
    auth_settings: Settings, tokens: dict[str, Any]
) -> None:
    # Two apps on one database stand for `--workers 2` or two servers: the ticket is in the
    # database, not in a process.
    with TestClient(create_app(auth_settings)) as one, TestClient(create_app(auth_settings)) as two:
        sid = new_study(one, tokens)
        t = ticket(one, tokens["read"], sid)
        assert two.delete(f"{API}/studies/{sid}", headers=bearer(tokens["admin"])).is_success
        assert events_status(two, sid, ticket=t) == 404
        assert events_status(two, sid, ticket=t + "x") == 401


def test_the_ticket_route_needs_a_token_and_a_study(
    client: TestClient, tokens: dict[str, Any]
) -> None:
    sid = new_study(client, tokens)
    assert client.post(f"{DASH}/studies/{sid}/stream-ticket").status_code == 401
    r = client.post(f"{DASH}/studies/{sid}/stream-ticket", params={"access_token": tokens["read"]})
    assert r.status_code == 401
    r = client.post(f"{DASH}/studies/999999/stream-ticket", headers=bearer(tokens["read"]))
    assert r.status_code == 404
    for scope in Scope:  # every scope includes read
        ticket(client, tokens[scope.value], sid)


@pytest.fixture
def live_auth(auth_settings: Settings) -> Iterator[str]:
    """The app served by uvicorn in a thread, with authentication: a stream is endless."""
    with serve(create_app(auth_settings)) as url:
        yield url


def test_a_ticket_opens_the_live_stream(live_auth: str, tokens: dict[str, Any]) -> None:
    with httpx.Client(base_url=live_auth, timeout=10) as http:
        spec = study_spec(execution={"entrypoint": "examples.mlp_digits:train"})
        sid = http.post(f"{API}/studies", json=spec, headers=bearer(tokens["admin"])).json()["id"]
        r = http.post(f"{DASH}/studies/{sid}/stream-ticket", headers=bearer(tokens["read"]))
        with http.stream("GET", r.json()["events_url"]) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-content-type-options"] == "nosniff"
            lines = stream.iter_lines()
            assert any(line == "event: change" for line, _ in zip(lines, range(10), strict=False))
        # A token in the Authorization header still opens it, as for any route.
        headers = bearer(tokens["read"])
        with http.stream("GET", f"{DASH}/studies/{sid}/events", headers=headers) as stream:
            assert stream.status_code == 200


# -- the token before the body -----------------------------------------------------------------
def scoped_routes(app: FastAPI) -> list[tuple[str, str, Scope]]:
    out = []
    for route in iter_route_contexts(app.routes):
        needed = route_scope(route)
        if isinstance(route.original_route, APIRoute) and needed is not None:
            out.extend((m, route.path, needed) for m in sorted(route.methods - {"HEAD"}))
    return out


def concrete(path: str) -> str:
    return path.replace("{digest}", "0" * 64).format_map(_Ids())


class _Ids(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "999999"


def test_a_request_without_a_valid_token_is_refused_before_its_body_is_parsed(
    client: TestClient, tokens: dict[str, Any]
) -> None:
    routes = scoped_routes(client.app)  # type: ignore[arg-type]
    mutating = [(m, p, s) for m, p, s in routes if m in MUTATING]
    assert len(mutating) >= 15
    bodies = {
        "malformed": {"content": b"{not json", "headers": {"content-type": "application/json"}},
        "wrong shape": {"json": {"no such field": [1, 2, 3]}},
        "not an object": {"json": [None, "x"]},
    }
    for method, path, needed in mutating:
        for why, body in bodies.items():
            headers = dict(body.get("headers", {}))
            kw = {k: v for k, v in body.items() if k != "headers"}
            r = client.request(method, concrete(path), headers=headers, **kw)
            assert r.status_code == 401, (method, path, why, r.status_code, r.text)
            assert "errors" not in r.json(), "nothing about the body's schema"
            headers.update(bearer("ty_" + "x" * 43))
            r = client.request(method, concrete(path), headers=headers, **kw)
            assert r.status_code == 401, (method, path, why, r.status_code, r.text)
            # A valid token of too narrow a scope: 403, still before the body.
            if needed is not Scope.READ:
                headers.update(bearer(tokens["read"]))
                r = client.request(method, concrete(path), headers=headers, **kw)
                assert r.status_code == 403, (method, path, why, r.status_code, r.text)


def test_the_body_is_not_even_received_without_a_valid_token(auth_settings: Settings) -> None:
    import asyncio

    app = create_app(auth_settings)
    received: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        message = {"type": "http.request", "body": b'{"name": "x"}' * 1000, "more_body": False}
        received.append(message)
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/studies",
        "raw_path": f"{API}/studies".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 401
    assert received == [], "the body was left unread"


# -- the worker registry -----------------------------------------------------------------------
def test_a_queue_limited_worker_token_registers_and_manages_only_its_queues_workers(
    client: TestClient, tokens: dict[str, Any]
) -> None:
    q1, any_queue = bearer(tokens["worker-q1"]), bearer(tokens["worker"])

    def register(name: str, queue: str | None, headers: dict[str, str]) -> Any:
        body: dict[str, Any] = {"name": name, "host": "h"}
        if queue is not None:
            body["queue"] = queue
        return client.post(f"{API}/workers", json=body, headers=headers)

    mine = register("mine", "q1", q1)
    assert mine.status_code == 201, mine.text
    r = register("theirs", "q2", q1)
    assert r.status_code == 403 and "'q2'" in r.json()["detail"]
    r = register("default", None, q1)
    assert r.status_code == 403 and "'default'" in r.json()["detail"]
    theirs = register("theirs", "q2", any_queue)
    assert theirs.status_code == 201
    # Registering again under a name moves that worker: not one of another queue.
    r = register("theirs", "q1", q1)
    assert r.status_code == 403 and "'q2'" in r.json()["detail"]
    assert register("mine", "q1", q1).status_code == 201, "its own, again after a restart"

    tid = theirs.json()["id"]
    assert client.post(f"{API}/workers/{tid}/heartbeat", json={}, headers=q1).status_code == 403
    assert client.delete(f"{API}/workers/{tid}", headers=q1).status_code == 403
    assert client.post(f"{API}/workers/{tid}/heartbeat", headers=any_queue).status_code == 200
    mid = mine.json()["id"]
    assert client.post(f"{API}/workers/{mid}/heartbeat", json={}, headers=q1).status_code == 200
    assert client.delete(f"{API}/workers/{mid}", headers=q1).status_code == 200
    assert client.delete(f"{API}/workers/999999", headers=q1).status_code == 404
    listed = client.get(f"{API}/workers", headers=q1)
    assert {w["name"] for w in listed.json()} == {"theirs"}, "reading is not limited"


# -- a server without authentication -----------------------------------------------------------
@pytest.fixture
def open_client(settings: Settings) -> Iterator[TestClient]:
    """A server without authentication, as bound by `tuneyard server --insecure-no-auth`."""
    assert not settings.auth
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8765") as c:
        yield c


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:8765",
        "rebind.attacker.example:8765",
        "localhost:9999",
        "127.0.0.1",
        "localhost.:8765",
        "127.0.0.1:8765@evil.example",
        "[::1",
        "",
    ],
)
def test_without_auth_a_foreign_host_header_is_refused(open_client: TestClient, host: str) -> None:
    r = open_client.get(f"{API}/studies", headers={"host": host})
    assert r.status_code == 400, r.text
    assert "DNS rebinding" in r.json()["detail"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8765", "localhost:8765", "LOCALHOST:8765", "[::1]:8765"]
)
def test_without_auth_the_loopback_names_are_served(open_client: TestClient, host: str) -> None:
    assert open_client.get(f"{API}/studies", headers={"host": host}).status_code == 200


def test_without_auth_a_change_from_another_origin_is_refused(open_client: TestClient) -> None:
    spec = study_spec()
    for headers in (
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"origin": "http://localhost:8765"},  # another origin than the Host it names
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ):
        r = open_client.post(f"{API}/studies", json=spec, headers=headers)
        assert r.status_code == 403, (headers, r.text)
        assert "origin" in r.json()["detail"] or "marks" in r.json()["detail"]
    sid = open_client.post(f"{API}/studies", json=spec).json()["id"]
    r = open_client.delete(f"{API}/studies/{sid}", headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    # Its own pages, and clients outside a browser, change things as before.
    own = {"origin": "http://127.0.0.1:8765", "sec-fetch-site": "same-origin"}
    assert open_client.post(f"{API}/studies", json=spec, headers=own).status_code == 201
    assert open_client.delete(f"{API}/studies/{sid}").status_code == 204
    assert open_client.get(f"{API}/studies", headers={"origin": "http://x"}).status_code == 200


def test_with_auth_the_host_is_not_restricted(client: TestClient, tokens: dict[str, Any]) -> None:
    # Behind a proxy, with any name: the token is what protects it.
    headers = {"host": "tuneyard.example.org", **bearer(tokens["read"])}
    assert client.get(f"{API}/studies", headers=headers).status_code == 200


# -- nosniff -----------------------------------------------------------------------------------
def test_every_response_says_nosniff(
    auth_settings: Settings, tokens: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = auth_settings.model_copy(update={"max_body_bytes": 100})
    app = create_app(small)

    def boom() -> None:
        raise RuntimeError("an unexpected failure")

    app.add_api_route("/boom", boom, methods=["GET"])
    read = bearer(tokens["read"])
    with TestClient(app, raise_server_exceptions=False) as c:
        answers = {
            "json": c.get(f"{API}/studies", headers=read),
            "401": c.get(f"{API}/studies"),
            "404 route": c.get("/no/such/path"),
            "404 study": c.get(f"{API}/studies/999", headers=read),
            "405": c.put("/healthz"),
            "413": c.post(f"{API}/studies", content=b"x" * 1000, headers=bearer(tokens["admin"])),
            "422": c.get(f"{API}/studies", params={"limit": 0}, headers=read),
            "500": c.get("/boom"),
            "page": c.get("/"),
            "static": c.get("/static/app.js"),
            "docs": c.get("/docs"),
            "openapi": c.get("/openapi.json"),
            "metrics": c.get("/metrics", headers=read),
            "csv": c.get(f"{API}/studies/999/trials.csv", headers=read),
        }
    assert answers["500"].status_code == 500 and answers["413"].status_code == 413
    for name, r in answers.items():
        assert r.headers.get("x-content-type-options") == "nosniff", (name, r.status_code)
        assert r.headers.get_list("x-content-type-options") == ["nosniff"], name
