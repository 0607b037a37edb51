"""Checkpoints worth keeping, on SQLite and PostgreSQL: a running trial's latest checkpoint
(``checkpoint_every``) that a retry resumes from, and a completed trial's model."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from tests.helpers import API, archive, checkpoint, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_sessionmaker

FIFO = {"type": "fifo", "min_resource": 1, "max_resource": 4, "reduction_factor": 3}


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    quiet = settings.model_copy(update={"checkpoint_sweep_every": 0})
    with TestClient(create_app(quiet)) as c:
        yield c


def start(http: TestClient, **execution: object) -> dict[str, Any]:
    spec = study_spec(
        scheduler=FIFO,
        limits={"max_trials": 4, "max_concurrent": 4},
        execution={"max_retries": 2, **execution},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    job: dict[str, Any] = http.post(f"{API}/studies/{sid}/next", json={"worker": "w1"}).json()
    return job


def report(
    http: TestClient, tid: int, attempt: int, step: float, value: float = 0.5
) -> dict[str, Any]:
    r = http.post(
        f"{API}/trials/{tid}/reports", json={"attempt": attempt, "step": step, "value": value}
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


# -- the latest checkpoint of a running trial ----------------------------------------------------
def test_a_retry_resumes_from_the_latest_checkpoint_and_keeps_the_reports_before_it(
    http: TestClient,
) -> None:
    job = start(http)
    tid = job["trial_id"]
    for step in (1, 2):
        report(http, tid, 1, step, 1 / step)
    at2 = checkpoint(http, tid, 1, "epoch 2")
    url = f"{API}/trials/{tid}/checkpoint"
    r = http.post(url, json={"attempt": 1, "checkpoint": at2, "step": 2})
    assert r.status_code == 200, r.text
    again = http.post(url, json={"attempt": 1, "checkpoint": at2, "step": 2})
    assert again.status_code == 200, "a repeated request is a no-op"
    # A step not reported yet would lose the reports between: refused, naming the field.
    ahead = http.post(url, json={"attempt": 1, "checkpoint": at2, "step": 3})
    assert ahead.status_code == 422 and "step" in ahead.json()["detail"]
    stale = http.post(url, json={"attempt": 7, "checkpoint": at2, "step": 2})
    assert stale.status_code == 409
    other = http.post(url, json={"attempt": 1, "checkpoint": "/etc", "step": 2})
    assert other.status_code == 422 and "checkpoint" in other.json()["detail"]
    report(http, tid, 1, 3, 1 / 3)

    # The worker dies: its attempt fails, and the retry starts where the checkpoint was saved.
    http.post(f"{API}/trials/{tid}/fail", json={"attempt": 1, "error": "killed"})
    sid = http.get(f"{API}/trials/{tid}").json()["study_id"]
    retry = http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).json()
    assert (retry["trial_id"], retry["kind"], retry["attempt"]) == (tid, "resume", 2)
    assert (retry["resource_from"], retry["checkpoint"]) == (2, at2)
    # The old attempt can no longer move it.
    assert http.post(url, json={"attempt": 1, "checkpoint": at2, "step": 2}).status_code == 409

    for step in (3, 4):
        report(http, tid, 2, step, 0.1 / step)
    trial = http.get(f"{API}/trials/{tid}").json()
    assert trial["state"] == "completed"
    steps = [(r["step"], r["attempt"]) for r in trial["reports"]]
    assert steps == [(1, 1), (2, 1), (3, 2), (4, 2)], "none lost, none twice"


def test_only_the_running_live_attempt_records_a_checkpoint(http: TestClient) -> None:
    job = start(http)
    tid = job["trial_id"]
    report(http, tid, 1, 1)
    loc = checkpoint(http, tid, 1, "epoch 1")
    http.post(f"{API}/trials/{tid}/complete", json={"attempt": 1})
    r = http.post(
        f"{API}/trials/{tid}/checkpoint", json={"attempt": 1, "checkpoint": loc, "step": 1}
    )
    assert r.status_code == 409 and "completed" in r.json()["detail"]
    missing = http.post(
        f"{API}/trials/999/checkpoint", json={"attempt": 1, "checkpoint": loc, "step": 1}
    )
    assert missing.status_code == 404


# -- the model of a completed trial --------------------------------------------------------------
def test_a_completed_trial_keeps_its_last_save_as_its_model(http: TestClient) -> None:
    job = start(http)
    tid = job["trial_id"]
    url = f"{API}/trials/{tid}/model"
    running = http.get(url)
    assert running.status_code == 404 and "running" in running.json()["detail"]
    assert running.headers["content-type"].startswith("application/problem+json")

    for step in (1, 2, 3, 4):
        report(http, tid, 1, step, 0.2)
    assert http.get(f"{API}/trials/{tid}").json()["state"] == "completed"
    none = http.get(url)
    assert none.status_code == 404 and "saved none" in none.json()["detail"]

    # The report completed it; the worker then uploads the last save and names it.
    model = archive(b"weights after epoch 4", "model.pt")
    put = http.put(f"{API}/trials/{tid}/checkpoint", params={"attempt": 1}, content=model)
    assert put.status_code == 201, put.text
    loc = put.json()["location"]
    done = http.post(f"{API}/trials/{tid}/complete", json={"attempt": 1, "checkpoint": loc})
    assert done.status_code == 200, done.text
    got = http.get(url)
    assert got.status_code == 200 and got.content == model
    assert got.headers["content-type"] == "application/gzip"
    assert f"trial-{tid}-model.tar.gz" in got.headers["content-disposition"]

    # A stale attempt's upload is refused, as for any upload.
    stale = http.put(f"{API}/trials/{tid}/checkpoint", params={"attempt": 2}, content=model)
    assert stale.status_code == 409
    assert http.get(f"{API}/trials/999/model").status_code == 404


def test_a_model_in_a_shared_directory_is_packed_on_the_fly(
    http: TestClient, settings: Settings
) -> None:
    job = start(http)
    tid, sid = job["trial_id"], http.get(f"{API}/trials/{job['trial_id']}").json()["study_id"]
    own = Path(settings.data_dir) / "checkpoints" / f"study-{sid}" / f"trial-{tid}"
    (own / "sub").mkdir(parents=True)
    (own / "state.pkl").write_bytes(b"pickled")
    (own / "sub" / "opt.bin").write_bytes(b"optimizer")
    (own / "escape").symlink_to("/etc/passwd")  # never followed, never sent
    done = http.post(
        f"{API}/trials/{tid}/complete", json={"attempt": 1, "value": 0.3, "checkpoint": str(own)}
    )
    assert done.status_code == 200, done.text
    got = http.get(f"{API}/trials/{tid}/model")
    assert got.status_code == 200, got.text
    with tarfile.open(fileobj=io.BytesIO(got.content), mode="r:gz") as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert set(names) == {"state.pkl", "sub", "sub/opt.bin"}
        member = tar.extractfile(names["sub/opt.bin"])
        assert member is not None and member.read() == b"optimizer"
    assert not list((Path(settings.data_dir) / "tmp").iterdir()), "the packed copy is removed"


def test_the_model_needs_a_read_token(settings: Settings) -> None:
    secure = settings.model_copy(update={"auth": True, "checkpoint_sweep_every": 0})
    engine = create_engine(secure.resolved_database_url())
    svc = TokenService(Toolkit(make_sessionmaker(engine), secure))
    admin = svc.create("admin", Scope.ADMIN).secret
    read = svc.create("read", Scope.READ).secret
    expired = svc.create("old", Scope.READ, expires_in=timedelta(seconds=-1)).secret
    engine.dispose()
    with TestClient(create_app(secure)) as c:
        a = {"Authorization": f"Bearer {admin}"}
        job = start_with(c, a)
        tid = job["trial_id"]
        loc = c.put(
            f"{API}/trials/{tid}/checkpoint",
            params={"attempt": 1},
            content=archive(b"w"),
            headers=a,
        ).json()["location"]
        c.post(
            f"{API}/trials/{tid}/complete",
            json={"attempt": 1, "value": 0.1, "checkpoint": loc},
            headers=a,
        )
        url = f"{API}/trials/{tid}/model"
        assert c.get(url).status_code == 401
        assert c.get(url, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
        assert c.get(url, headers={"Authorization": f"Bearer {read}"}).status_code == 200
        # Recording a checkpoint is a worker's call: a read token may not.
        r = c.post(
            f"{API}/trials/{tid}/checkpoint",
            json={"attempt": 1, "checkpoint": loc, "step": 1},
            headers={"Authorization": f"Bearer {read}"},
        )
        assert r.status_code == 403


def start_with(c: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    spec = study_spec(scheduler=FIFO, limits={"max_trials": 2, "max_concurrent": 2})
    sid = c.post(f"{API}/studies", json=spec, headers=headers).json()["id"]
    job: dict[str, Any] = c.post(f"{API}/studies/{sid}/next", json={}, headers=headers).json()
    return job
