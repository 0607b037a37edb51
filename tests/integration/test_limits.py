"""Input limits: every bound answers 422, 413 or 429 with a problem that names the limit, and
nothing is stored."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.api.limits import RateLimiter
from tuneyard.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BODY_LIMIT = 20_000


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    limited = settings.model_copy(
        update={"max_body_bytes": BODY_LIMIT, "report_rate": 10.0, "report_burst": 3}
    )
    with TestClient(create_app(limited)) as c:
        yield c


def refused(r: Any, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    for w in words:
        assert w in body["detail"], (w, body["detail"])
    return body


def no_studies(http: TestClient) -> None:
    assert http.get(f"{API}/studies").json()["items"] == []


# -- request bodies --------------------------------------------------------------------------
def test_a_body_over_the_limit_is_a_413_naming_it(http: TestClient) -> None:
    big = study_spec(description="x" * 9_000, name="y" * 150)
    big["space"] = {f"p{i}": {"type": "categorical", "choices": ["a" * 190]} for i in range(60)}
    r = http.post(f"{API}/studies", json=big)
    body = refused(r, 413, f"{BODY_LIMIT} bytes", "max_body_bytes")
    assert body["limit"] == "max_body_bytes" and body["max"] == BODY_LIMIT
    no_studies(http)


def test_a_chunked_body_is_cut_off_at_the_limit(http: TestClient) -> None:
    sent = []

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "chunked", "description": "'
        for _ in range(100):
            sent.append(1)
            yield b"z" * 1000
        yield b'", "space": {"x": {"type": "float", "low": 0, "high": 1}}}'

    r = http.post(f"{API}/studies", content=chunks(), headers={"content-type": "application/json"})
    refused(r, 413, "max_body_bytes")
    no_studies(http)


def test_checkpoint_uploads_have_their_own_limit(http: TestClient) -> None:
    sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={}).json()
    # Random bytes stay about their size once compressed: an archive over the body limit.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("weights.bin")
        info.size = 3 * BODY_LIMIT
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
    assert len(buf.getvalue()) > BODY_LIMIT
    r = http.put(
        f"{API}/trials/{job['trial_id']}/checkpoint",
        params={"attempt": job["attempt"]},
        content=buf.getvalue(),
    )
    assert r.status_code == 201, r.text


# -- the study definition --------------------------------------------------------------------
SPACE_LIMITS = [
    pytest.param(
        {"space": {f"p{i}": {"type": "float", "low": 0, "high": 1} for i in range(65)}},
        ("space", "at most 64"),
        id="parameters",
    ),
    pytest.param(
        {"space": {"c": {"type": "categorical", "choices": list(range(1001))}}},
        ("space.c.choices", "at most 1000"),
        id="choices",
    ),
    pytest.param(
        {"space": {"c": {"type": "categorical", "choices": ["x" * 201]}}},
        ("space.c.choices", "at most 200 characters"),
        id="choice-length",
    ),
    pytest.param(
        {
            "sampler": {"type": "grid"},
            "space": {f"i{k}": {"type": "int", "low": 0, "high": 99} for k in range(4)},
        },
        ("", "sampler: the grid has 1e+08 points", "1,000,000"),
        id="grid-size",
    ),
    pytest.param({"name": "n" * 201}, ("name", "at most 200"), id="name"),
    pytest.param({"description": "d" * 10_001}, ("description", "at most 10000"), id="description"),
    pytest.param(
        {"execution": {"command": ["python", "a" * 4097]}},
        ("execution.command.1", "at most 4096"),
        id="command-word",
    ),
    pytest.param(
        {"execution": {"command": ["x"] * 257}},
        ("execution.command", "at most 256"),
        id="command-words",
    ),
    pytest.param(
        {"execution": {"entrypoint": "m" * 300 + ":f"}},
        ("execution.entrypoint", "at most 300"),
        id="entrypoint",
    ),
]


@pytest.mark.parametrize(("change", "words"), SPACE_LIMITS)
def test_each_bound_of_a_study_definition_is_a_422_naming_it(
    http: TestClient, change: dict[str, Any], words: tuple[str, ...]
) -> None:
    spec = study_spec()
    spec.update(change)
    r = http.post(f"{API}/studies", json=spec)
    body = refused(r, 422, *words[1:])
    if words[0]:  # a rule across fields (the grid) names them in its message instead
        assert body["errors"][0]["field"] == words[0], body["errors"]
    no_studies(http)


# -- reports ---------------------------------------------------------------------------------
def running_trial(http: TestClient) -> int:
    spec = study_spec(scheduler={"type": "fifo", "max_resource": 27})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    return int(http.post(f"{API}/studies/{sid}/next", json={}).json()["trial_id"])


@pytest.mark.parametrize(
    ("metrics", "field", "words"),
    [
        ({f"m{i}": 1.0 for i in range(257)}, "metrics", "at most 256"),
        ({"m" * 201: 1.0}, "metrics.m" + "m" * 200, "at most 200 characters"),
    ],
)
def test_metrics_per_report_are_bounded(
    http: TestClient, metrics: dict[str, float], field: str, words: str
) -> None:
    tid = running_trial(http)
    r = http.post(
        f"{API}/trials/{tid}/reports",
        json={"attempt": 1, "step": 1, "value": 1, "metrics": metrics},
    )
    body = refused(r, 422, words)
    assert body["errors"][0]["field"].startswith("metrics")
    assert http.get(f"{API}/trials/{tid}").json()["reports"] == []


def test_a_trial_reporting_too_fast_gets_429_with_retry_after(http: TestClient) -> None:
    tid, other = running_trial(http), running_trial(http)
    # The clock stands still: on a loaded machine the burst's reports could otherwise take
    # long enough (0.1 s each at 10 per second) to refill the bucket before the fourth.
    limiter = http.app.state.report_limiter  # type: ignore[attr-defined]
    limiter.clock = lambda: 1000.0
    for step in (1, 2, 3):  # the burst
        assert http.post(
            f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": step, "value": 0.5}
        ).is_success
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 4, "value": 0.5})
    body = refused(r, 429, f"trial {tid}", "10 per second", "report_rate")
    assert body["limit"] == "report_rate"
    assert int(r.headers["retry-after"]) >= 1
    assert [x["step"] for x in http.get(f"{API}/trials/{tid}").json()["reports"]] == [1, 2, 3]
    # Another trial has its own budget.
    assert http.post(
        f"{API}/trials/{other}/reports", json={"attempt": 1, "step": 1, "value": 0.5}
    ).is_success


def test_the_report_rate_refills_with_time() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, max_keys=3, clock=lambda: now[0])
    assert limiter.acquire(1) is None and limiter.acquire(1) is None
    assert limiter.acquire(1) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire(1) is None
    assert limiter.acquire(1) == pytest.approx(0.5)
    for key in range(10, 20):  # made-up keys don't grow it past max_keys
        limiter.acquire(key)
    assert len(limiter._buckets) == 3
    assert RateLimiter(rate=0, burst=1).acquire(1) is None, "0 turns the limit off"
