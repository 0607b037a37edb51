"""A malformed pagination cursor is a 422 naming ``cursor`` on every route that takes one.

A cursor is opaque to clients, but it arrives as text anyone can write. It once reached the
query as whatever JSON it decoded to: ``int("abc")``, ``float(None)`` or a number past 64 bits
answered 500, and a negative or fractional one was taken as if this API had returned it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.studies import encode_cursor
from tuneyard.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Cursors that are not base64 of a JSON list, whatever the route.
NOT_A_CURSOR = [
    "garbage",
    "x" * 201,
    "%%%%",
    "a",
    "@@@@====",
    b64(b"\xff\xfe\xfd"),  # not UTF-8
    b64("not json"),
    b64("{}"),
    b64('{"id": 3}'),
    b64("[]"),
    b64("3"),
    b64("null"),
    b64("[" * 70 + "]" * 70),
]
# Lists of one position (a study id, a trial number), of the wrong kind.
BAD_KEY = [
    b64('["abc"]'),
    b64("[null]"),
    b64("[[1]]"),
    b64('[{"a": 1}]'),
    b64("[true]"),
    b64("[1.5]"),
    b64("[2.0]"),
    b64("[-1]"),
    b64("[-9223372036854775809]"),
    b64("[9223372036854775808]"),
    b64("[" + "9" * 60 + "]"),
    b64("[1e400]"),
    b64("[NaN]"),
    b64("[1, 2]"),
]
# Lists of a trial's value and id (the cursor of the value orders), of the wrong kind.
BAD_VALUE_KEY = [
    b64("[1]"),
    b64('["x", 1]'),
    b64("[null, 1]"),
    b64("[NaN, 1]"),
    b64("[Infinity, 1]"),
    b64("[-Infinity, 1]"),
    b64("[1e400, 1]"),
    b64("[true, 1]"),
    b64('[0.5, "1"]'),
    b64("[0.5, 1.5]"),
    b64("[0.5, -1]"),
    b64("[0.5, 99999999999999999999999]"),
    b64("[0.5, 1, 2]"),
]


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def sid(http: TestClient) -> int:
    """A study with three finished trials, so every order has a page to cut."""
    r = http.post(f"{API}/studies", json=study_spec(limits={"max_trials": 10, "max_concurrent": 4}))
    assert r.status_code == 201, r.text
    study_id: int = r.json()["id"]
    for i in range(3):
        job = http.post(f"{API}/studies/{study_id}/next", json={}).json()
        body: dict[str, Any] = {"value": 0.25 * (i + 1)}
        if "attempt" in job:
            body["attempt"] = job["attempt"]
        done = http.post(f"{API}/trials/{job['trial_id']}/complete", json=body)
        assert done.status_code == 200, done.text
    return study_id


def routes(study_id: int) -> list[tuple[str, dict[str, Any], list[str]]]:
    """Every route that takes a cursor: its path, other parameters, and its bad cursors."""
    trials = f"{API}/studies/{study_id}/trials"
    return [
        (f"{API}/studies", {}, NOT_A_CURSOR + BAD_KEY),
        (f"{API}/dashboard/studies", {}, NOT_A_CURSOR + BAD_KEY),
        (trials, {"order": "number"}, NOT_A_CURSOR + BAD_KEY),
        (trials, {"order": "-number"}, NOT_A_CURSOR + BAD_KEY),
        (trials, {"order": "value"}, NOT_A_CURSOR + BAD_VALUE_KEY),
        (trials, {"order": "-value"}, NOT_A_CURSOR + BAD_VALUE_KEY),
    ]


def test_a_malformed_cursor_is_a_422_naming_the_cursor(http: TestClient, sid: int) -> None:
    for path, params, cursors in routes(sid):
        for cursor in cursors:
            r = http.get(path, params={**params, "limit": 1, "cursor": cursor})
            assert r.status_code == 422, (path, params, cursor, r.status_code, r.text)
            body = r.json()
            assert body["errors"][0]["field"] == "cursor", (path, cursor, body)
            assert body["detail"].startswith("cursor: "), body


def test_the_cursors_the_api_returns_still_page_through(http: TestClient, sid: int) -> None:
    for path, params, _ in routes(sid):
        seen: list[int] = []
        cursor = None
        while True:
            paged = {**params, "limit": 1} | ({"cursor": cursor} if cursor else {})
            page = http.get(path, params=paged)
            assert page.status_code == 200, (path, params, page.text)
            seen += [item["id"] for item in page.json()["items"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == (3 if path.endswith("/trials") else 1)
    # A cursor written by hand in the same shape is as good as one the API returned.
    first = http.get(
        f"{API}/studies/{sid}/trials", params={"order": "number", "cursor": encode_cursor([0])}
    )
    assert [t["number"] for t in first.json()["items"]] == [1, 2]
