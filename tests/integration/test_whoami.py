"""GET /api/v1/whoami: any valid token learns its own name, scope and queues (a worker and
the dispatcher ask it when they start); no token, or a revoked one, is a 401."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API
from tuneyard.api.app import create_app
from tuneyard.service.tokens import GRANTS, Scope, TokenService
from tuneyard.settings import Settings


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": True})


@pytest.fixture
def http(app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings)) as c:
        yield c


def make(http: TestClient, name: str, scope: Scope, queues: list[str] | None = None) -> str:
    kit = http.app.state.kit  # type: ignore[attr-defined]
    return TokenService(kit).create(name, scope, queues).secret


def ask(http: TestClient, token: str | None) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = http.get(f"{API}/whoami", headers=headers)
    return r.status_code, r.json()


@pytest.mark.parametrize("scope", list(Scope))
def test_every_scope_learns_who_it_is(http: TestClient, scope: Scope) -> None:
    status, body = ask(http, make(http, f"the {scope} one", scope))
    assert status == 200, body
    grants = sorted(g.value for g in GRANTS[scope])
    assert {**body, "grants": sorted(body["grants"])} == {
        "name": f"the {scope} one",
        "scope": scope.value,
        "grants": grants,
        "queues": None,
        "auth": True,
    }


def test_a_worker_token_learns_its_queues(http: TestClient) -> None:
    status, body = ask(http, make(http, "gpu box", Scope.WORKER, ["gpu", "big"]))
    assert status == 200 and sorted(body["queues"]) == ["big", "gpu"]


def test_no_token_an_unknown_one_or_a_revoked_one_is_a_401(http: TestClient) -> None:
    assert ask(http, None)[0] == 401
    assert ask(http, "ty_" + "x" * 43)[0] == 401
    token = make(http, "soon revoked", Scope.WORKER)
    kit = http.app.state.kit  # type: ignore[attr-defined]
    (row,) = [t for t in TokenService(kit).list() if t.name == "soon revoked"]
    admin = make(http, "admin", Scope.ADMIN)
    r = http.delete(f"{API}/tokens/{row.id}", headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 200
    assert ask(http, token)[0] == 401


def test_without_auth_the_caller_is_an_anonymous_admin(settings: Settings) -> None:
    with TestClient(create_app(settings.model_copy(update={"auth": False}))) as c:
        r = c.get(f"{API}/whoami")
    assert r.status_code == 200
    assert r.json()["scope"] == "admin" and r.json()["auth"] is False
