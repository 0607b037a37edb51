"""The worker side of the API on SQLite and PostgreSQL: registration, logs, checkpoints, and
handing a trial back."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API, archive, checkpoint, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def start(http: TestClient, **limits: int) -> tuple[int, dict]:  # type: ignore[type-arg]
    spec = study_spec(limits={"max_trials": 3, "max_concurrent": 2, **limits})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
    return sid, job


# -- workers -------------------------------------------------------------------------------------
def test_workers_register_beat_go_lost_and_stop(http: TestClient, clock: FakeClock) -> None:
    gpu = {"index": "0", "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}
    body = {"name": "gpu-box/gpu-0", "host": "gpu-box", "pid": 42, "queue": "q", "gpus": [gpu]}
    w = http.post(f"{API}/workers", json=body)
    assert w.status_code == 201, w.text
    wid = w.json()["id"]
    assert w.json()["gpus"][0]["memory_mib"] == 81559 and w.json()["state"] == "active"
    again = http.post(f"{API}/workers", json=body).json()
    assert again["id"] == wid, "the same process registering again keeps its record"

    beat = http.post(f"{API}/workers/{wid}/heartbeat", json={"trial_id": 7}).json()
    assert beat["trial_id"] == 7
    clock.advance(61)  # silent for longer than a lease
    (listed,) = http.get(f"{API}/workers").json()
    assert listed["state"] == "lost"
    http.post(f"{API}/workers/{wid}/heartbeat", json={})
    assert http.get(f"{API}/workers").json()[0]["state"] == "active"

    assert http.delete(f"{API}/workers/{wid}").json()["state"] == "stopped"
    assert http.get(f"{API}/workers").json() == []
    assert [w["name"] for w in http.get(f"{API}/workers?include_stopped=true").json()] == [
        "gpu-box/gpu-0"
    ]
    assert http.post(f"{API}/workers/999/heartbeat", json={}).status_code == 404


def test_a_bad_registration_names_the_field(http: TestClient) -> None:
    r = http.post(f"{API}/workers", json={"name": "", "host": "h", "slots": 0})
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"name", "slots"} <= fields, r.json()


# -- logs ----------------------------------------------------------------------------------------
def test_log_chunks_are_stored_once_and_read_whole(http: TestClient) -> None:
    _, job = start(http)
    tid = job["trial_id"]
    url = f"{API}/trials/{tid}/log"
    for offset, text in ((0, "epoch 1 loss 0.9\n"), (17, "epoch 2 loss 0.5\n")):
        assert (
            http.post(url, json={"attempt": 1, "offset": offset, "text": text}).status_code == 200
        )
    # A chunk sent again after a lost answer is not stored twice.
    http.post(url, json={"attempt": 1, "offset": 17, "text": "epoch 2 loss 0.5\n"})
    log = http.get(url)
    assert log.headers["content-type"].startswith("text/plain")
    assert log.text == "----- attempt 1 -----\nepoch 1 loss 0.9\nepoch 2 loss 0.5\n"
    assert http.get(f"{API}/trials/{tid}").json()["log_tail"].endswith("epoch 2 loss 0.5\n")
    bad = http.post(url, json={"attempt": 2, "offset": 0, "text": "x"})
    assert bad.status_code == 422 and "attempt" in bad.json()["detail"]
    assert http.get(f"{API}/trials/999/log").status_code == 404


# -- checkpoints ---------------------------------------------------------------------------------
def test_a_checkpoint_uploads_and_downloads_and_the_older_one_waits_for_the_retention_period(
    http: TestClient, settings: Settings
) -> None:
    _, job = start(http)
    tid = job["trial_id"]
    first = archive(b"epoch 1")
    r = http.put(f"{API}/trials/{tid}/checkpoint", params={"attempt": 1}, content=first)
    assert r.status_code == 201, r.text
    location = r.json()["location"]
    digest = hashlib.sha256(first).hexdigest()
    assert location == f"api:{tid}/{digest}"
    got = http.get(f"{API}/trials/{tid}/checkpoint/{digest}")
    assert got.status_code == 200 and got.content == first

    second = archive(b"epoch 2")
    loc2 = http.put(f"{API}/trials/{tid}/checkpoint", params={"attempt": 1}, content=second).json()[
        "location"
    ]
    files = sorted(p.name for p in Path(settings.data_dir).rglob("*.tar.gz"))
    # Superseded, and deleted once checkpoint_retention has passed (test_checkpoint_retention).
    assert files == sorted(f"{d}.tar.gz" for d in (digest, loc2.rsplit("/", 1)[1]))
    assert http.get(f"{API}/trials/{tid}/checkpoint/{digest}").status_code == 200
    assert http.get(f"{API}/trials/{tid}/checkpoint/{'0' * 64}").status_code == 404
    assert http.get(f"{API}/trials/{tid}/checkpoint/not-a-digest").status_code == 422
    empty = http.put(f"{API}/trials/{tid}/checkpoint", params={"attempt": 1}, content=b"")
    assert empty.status_code == 422


def test_only_a_running_trial_uploads_a_checkpoint(http: TestClient) -> None:
    _, job = start(http)
    tid = job["trial_id"]
    http.post(f"{API}/trials/{tid}/fail", json={"attempt": 1, "error": "boom"})
    r = http.put(f"{API}/trials/{tid}/checkpoint", params={"attempt": 1}, content=archive(b"x"))
    assert r.status_code == 409


# -- handing a trial back ------------------------------------------------------------------------
def test_a_handed_back_trial_resumes_from_its_checkpoint_without_using_a_retry(
    http: TestClient,
) -> None:
    spec = study_spec(
        limits={"max_trials": 1, "max_concurrent": 1},
        scheduler={"type": "fifo", "max_resource": 5},
        execution={"entrypoint": "x.y:z", "max_retries": 0},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
    tid = job["trial_id"]
    assert (job["resource_from"], job["resource_to"], job["attempt"]) == (0, 5, 1)
    for step in (1, 2):
        http.post(
            f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": step, "value": 1.0 / step}
        )
    outside = http.post(
        f"{API}/trials/{tid}/release",
        json={"attempt": 1, "reason": "r", "checkpoint": "c", "step": 9},
    )
    assert outside.status_code == 422 and outside.json()["errors"][0]["field"] == "step"
    saved = checkpoint(http, tid, 1, "at step 2")
    r = http.post(
        f"{API}/trials/{tid}/release",
        json={"attempt": 1, "reason": "the worker is stopping", "checkpoint": saved, "step": 2},
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "queued" and r.json()["reason"].startswith("handed back")
    again = http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).json()
    assert again["trial_id"] == tid and again["kind"] == "resume"
    assert (again["resource_from"], again["checkpoint"], again["attempt"]) == (2, saved, 2)
    # max_retries is 0, yet the trial carries on: a hand-back is not a failure.
    for step in (3, 4, 5):
        http.post(f"{API}/trials/{tid}/reports", json={"attempt": 2, "step": step, "value": 0.1})
    t = http.get(f"{API}/trials/{tid}").json()
    assert t["state"] == "completed"
    assert [a["state"] for a in t["attempt_log"]] == ["released", "completed"]
    assert [r["step"] for r in t["reports"]] == [1, 2, 3, 4, 5]
    assert any(d["kind"] == "release" for d in t["decisions"])


def test_a_queued_trial_goes_to_the_worker_that_ran_it_if_free_else_to_any(
    http: TestClient,
) -> None:
    spec = study_spec(
        limits={"max_trials": 3, "max_concurrent": 3},
        scheduler={"type": "fifo", "max_resource": 5},
        execution={"entrypoint": "x.y:z"},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    a = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
    b = http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).json()
    for job in (a, b):
        r = http.post(
            f"{API}/trials/{job['trial_id']}/release", json={"attempt": 1, "reason": "stopping"}
        )
        assert r.status_code == 200, r.text
    # w2 gets its own trial back, though a's number comes first ...
    assert (
        http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).json()["trial_id"]
        == (b["trial_id"])
    )
    # ... and a worker that ran neither takes the other rather than wait for w1.
    assert (
        http.post(f"{API}/studies/{sid}/next", json={"worker": "w3"}).json()["trial_id"]
        == (a["trial_id"])
    )


def test_an_on_the_spot_promotion_extends_the_attempt_s_recorded_range(http: TestClient) -> None:
    spec = study_spec(limits={"max_trials": 5, "max_concurrent": 1})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    for value in (0.9, 0.8):  # two trials pause at the first rung
        job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
        tid = job["trial_id"]
        ans = http.post(
            f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": value}
        ).json()
        assert ans["decision"] == "pause"
        http.post(f"{API}/trials/{tid}/pause", json={"attempt": 1, "checkpoint": None})
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
    assert job["kind"] == "new" and job["resource_to"] == 1
    ans = http.post(
        f"{API}/trials/{job['trial_id']}/reports", json={"attempt": 1, "step": 1, "value": 0.1}
    )
    assert ans.json()["decision"] == "continue" and ans.json()["resource_to"] == 3
    (attempt,) = http.get(f"{API}/trials/{job['trial_id']}").json()["attempt_log"]
    assert (attempt["resource_from"], attempt["resource_to"]) == (0, 3)
