"""Worker names in the registry: a live worker keeps its name, so a second worker that
registers under it gets a suffix and shows as a row of its own; a dead worker's name is taken
over by the next one to register it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API
from tuneyard.api.app import create_app
from tuneyard.settings import Settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def register(http: TestClient, name: str, pid: int, host: str = "box") -> dict[str, Any]:
    r = http.post(f"{API}/workers", json={"name": name, "host": host, "pid": pid})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def names(http: TestClient) -> list[str]:
    return sorted(w["name"] for w in http.get(f"{API}/workers").json())


def test_two_live_workers_with_one_name_show_as_two_rows(http: TestClient) -> None:
    first = register(http, "box/slot-0", 100)
    second = register(http, "box/slot-0", 200)
    third = register(http, "box/slot-0", 300, host="other")
    assert first["name"] == "box/slot-0"
    assert second["name"] == "box/slot-0-2" and third["name"] == "box/slot-0-3"
    assert len({first["id"], second["id"], third["id"]}) == 3
    assert names(http) == ["box/slot-0", "box/slot-0-2", "box/slot-0-3"]
    # Each keeps its own row: beats and goodbyes reach the worker that sent them.
    http.delete(f"{API}/workers/{second['id']}")
    assert names(http) == ["box/slot-0", "box/slot-0-3"]
    # The same process registering again (an answer it never got) keeps its own name.
    assert register(http, "box/slot-0", 100)["id"] == first["id"]


def test_a_stopped_or_lost_worker_s_name_is_taken_over(http: TestClient, clock: FakeClock) -> None:
    first = register(http, "box/gpu-0", 100)
    http.delete(f"{API}/workers/{first['id']}")
    again = register(http, "box/gpu-0", 101)
    assert again["name"] == "box/gpu-0" and again["id"] == first["id"], "stopped: reused"
    clock.advance(61)  # silent for longer than a lease: lost
    later = register(http, "box/gpu-0", 102)
    assert later["name"] == "box/gpu-0" and later["pid"] == 102, "lost: reused"
    assert names(http) == ["box/gpu-0"]


def test_a_suffix_leaves_a_long_name_within_its_limit(http: TestClient) -> None:
    name = "n" * 200
    register(http, name, 1)
    second = register(http, name, 2)
    assert second["name"] == "n" * 198 + "-2"
