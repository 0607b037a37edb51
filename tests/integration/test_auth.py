"""Authentication and scopes, on SQLite and PostgreSQL.

The route walk goes through every route of the app: each one in the OpenAPI document is either
public by name or declares a scope, and each mutating route (and each reading one) refuses a
missing or wrong token with 401 and every token whose scope does not cover it with 403.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.api.auth import route_scope
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import GRANTS, Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_sessionmaker
from tuneyard.store.models import ApiToken

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# What anyone may fetch: health, the schema and docs, the dashboard's page and static files.
PUBLIC = {"/healthz", "/readyz", "/openapi.json"}
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture
def auth_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": True})


@pytest.fixture
def tokens(auth_settings: Settings) -> dict[str, str]:
    engine = create_engine(auth_settings.resolved_database_url())
    service = TokenService(Toolkit(make_sessionmaker(engine), auth_settings))
    out = {scope.value: service.create(f"{scope.value} test", scope).secret for scope in Scope}
    out["worker-q1"] = service.create("q1 only", Scope.WORKER, ["q1"]).secret
    revoked = service.create("revoked", Scope.ADMIN)
    service.revoke(revoked.token.id)
    out["revoked"] = revoked.secret
    out["expired"] = service.create("old", Scope.ADMIN, expires_in=timedelta(seconds=-1)).secret
    engine.dispose()
    return out


@pytest.fixture
def app_client(auth_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_routes(client: TestClient) -> list[tuple[str, str, Any]]:
    """(method, path, route) for every route of the OpenAPI document, with the dependencies
    it has from the routers that include it."""
    schema_paths = set(client.get("/openapi.json").json()["paths"])
    out = []
    for route in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        if isinstance(route.original_route, APIRoute) and route.path in schema_paths:
            out.extend((m, route.path, route) for m in sorted(route.methods - {"HEAD"}))
    assert {p for _, p, _ in out} == schema_paths
    return out


def concrete(path: str) -> str:
    # Ids of nothing: the walk must not revoke its own tokens or delete what it walks.
    return re.sub(r"\{[^}]+\}", "999999", path)


def call(client: TestClient, method: str, path: str, **kw: Any) -> Any:
    body = {"json": {}} if method in MUTATING else {}
    return client.request(method, concrete(path), **body, **kw)


def test_every_route_is_public_by_name_or_declares_a_scope(app_client: TestClient) -> None:
    routes = api_routes(app_client)
    assert len(routes) > 25
    undeclared = [(m, p) for m, p, r in routes if p not in PUBLIC and route_scope(r) is None]
    assert not undeclared, f"routes without a scope: {undeclared}"
    scopes = {(m, p): route_scope(r) for m, p, r in routes}
    assert scopes[("POST", "/api/v1/studies")] is Scope.WRITE
    assert scopes[("DELETE", "/api/v1/studies/{study_id}")] is Scope.WRITE
    assert scopes[("POST", "/api/v1/trials/{trial_id}/reports")] is Scope.WORKER
    assert scopes[("PUT", "/api/v1/trials/{trial_id}/checkpoint")] is Scope.WORKER
    assert scopes[("GET", "/api/v1/studies")] is Scope.READ
    assert scopes[("GET", "/metrics")] is Scope.READ
    assert scopes[("POST", "/api/v1/tokens")] is Scope.ADMIN
    # The OpenAPI document says so too.
    doc = app_client.get("/openapi.json").json()
    for m, p, _ in routes:
        op = doc["paths"][p][m.lower()]
        if p in PUBLIC:
            assert "security" not in op, (m, p)
        else:
            assert op.get("security") and {"401", "403"} <= set(op["responses"]), (m, p)


def test_the_route_walk_refuses_missing_wrong_and_underscoped_tokens(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    wrong = {
        "missing": {},
        "unknown": bearer("ty_" + "x" * 43),
        "garbage": bearer("not-a-token"),
        "empty": {"Authorization": "Bearer "},
        "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "revoked": bearer(tokens["revoked"]),
        "expired": bearer(tokens["expired"]),
    }
    walked = 0
    for method, path, route in api_routes(app_client):
        if path in PUBLIC:
            continue
        needed = route_scope(route)
        assert needed is not None
        for why, headers in wrong.items():
            r = call(app_client, method, path, headers=headers)
            assert r.status_code == 401, (method, path, why, r.status_code, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["content-type"].startswith("application/problem+json")
        for scope in Scope:
            r = call(app_client, method, path, headers=bearer(tokens[scope.value]))
            if needed in GRANTS[scope]:
                assert r.status_code not in (401, 403), (method, path, scope, r.text)
            else:
                assert r.status_code == 403, (method, path, scope, r.status_code, r.text)
                assert needed.value in r.json()["detail"]
        walked += method in MUTATING
    assert walked >= 15, "every mutating route was walked"


def test_a_token_in_the_query_string_is_never_accepted(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    # URLs end up in proxy logs and browser histories: a token goes in the header only (the
    # event stream takes a short-lived ticket instead, tests/integration/test_auth_hardening.py).
    for name in ("access_token", "token", "ticket"):
        read = {name: tokens["read"]}
        assert app_client.get(f"{API}/studies", params=read).status_code == 401
        r = app_client.post(f"{API}/studies", params={name: tokens["admin"]}, json=study_spec())
        assert r.status_code == 401


def test_health_docs_and_schema_are_public_and_metrics_can_be(
    auth_settings: Settings, tokens: dict[str, str]
) -> None:
    with TestClient(create_app(auth_settings)) as c:
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=bearer(tokens["read"])).status_code == 200
    public = auth_settings.model_copy(update={"metrics_public": True})
    with TestClient(create_app(public)) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get(f"{API}/studies").status_code == 401


def test_a_worker_token_serves_only_its_queues(
    app_client: TestClient, tokens: dict[str, str]
) -> None:
    admin, q1 = bearer(tokens["admin"]), bearer(tokens["worker-q1"])

    def study(queue: str) -> int:
        spec = study_spec(execution={"entrypoint": "examples.mlp_digits:train", "queue": queue})
        r = app_client.post(f"{API}/studies", json=spec, headers=admin)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    mine, other = study("q1"), study("q2")
    job = app_client.post(f"{API}/studies/{mine}/next", json={}, headers=q1)
    assert job.status_code == 200
    r = app_client.post(f"{API}/studies/{other}/next", json={}, headers=q1)
    assert r.status_code == 403 and "'q2'" in r.json()["detail"]
    theirs = app_client.post(f"{API}/studies/{other}/next", json={}, headers=admin).json()
    tid = job.json()["trial_id"]
    report = {"attempt": 1, "step": 1, "value": 0.5}
    assert app_client.post(f"{API}/trials/{tid}/reports", json=report, headers=q1).is_success
    r = app_client.post(f"{API}/trials/{theirs['trial_id']}/reports", json=report, headers=q1)
    assert r.status_code == 403
    # Reading is not limited to queues; a study that does not exist is still a 404.
    assert app_client.get(f"{API}/studies/{other}", headers=q1).status_code == 200
    assert app_client.post(f"{API}/studies/999/next", json={}, headers=q1).status_code == 404


def test_tokens_are_created_listed_and_revoked_by_an_admin(
    app_client: TestClient, tokens: dict[str, str], auth_settings: Settings
) -> None:
    admin = bearer(tokens["admin"])
    r = app_client.post(
        f"{API}/tokens",
        json={"name": "gpu box", "scope": "worker", "queues": ["gpu"], "expires_in_days": 30},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    new = r.json()
    secret = new["token"]
    assert secret.startswith("ty_") and len(secret) > 40
    assert new["scope"] == "worker" and new["queues"] == ["gpu"] and new["expires_at"]
    assert secret.startswith(new["hint"])
    listed = app_client.get(f"{API}/tokens", headers=admin).json()
    assert new["id"] in [t["id"] for t in listed]
    assert all("token" not in t for t in listed), "a listing never holds a secret"
    assert app_client.get(f"{API}/workers", headers=bearer(secret)).status_code == 200

    # Stored as its SHA-256 only.
    engine = create_engine(auth_settings.resolved_database_url())
    with engine.connect() as conn:
        row = conn.execute(select(ApiToken).where(ApiToken.id == new["id"])).one()
    engine.dispose()
    assert row.secret_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(tuple(row))

    r = app_client.delete(f"{API}/tokens/{new['id']}", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert app_client.get(f"{API}/workers", headers=bearer(secret)).status_code == 401
    assert app_client.delete(f"{API}/tokens/{new['id']}", headers=admin).status_code == 200
    assert app_client.delete(f"{API}/tokens/99999", headers=admin).status_code == 404
    r = app_client.post(
        f"{API}/tokens", json={"name": "x", "scope": "read", "queues": ["a"]}, headers=admin
    )
    assert r.status_code == 422 and "queues" in r.json()["detail"]
    r = app_client.post(f"{API}/tokens", json={"name": "x", "scope": "root"}, headers=admin)
    assert r.status_code == 422
