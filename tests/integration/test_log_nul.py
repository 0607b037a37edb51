"""Text a worker sends that holds NUL characters (an objective's output, its error, the reason
it hands a trial back) is stored with each NUL as U+FFFD, on SQLite and PostgreSQL alike
(PostgreSQL's text can't hold NUL); it is never refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

NUL, STORED = "\x00", "\ufffd"


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _worker_body(job: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A worker call's body, with the attempt the job was given."""
    return {"attempt": job["attempt"], **fields}


def _jobs(http: TestClient, n: int) -> list[dict[str, Any]]:
    spec = study_spec(
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 3},
        execution={"entrypoint": "x.y:z", "max_retries": 0},
        limits={"max_trials": n, "max_concurrent": n},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    jobs = [http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json() for _ in range(n)]
    assert all("trial_id" in j for j in jobs), jobs
    return jobs


def test_output_with_nul_characters_is_stored_with_offsets_kept(http: TestClient) -> None:
    (job,) = _jobs(http, 1)
    tid, url = job["trial_id"], f"{API}/trials/{job['trial_id']}/log"
    first = f"binary {NUL}{NUL} header\n"
    r = http.post(url, json={"attempt": 1, "offset": 0, "text": first})
    assert r.status_code == 200, r.text
    stored_first = first.replace(NUL, STORED)
    assert r.json()["log_bytes"] == len(stored_first.encode())
    # The next chunk's offset counts characters as the worker sent them: one for each NUL.
    second = f"done{NUL}\n"
    r = http.post(url, json={"attempt": 1, "offset": len(first), "text": second})
    assert r.status_code == 200, r.text
    # A chunk sent again (its answer was lost) is not stored twice.
    again = http.post(url, json={"attempt": 1, "offset": 0, "text": first})
    assert again.status_code == 200 and again.json() == r.json()

    whole = (first + second).replace(NUL, STORED)
    assert len(whole) == len(first) + len(second)
    assert http.get(url, params={"attempt": 1}).text == whole
    assert r.json()["log_bytes"] == len(whole.encode())
    assert http.get(f"{API}/trials/{tid}").json()["log_tail"] == whole


def test_an_error_and_a_reason_with_nul_characters_are_stored(http: TestClient) -> None:
    failing, released = _jobs(http, 2)
    error = f"Traceback\nValueError: bad byte {NUL!r} then {NUL}"
    r = http.post(
        f"{API}/trials/{failing['trial_id']}/fail", json=_worker_body(failing, error=error)
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "failed"
    assert NUL not in r.json()["reason"] and STORED in r.json()["reason"]

    reason = f"worker {NUL} shutting down"
    r = http.post(
        f"{API}/trials/{released['trial_id']}/release", json=_worker_body(released, reason=reason)
    )
    assert r.status_code == 200, r.text
    t = http.get(f"{API}/trials/{released['trial_id']}").json()
    assert t["state"] == "queued"
    assert any(reason.replace(NUL, STORED) in (d["reason"] or "") for d in t["decisions"]), t
