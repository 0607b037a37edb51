"""Budgets in GPU time: attempts record the GPUs their worker names and their wall time, the
study counts GPU- and worker-hours as its attempts end, ``limits.max_gpu_hours`` and
``limits.max_wall_time`` stop new trials (running ones finish, then the study ends with the
budget as its reason), the dashboard shows each budget used of its limit and the best value
against GPU-hours, and a study no live worker serves is flagged. On a fake clock, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeClock
from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

DASH = f"{API}/dashboard"
TWO_GPUS = [{"index": "0", "name": "NVIDIA H100"}, {"index": "1", "name": "NVIDIA H100"}]
ONE_GPU = [{"index": "3", "name": "NVIDIA A100", "uuid": "GPU-abc"}]


# Trials run for hours of the fake clock here, with no heartbeat: their leases outlast that.
LEASE = 6 * 3600


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path, lease_seconds=LEASE, auth=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def http(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def spec(**limits: Any) -> dict[str, Any]:
    """Plain trials of one job each (FIFO to 1 epoch), four at a time."""
    return study_spec(
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 1},
        limits={"max_trials": 10, "max_concurrent": 4, **limits},
    )


def create(http: TestClient, body: dict[str, Any]) -> int:
    r = http.post(f"{API}/studies", json=body)
    assert r.status_code == 201, r.text
    sid: int = r.json()["id"]
    return sid


def take(http: TestClient, sid: int, gpus: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"worker": "host/gpu-0"}
    if gpus is not None:
        body["gpus"] = gpus
    r = http.post(f"{API}/studies/{sid}/next", json=body)
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def complete(http: TestClient, job: dict[str, Any], value: float = 0.5) -> None:
    r = http.post(
        f"{API}/trials/{job['trial_id']}/complete", json={"attempt": job["attempt"], "value": value}
    )
    assert r.status_code == 200, r.text


def usage(http: TestClient, sid: int) -> dict[str, Any]:
    u: dict[str, Any] = http.get(f"{API}/studies/{sid}").json()["usage"]
    return u


def test_attempts_record_their_gpus_and_wall_time_and_the_study_sums_them(
    http: TestClient, clock: FakeClock
) -> None:
    sid = create(http, spec())
    on_two = take(http, sid, TWO_GPUS)
    on_cpu = take(http, sid)
    clock.advance(1800)
    complete(http, on_two)
    assert usage(http, sid)["gpu_hours"]["used"] == pytest.approx(1.0)  # 2 GPUs x 30 min
    clock.advance(900)
    # A CPU attempt that fails still took its worker's time, and no GPU's.
    r = http.post(
        f"{API}/trials/{on_cpu['trial_id']}/fail",
        json={"attempt": on_cpu["attempt"], "error": "RuntimeError: boom"},
    )
    assert r.status_code == 200, r.text

    attempt = http.get(f"{API}/trials/{on_two['trial_id']}").json()["attempt_log"][0]
    assert [(g["index"], g["name"]) for g in attempt["gpus"]] == [
        ("0", "NVIDIA H100"),
        ("1", "NVIDIA H100"),
    ]
    assert attempt["wall_seconds"] == pytest.approx(1800)
    cpu = http.get(f"{API}/trials/{on_cpu['trial_id']}").json()["attempt_log"][0]
    assert cpu["gpus"] == [] and cpu["wall_seconds"] == pytest.approx(2700)

    u = usage(http, sid)
    assert u["gpu_hours"] == {"used": pytest.approx(1.0), "limit": None}
    assert u["worker_hours"] == pytest.approx(0.5 + 0.75)
    assert u["wall_seconds"] == {"used": pytest.approx(2700), "limit": None}
    assert u["trials"] == {"used": 2, "limit": 10} and u["spent"] is None
    # A repeated end of the same attempt counts nothing twice.
    complete(http, on_two)
    assert usage(http, sid)["gpu_hours"]["used"] == pytest.approx(1.0)


def test_gpu_hour_budget_stops_new_trials_and_lets_running_ones_finish(
    http: TestClient, clock: FakeClock
) -> None:
    sid = create(http, spec(max_gpu_hours=1.0))
    first, second = take(http, sid, ONE_GPU), take(http, sid, ONE_GPU)
    clock.advance(1800)
    complete(http, first)  # 0.5 GPU-hours of 1: a new trial may start
    third = take(http, sid, ONE_GPU)
    assert third["number"] == 2
    clock.advance(1800)
    complete(http, second, 0.3)  # 0.5 + 1.0: spent
    r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w", "gpus": ONE_GPU})
    assert r.status_code == 204, "no new trial once the GPU-hours are spent"
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["state"] == "running" and study["counts"]["running"] == 1
    assert study["usage"]["spent"] == "the GPU-hour budget is spent: 1.5 of 1"
    clock.advance(360)
    complete(http, third, 0.4)  # the running trial finishes; then the study ends
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["state"] == "completed" and study["trials_started"] == 3
    assert study["usage"]["gpu_hours"] == {"used": pytest.approx(2.1), "limit": 1.0}
    assert study["best"]["value"] == 0.3
    card = http.get(f"{DASH}/studies/{sid}").json()
    assert card["budget"]["unit"] == "GPU-hours"
    assert (card["budget"]["used"], card["budget"]["total"]) == (pytest.approx(2.1), 1.0)
    assert card["budget"]["spent"] == "the GPU-hour budget is spent: 2.1 of 1"
    assert http.post(f"{API}/studies/{sid}/next").status_code == 409


def test_study_ends_with_the_budget_as_its_reason(
    http: TestClient, clock: FakeClock, settings: Settings
) -> None:
    from tuneyard.service.context import Toolkit
    from tuneyard.store.db import make_engine, make_sessionmaker
    from tuneyard.store.models import Study

    sid = create(http, spec(max_gpu_hours=0.5))
    job = take(http, sid, TWO_GPUS)
    clock.advance(900)
    complete(http, job)
    assert http.post(f"{API}/studies/{sid}/next").status_code == 409
    engine = make_engine(settings.database_url)
    try:
        kit = Toolkit(make_sessionmaker(engine), settings)
        with kit.transaction() as s:
            study = s.get(Study, sid)
            assert study is not None
            assert study.state == "completed"
            assert study.reason == "the GPU-hour budget is spent: 0.5 of 0.5"
    finally:
        engine.dispose()


def test_wall_time_budget_stops_new_trials(http: TestClient, clock: FakeClock) -> None:
    sid = create(http, spec(max_wall_time="1h"))
    running = take(http, sid)
    clock.advance(3000)
    second = take(http, sid)  # 50 minutes in: still room
    assert second["number"] == 1
    clock.advance(601)
    assert http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).status_code == 204
    u = usage(http, sid)
    assert u["wall_seconds"] == {"used": pytest.approx(3601), "limit": 3600}
    assert u["spent"] == "the wall-time budget is spent: 1h1s of 1h"
    assert u["gpu_hours"]["used"] == 0 and u["worker_hours"] == 0  # nothing ended yet
    complete(http, running)
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "running", "a trial still runs"
    clock.advance(60)
    complete(http, second)
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["state"] == "completed" and study["trials_started"] == 2
    assert study["usage"]["worker_hours"] == pytest.approx((3601 + 661) / 3600)
    card = http.get(f"{DASH}/studies/{sid}").json()
    assert card["budget"]["unit"] == "seconds" and card["budget"]["total"] == 3600
    # Wall time stops with the study.
    assert card["budget"]["wall_seconds"]["used"] == pytest.approx(3661)
    clock.advance(5000)
    assert usage(http, sid)["wall_seconds"]["used"] == pytest.approx(3661)


def test_best_value_against_gpu_hours(http: TestClient, clock: FakeClock) -> None:
    sid = create(http, spec())
    assert http.get(f"{DASH}/studies/{sid}/budget").json() == {
        "direction": "minimize",
        "points": [],
        "gpu_hours": 0.0,
        "worker_hours": 0.0,
    }
    # Trials end one after another, each after an hour on two GPUs: 2, 4, 6, 8 GPU-hours.
    values = [0.8, 0.9, 0.5, 0.6]
    jobs = []
    for v in values:
        job = take(http, sid, TWO_GPUS)
        clock.advance(3600)
        complete(http, job, v)
        jobs.append(job)
    curve = http.get(f"{DASH}/studies/{sid}/budget").json()
    assert [(p["gpu_hours"], p["value"], p["number"]) for p in curve["points"]] == [
        (pytest.approx(2.0), 0.8, 0),
        (pytest.approx(6.0), 0.5, 2),
    ]
    assert curve["points"][1]["trial_id"] == jobs[2]["trial_id"]
    assert curve["gpu_hours"] == pytest.approx(8.0) and curve["worker_hours"] == pytest.approx(4.0)


def test_a_study_no_live_worker_serves_is_flagged(http: TestClient, clock: FakeClock) -> None:
    body = study_spec(execution={"entrypoint": "examples.mlp_digits:train", "queue": "gpu"})
    sid = create(http, body)
    ask_tell = create(http, study_spec(name="ask-tell"))
    warning = "no live worker serves queue 'gpu'"
    assert http.get(f"{API}/studies/{sid}").json()["queue_warning"] == warning
    assert http.get(f"{DASH}/studies/{sid}").json()["queue_warning"] == warning
    listed = {s["id"]: s["queue_warning"] for s in http.get(f"{API}/studies").json()["items"]}
    assert listed == {sid: warning, ask_tell: None}, "ask/tell studies bring their own workers"

    # A worker on another queue does not help; one on the study's queue does, while it beats.
    for name, queue in (("h/cpu", "default"), ("h/gpu-0", "gpu")):
        r = http.post(
            f"{API}/workers", json={"name": name, "host": "h", "queue": queue, "gpus": ONE_GPU}
        )
        assert r.status_code == 201, r.text
    assert http.get(f"{API}/studies/{sid}").json()["queue_warning"] is None
    cards = http.get(f"{DASH}/studies").json()["items"]
    assert [c["queue_warning"] for c in cards if c["id"] == sid] == [None]
    clock.advance(LEASE + 1)  # silent for longer than a lease: lost
    assert http.get(f"{API}/studies/{sid}").json()["queue_warning"] == warning
    # A study that runs a trial, or that is paused, waits for no worker.
    take(http, sid)
    assert http.get(f"{API}/studies/{sid}").json()["queue_warning"] is None


def test_a_study_whose_trials_need_more_gpus_than_any_live_slot_is_flagged(
    http: TestClient, clock: FakeClock
) -> None:
    def needing(gpus: int, name: str) -> int:
        execution = {"command": ["python", "train.py"], "queue": "gpu", "gpus": gpus}
        return create(http, study_spec(name=name, execution=execution))

    def warnings() -> dict[int, str | None]:
        items = http.get(f"{API}/studies").json()["items"]
        return {s["id"]: s["queue_warning"] for s in items}

    four, two, one = needing(4, "four"), needing(2, "two"), needing(1, "one")
    nobody = "no live worker serves queue 'gpu'"
    assert warnings() == {four: nobody, two: nobody, one: nobody}

    def register(name: str, gpus: list[dict[str, str]]) -> None:
        r = http.post(
            f"{API}/workers", json={"name": name, "host": "h", "queue": "gpu", "gpus": gpus}
        )
        assert r.status_code == 201, r.text

    # A CPU slot serves one-GPU trials (as before GPU counts), not those needing more.
    register("h/slot-0", [])
    short = "no live worker on queue 'gpu' has {} GPUs per slot for its trials (execution.gpus); "
    assert warnings() == {
        four: short.format(4) + "the most is 0: start one with --gpus-per-slot 4",
        two: short.format(2) + "the most is 0: start one with --gpus-per-slot 2",
        one: None,
    }
    register("h/gpu-0+1", TWO_GPUS)
    expected = short.format(4) + "the most is 2: start one with --gpus-per-slot 4"
    assert warnings() == {four: expected, two: None, one: None}
    assert http.get(f"{API}/studies/{four}").json()["queue_warning"] == expected
    assert http.get(f"{DASH}/studies/{four}").json()["queue_warning"] == expected
    four_gpus = [{"index": str(i), "name": "NVIDIA H100"} for i in range(4, 8)]
    register("h/gpu-4+5+6+7", four_gpus)
    assert warnings() == {four: None, two: None, one: None}
    clock.advance(LEASE + 1)  # every slot silent for longer than a lease: lost
    assert warnings() == {four: nobody, two: nobody, one: nobody}


@pytest.mark.parametrize(
    ("limits", "field", "text"),
    [
        ({"max_wall_time": "soon"}, "max_wall_time", "not a duration"),
        ({"max_wall_time": "1m1h"}, "max_wall_time", "in that order"),
        ({"max_wall_time": 0}, "max_wall_time", "more than 0"),
        ({"max_wall_time": "400d"}, "max_wall_time", "at most"),
        ({"max_gpu_hours": 0}, "max_gpu_hours", "greater than 0"),
        ({"max_gpu_hours": "lots"}, "max_gpu_hours", "number"),
    ],
)
def test_bad_budget_limits_are_422_naming_the_field(
    http: TestClient, limits: dict[str, Any], field: str, text: str
) -> None:
    r = http.post(f"{API}/studies", json=spec(**limits))
    assert r.status_code == 422, r.text
    assert field in r.text and text in r.text
    assert http.get(f"{API}/studies").json()["items"] == []


def test_budget_limits_are_stored_in_seconds_and_hours(http: TestClient) -> None:
    sid = create(http, spec(max_wall_time="1h30m", max_gpu_hours=12.5))
    limits = http.get(f"{API}/studies/{sid}").json()["spec"]["limits"]
    assert (limits["max_wall_time"], limits["max_gpu_hours"]) == (5400, 12.5)
    assert usage(http, sid)["wall_seconds"]["limit"] == 5400


def test_the_trials_budget_of_a_grid_is_its_size(http: TestClient) -> None:
    grid = spec()
    grid["sampler"] = {"type": "grid", "seed": 1}
    grid["space"] = {
        "a": {"type": "categorical", "choices": [1, 2]},
        "b": {"type": "int", "low": 0, "high": 1},
    }
    sid = create(http, grid)
    plain = create(http, spec())
    assert usage(http, sid)["trials"] == {"used": 0, "limit": 4}  # 4 points, max_trials 10
    listed = {s["id"]: s["usage"]["trials"] for s in http.get(f"{API}/studies").json()["items"]}
    assert listed == {sid: {"used": 0, "limit": 4}, plain: {"used": 0, "limit": 10}}
