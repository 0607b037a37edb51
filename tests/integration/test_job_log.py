"""The API logs one line per job at INFO (``tuneyard.jobs``): when an attempt starts and when
it ends, with the trial, the study, the attempt, how long it ran and how it ended; a call that
is refused logs nothing."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tuneyard.jobs"]


def test_a_line_per_job_start_and_end(
    http: TestClient, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    spec = study_spec(limits={"max_trials": 2, "max_concurrent": 2})
    spec["execution"] = {"entrypoint": "x.y:z", "max_retries": 1}
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    with caplog.at_level(logging.INFO, logger="tuneyard.jobs"):
        job = http.post(f"{API}/studies/{sid}/next", json={"worker": "box/slot-0"}).json()
        tid = job["trial_id"]
        clock.advance(4.5)
        r = http.post(f"{API}/trials/{tid}/fail", json={"attempt": 1, "error": "boom"})
        assert r.status_code == 200
        # A stale attempt's call is refused and logs nothing.
        assert http.post(f"{API}/trials/{tid}/complete", json={"attempt": 7}).status_code == 409
        again = http.post(f"{API}/studies/{sid}/next", json={"worker": "box/slot-1"}).json()
        assert again["trial_id"] == tid and again["attempt"] == 2
        clock.advance(2)
        r = http.post(f"{API}/trials/{tid}/complete", json={"attempt": 2, "value": 0.5})
        assert r.status_code == 200
    said = lines(caplog)
    assert len(said) == 4, said
    assert re.fullmatch(
        rf"trial {tid} \(study {sid}, attempt 1\) starts on box/slot-0: new trial, resource .+",
        said[0],
    )
    assert said[1] == f"trial {tid} (study {sid}, attempt 1) ends after 4.5 s: failed"
    assert said[2].startswith(f"trial {tid} (study {sid}, attempt 2) starts on box/slot-1:")
    assert said[3] == f"trial {tid} (study {sid}, attempt 2) ends after 2.0 s: completed"
