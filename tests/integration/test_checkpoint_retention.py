"""Checkpoint retention on SQLite and PostgreSQL: what can no longer be resumed (superseded,
or of a trial that stopped or failed) is deleted once ``checkpoint_retention`` has passed,
and a study keeps the models of its best ``limits.keep_models`` completed trials.

The service's clock starts at the real time, so the archives' file times and the clock agree;
moving the clock on is the time passing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API, checkpoint, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.retention import CheckpointSweep, SweepResult
from tuneyard.settings import Settings

HOUR = 3600.0
FIFO = {"type": "fifo", "min_resource": 1, "max_resource": 4, "reduction_factor": 3}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    kept = settings.model_copy(update={"checkpoint_retention": HOUR, "checkpoint_sweep_every": 0})
    with TestClient(create_app(kept, clock=clock)) as c:
        yield c


def sweep(http: TestClient, limit: int = 200) -> SweepResult:
    kit = http.app.state.kit  # type: ignore[attr-defined]
    return CheckpointSweep(kit).run(limit)


def archives(settings: Settings, tid: int) -> set[str]:
    root = Path(settings.data_dir) / "checkpoints-api"
    return {p.name.removesuffix(".tar.gz") for p in root.glob(f"study-*/trial-{tid}/*.tar.gz")}


def digest(location: str) -> str:
    return location.rsplit("/", 1)[1]


def study(http: TestClient, **over: Any) -> int:
    spec = study_spec(**{"scheduler": FIFO, **over})
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid: int = r.json()["id"]
    return sid


def next_job(http: TestClient, sid: int) -> dict[str, Any]:
    job: dict[str, Any] = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()
    return job


def report(http: TestClient, tid: int, step: float, value: float = 0.5, attempt: int = 1) -> None:
    r = http.post(
        f"{API}/trials/{tid}/reports", json={"attempt": attempt, "step": step, "value": value}
    )
    assert r.status_code == 200, r.text


def keep(http: TestClient, tid: int, step: float, attempt: int = 1) -> str:
    """Upload and record the trial's checkpoint at ``step``, as checkpoint_every does; the
    service's clock moves on a few seconds, past the archive's file time."""
    loc = checkpoint(http, tid, attempt, f"epoch {step}")
    http.app.state.kit.clock.advance(5)  # type: ignore[attr-defined]
    r = http.post(
        f"{API}/trials/{tid}/checkpoint",
        json={"attempt": attempt, "checkpoint": loc, "step": step},
    )
    assert r.status_code == 200, r.text
    return loc


def test_a_superseded_checkpoint_goes_after_the_retention_period(
    http: TestClient, settings: Settings, clock: FakeClock
) -> None:
    sid = study(http)
    tid = next_job(http, sid)["trial_id"]
    report(http, tid, 1)
    first = keep(http, tid, 1)
    clock.advance(60)
    report(http, tid, 2)
    second = keep(http, tid, 2)
    assert archives(settings, tid) == {digest(first), digest(second)}
    sweep(http)
    assert archives(settings, tid) == {digest(first), digest(second)}, "kept for an hour"
    clock.advance(HOUR + 1)
    done = sweep(http)
    assert done.deleted == 1
    assert archives(settings, tid) == {digest(second)}, "the one a retry needs stays"
    trial = http.get(f"{API}/trials/{tid}").json()
    assert (trial["checkpoint"], trial["resource_from"]) == (second, 2)


def test_with_no_retention_a_superseded_checkpoint_goes_at_the_next_upload(
    settings: Settings, clock: FakeClock
) -> None:
    at_once = settings.model_copy(update={"checkpoint_retention": 0, "checkpoint_sweep_every": 0})
    with TestClient(create_app(at_once, clock=clock)) as http:
        sid = study(http)
        tid = next_job(http, sid)["trial_id"]
        report(http, tid, 1)
        first = keep(http, tid, 1)
        report(http, tid, 2)
        second = keep(http, tid, 2)
        report(http, tid, 3)
        third = keep(http, tid, 3)
        # Each upload removes what the one before it superseded; the sweep the rest.
        assert digest(first) not in archives(settings, tid)
        sweep(http)
        assert archives(settings, tid) == {digest(third)}
        assert digest(second) not in archives(settings, tid)


def test_an_upload_no_call_named_waits_for_the_grace_period(
    http: TestClient, settings: Settings, clock: FakeClock
) -> None:
    """An archive uploaded but not (yet) named by /pause or a checkpoint call: its worker
    names it within seconds, or died in between. Not deleted under the caller's feet."""
    sid = study(http)
    tid = next_job(http, sid)["trial_id"]
    report(http, tid, 1)
    kept = keep(http, tid, 1)
    pending = checkpoint(http, tid, 1, "not named yet")
    clock.advance(HOUR + 1)
    sweep(http)
    assert archives(settings, tid) == {digest(kept), digest(pending)}
    # Nothing more is due for this trial, so the sweep no longer reads it.
    clock.advance(HOUR)
    assert sweep(http).trials == 0


def test_checkpoints_of_failed_and_stopped_trials_go_after_the_retention_period(
    http: TestClient, settings: Settings, clock: FakeClock
) -> None:
    fifo = study(http, execution={"max_retries": 0})
    failing = next_job(http, fifo)["trial_id"]
    report(http, failing, 1, 0.9)
    keep(http, failing, 1)
    http.post(f"{API}/trials/{failing}/fail", json={"attempt": 1, "error": "CUDA out of memory"})
    assert http.get(f"{API}/trials/{failing}").json()["state"] == "failed"

    asha = {"type": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3}
    promoting = study(http, scheduler={**asha, "mode": "promotion"})
    paused = next_job(http, promoting)["trial_id"]
    r = http.post(
        f"{API}/trials/{paused}/reports", json={"attempt": 1, "step": 1, "value": 0.8}
    ).json()
    assert r["decision"] == "pause", r
    loc = checkpoint(http, paused, 1, "rung 0")
    assert (
        http.post(
            f"{API}/trials/{paused}/pause", json={"attempt": 1, "checkpoint": loc}
        ).status_code
        == 200
    )
    # Stopping the study ends its paused trials: none can be resumed any more.
    assert http.patch(f"{API}/studies/{promoting}", json={"state": "stopped"}).status_code == 200
    assert http.get(f"{API}/trials/{paused}").json()["state"] == "stopped"
    clock.advance(5)

    sweep(http)
    assert archives(settings, failing) and archives(settings, paused), "kept for an hour"
    clock.advance(HOUR + 1)
    done = sweep(http)
    assert done.deleted == 2
    assert not archives(settings, failing) and not archives(settings, paused)
    for tid in (failing, paused):
        trial = http.get(f"{API}/trials/{tid}").json()
        assert trial["state"] in ("failed", "stopped") and trial["checkpoint"] is None
    assert sweep(http).trials == 0, "nothing left to look at"


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_a_study_keeps_the_models_of_its_best_trials(
    http: TestClient, settings: Settings, direction: str
) -> None:
    sid = study(
        http,
        direction=direction,
        limits={"max_trials": 5, "max_concurrent": 5, "keep_models": 2},
    )
    values = {}
    for value in (0.4, 0.1, 0.3, 0.2, 0.5):
        tid = next_job(http, sid)["trial_id"]
        loc = checkpoint(http, tid, 1, f"model {value}")
        r = http.post(
            f"{API}/trials/{tid}/complete",
            json={"attempt": 1, "value": value, "checkpoint": loc},
        )
        assert r.status_code == 200, r.text
        values[tid] = value
    done = sweep(http)
    assert done.models_dropped == 3
    best = sorted(values, key=values.get, reverse=direction == "maximize")[:2]  # type: ignore[arg-type]
    for tid, value in values.items():
        got = http.get(f"{API}/trials/{tid}/model")
        if tid in best:
            assert got.status_code == 200, (value, got.text)
            assert archives(settings, tid)
        else:
            assert got.status_code == 404 and "keep_models" in got.json()["detail"], value
            assert not archives(settings, tid)


def test_a_better_trial_pushes_the_worst_kept_model_out(
    http: TestClient, settings: Settings
) -> None:
    sid = study(http, limits={"max_trials": 3, "max_concurrent": 1, "keep_models": 1})
    first = next_job(http, sid)["trial_id"]
    loc = checkpoint(http, first, 1, "first")
    http.post(
        f"{API}/trials/{first}/complete", json={"attempt": 1, "value": 0.5, "checkpoint": loc}
    )
    sweep(http)
    assert http.get(f"{API}/trials/{first}/model").status_code == 200
    second = next_job(http, sid)["trial_id"]
    for step in (1, 2, 3, 4):
        report(http, second, step, 0.4 - step / 100)  # the last report completes it
    loc = checkpoint(http, second, 1, "second")
    http.post(f"{API}/trials/{second}/complete", json={"attempt": 1, "checkpoint": loc})
    sweep(http)
    assert http.get(f"{API}/trials/{second}/model").status_code == 200
    assert http.get(f"{API}/trials/{first}/model").status_code == 404
    assert not archives(settings, first)


def test_a_sweep_is_bounded(http: TestClient, settings: Settings, clock: FakeClock) -> None:
    sid = study(http, limits={"max_trials": 3, "max_concurrent": 3}, execution={"max_retries": 0})
    tids = []
    for _ in range(3):
        tid = next_job(http, sid)["trial_id"]
        report(http, tid, 1)
        keep(http, tid, 1)
        http.post(f"{API}/trials/{tid}/fail", json={"attempt": 1, "error": "boom"})
        tids.append(tid)
    clock.advance(HOUR + 1)
    assert sweep(http, limit=2).trials == 2
    assert sum(1 for t in tids if archives(settings, t)) == 1
    assert sweep(http, limit=2).trials == 1
    assert not any(archives(settings, t) for t in tids)


def test_deleting_a_study_deletes_its_archives(http: TestClient, settings: Settings) -> None:
    sid = study(http)
    tid = next_job(http, sid)["trial_id"]
    report(http, tid, 1)
    keep(http, tid, 1)
    other = study(http)
    kept = next_job(http, other)["trial_id"]
    report(http, kept, 1)
    keep(http, kept, 1)
    assert http.delete(f"{API}/studies/{sid}").status_code == 204
    assert not (Path(settings.data_dir) / "checkpoints-api" / f"study-{sid}").exists()
    assert archives(settings, kept), "another study's are untouched"
