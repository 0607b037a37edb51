"""A study definition is checked once, off the event loop, and never again when it is read.

A definition whose check was expensive once froze the whole API, ``/healthz`` included,
because FastAPI checked the body model on the event loop; and each later read of that study
checked the stored definition again. The check is now bounded (tests/unit/test_spec_cost.py);
here: it runs in the route's worker thread, reads parse the stored definition without
checking it, the 422 still names the field, and a definition has a size limit of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import tuneyard.spec.study
from tests.helpers import API, serve, study_spec
from tests.spaces import gated_ints
from tuneyard.api.app import create_app
from tuneyard.api.limits import MAX_STUDY_BYTES
from tuneyard.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def live(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn in a thread: one event loop, as in production."""
    with serve(create_app(settings)) as url:
        yield url


def grid_study() -> dict[str, Any]:
    """A valid definition of the reported shape: 16 binaries gating 48 ints, grid (2**16
    branches: a walk over them took seconds, on every read of the study)."""
    return {**study_spec(), **gated_ints(0, high=0, binaries=16, ints=48), "name": "gated"}


class Counted:
    """Counts the grid checks of study definitions (``grid_size`` as the definition's checks
    in ``tuneyard.spec.study`` call it: only the full check of a grid definition does)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = tuneyard.spec.study.grid_size

        def counted(space: Any) -> int:
            self.calls += 1
            return original(space)

        monkeypatch.setattr(tuneyard.spec.study, "grid_size", counted)


# -- (b) reads do not check the stored definition again --------------------------------------
def test_creating_checks_the_definition_once_and_reading_never(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Counted(monkeypatch)
    r = http.post(f"{API}/studies", json=grid_study())
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert checks.calls == 1
    assert r.json()["spec"]["space"]["x0"]["when"]
    for _ in range(3):
        got = http.get(f"{API}/studies/{sid}")
        assert got.status_code == 200 and got.json()["spec"] == r.json()["spec"]
        page = http.get(f"{API}/studies")
        assert page.status_code == 200 and page.json()["items"][0]["id"] == sid
        assert http.get(f"{API}/studies/{sid}/trials").status_code == 200
    # The study's algorithm objects are built from the stored definition too.
    job = http.post(f"{API}/studies/{sid}/next", json={})
    assert job.status_code == 200, job.text
    assert checks.calls == 1


def test_the_export_and_the_dashboard_do_not_check_the_stored_definition_either(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = http.post(f"{API}/studies", json=grid_study()).json()["id"]
    checks = Counted(monkeypatch)
    assert http.get(f"{API}/studies/{sid}/trials.csv").status_code == 200
    assert http.get(f"{API}/dashboard/studies/{sid}").status_code == 200
    assert http.get(f"{API}/dashboard/studies").status_code == 200
    assert checks.calls == 0


# -- (c) the check runs off the event loop -----------------------------------------------------
def test_the_api_answers_while_a_definition_is_being_checked(
    live: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check held up on purpose (until the test lets it go) must not hold up the server:
    /healthz and reads answer meanwhile. Were the check on the event loop, /healthz would
    wait for it, and the test would fail on its timeout."""
    entered, release = threading.Event(), threading.Event()
    original = tuneyard.spec.study.grid_size

    def held(space: Any) -> int:
        entered.set()
        release.wait(60)
        return original(space)

    monkeypatch.setattr(tuneyard.spec.study, "grid_size", held)
    created: list[httpx.Response] = []

    def create() -> None:
        with httpx.Client(base_url=live, timeout=120) as c:
            created.append(c.post(f"{API}/studies", json=grid_study()))

    poster = threading.Thread(target=create, daemon=True)
    poster.start()
    try:
        assert entered.wait(30), "the definition was never checked"
        with httpx.Client(base_url=live, timeout=15) as c:
            assert c.get("/healthz").status_code == 200
            assert c.get(f"{API}/studies").status_code == 200
        assert not created  # still being checked
    finally:
        release.set()
        poster.join(60)
    assert created and created[0].status_code == 201, created


# -- what a client sees ------------------------------------------------------------------------
def test_an_invalid_definition_is_a_422_naming_the_field(http: TestClient) -> None:
    bad = study_spec()
    bad["space"]["x"] = {"type": "float", "low": 2, "high": 1}
    r = http.post(f"{API}/studies", json=bad)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["field"] == "space.x"
    assert "low (2.0) must not be greater than high (1.0)" in r.json()["detail"]
    r = http.post(f"{API}/studies", json={**study_spec(), "limits": {"max_trials": "many"}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "limits.max_trials"
    r = http.post(f"{API}/studies", json=[1, 2])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    r = http.post(f"{API}/studies", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    r = http.post(f"{API}/studies")
    assert r.status_code == 422 and "a JSON body is required" in r.json()["detail"]
    # The reported definition: refused, quickly, saying why.
    r = http.post(f"{API}/studies", json={**study_spec(), **gated_ints(0, high=3)})
    assert r.status_code == 422 and "cross too often" in r.json()["detail"]
    assert http.get(f"{API}/studies").json()["items"] == []


def test_the_openapi_document_still_shows_the_definition_schema(http: TestClient) -> None:
    doc = http.get("/openapi.json").json()
    body = doc["paths"][f"{API}/studies"]["post"]["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"name", "space", "sampler", "scheduler"} <= set(schema["properties"])


def test_a_definition_larger_than_its_limit_is_a_413_naming_it(http: TestClient) -> None:
    spec = study_spec(description="d" * 9_000)
    spec["space"] = {
        f"p{i}": {"type": "categorical", "choices": [f"{k:04d}" + "c" * 190 for k in range(12)]}
        for i in range(60)
    }
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["limit"] == "max_study_bytes" and r.json()["max"] == MAX_STUDY_BYTES
    assert http.get(f"{API}/studies").json()["items"] == []
