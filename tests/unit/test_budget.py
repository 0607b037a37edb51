"""GPU-time budgets, the pure parts: durations in a definition, a study's usage and the budget
that stops new trials, the slot's GPUs as a worker names them, and the CLI's budget lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.fake_api import FakeApi, run, study_json
from tuneyard.service.budget import attempt_usage, new_trial_barrier, usage
from tuneyard.spec import LimitsSpec
from tuneyard.spec.durations import format_duration, parse_duration
from tuneyard.store.counters import Counts
from tuneyard.store.models import Study
from tuneyard.worker.jobs import GPUS_ENV, slot_gpus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (3600, 3600.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("45s", 45.0),
        ("90m", 5400.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2d", 172_800.0),
        ("1d2h3m4s", 93_784.0),
        (" 8H ", 28_800.0),
    ],
)
def test_durations_parse_to_seconds(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("soon", "not a duration"),
        ("1m1h", "in that order"),
        ("", "not a duration"),
        ("10y", "not a duration"),
        ("h", "not a duration"),
        (0, "more than 0"),
        ("-5", "more than 0"),
        ("nan", "more than 0"),
        (True, "number of seconds"),
        ([60], "number of seconds"),
    ],
)
def test_bad_durations_say_what_is_accepted(text: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.5, "0.5s"), (45, "45s"), (3600, "1h"), (3661, "1h1m1s"), (5400, "1h30m"), (90_000, "1d1h")],
)
def test_durations_format_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def study(trials_started: int = 3) -> Study:
    return Study(trials_started=trials_started, created_at=T0, finished_at=None)


def spent(gpu_seconds: float = 0.0, worker_seconds: float = 0.0) -> Counts:
    return Counts(0, gpu_seconds, worker_seconds)


def test_ended_attempts_add_gpu_time_and_worker_time() -> None:
    total = Counts()
    for wall, gpus in [(1800.0, 2), (600.0, 0), (-5.0, 4)]:
        # Half an hour on two GPUs, ten minutes on a CPU slot, and a clock that went back,
        # which counts nothing.
        used = attempt_usage(wall, gpus)
        total.gpu_seconds += used.gpu_seconds
        total.worker_seconds += used.worker_seconds
    assert total.gpu_seconds == 3600.0 and total.worker_seconds == 2400.0
    u = usage(study(), total, LimitsSpec(max_gpu_hours=4), 10, T0 + timedelta(hours=2))
    assert (u.gpu_hours.used, u.gpu_hours.limit) == (1.0, 4.0)
    assert u.worker_hours == pytest.approx(2 / 3)
    assert (u.wall_seconds.used, u.wall_seconds.limit) == (7200.0, None)
    assert u.barrier is None


def test_the_first_budget_spent_is_the_barrier_with_its_reason() -> None:
    limits = LimitsSpec(max_gpu_hours=2, max_wall_time="1h")
    later = T0 + timedelta(minutes=30)
    assert new_trial_barrier(study(), lambda: spent(7199), limits, 10, later) is None
    gpu = new_trial_barrier(study(), lambda: spent(2.01 * 3600), limits, 10, later)
    assert gpu is not None and gpu.kind == "gpu_hours"
    assert gpu.reason == "the GPU-hour budget is spent: 2.01 of 2" == gpu.ending
    wall = new_trial_barrier(study(), spent, limits, 10, T0 + timedelta(seconds=3600))
    assert wall is not None and wall.reason == "the wall-time budget is spent: 1h of 1h"
    trials = new_trial_barrier(study(10), lambda: spent(1e9), limits, 10, later)
    assert trials is not None and trials.kind == "trials"
    assert trials.ending == "all trials finished"
    # No limit but the trials': decided without building the usage.
    unread = lambda: pytest.fail("the counters were read")  # noqa: E731
    assert new_trial_barrier(study(), unread, LimitsSpec(), 10, later) is None


def test_a_finished_studys_wall_time_stops_at_its_end() -> None:
    st = study()
    st.finished_at = T0 + timedelta(minutes=5)
    u = usage(st, spent(), LimitsSpec(max_wall_time=600), 10, T0 + timedelta(days=3))
    assert u.wall_seconds.used == 300.0 and u.barrier is None


def test_the_budget_shown_is_the_one_closest_to_being_spent() -> None:
    now = T0 + timedelta(minutes=30)
    plain = usage(study(4), spent(), LimitsSpec(max_trials=10), 10, now)
    assert plain.binding() == ("trials", plain.trials)
    gpu = usage(study(), spent(3 * 3600), LimitsSpec(max_gpu_hours=4), 10, now)
    assert gpu.binding()[0] == "GPU-hours" and gpu.binding()[1].used == 3.0
    wall = usage(study(), spent(), LimitsSpec(max_gpu_hours=4, max_wall_time="40m"), 10, now)
    assert wall.binding()[0] == "seconds"
    assert wall.as_dict()["wall_seconds"] == {"used": 1800.0, "limit": 2400.0}


def test_a_slot_names_the_gpus_its_worker_gave_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GPUS_ENV, raising=False)
    assert slot_gpus() == []
    gpus = [{"index": "2", "name": "NVIDIA H100", "uuid": "GPU-1", "memory_mib": 81559}]
    monkeypatch.setenv(GPUS_ENV, json.dumps(gpus))
    assert slot_gpus() == [{"index": "2", "name": "NVIDIA H100", "uuid": "GPU-1"}]
    monkeypatch.setenv(GPUS_ENV, json.dumps([{"index": 0, "name": "x" * 300, "uuid": None}]))
    assert slot_gpus() == [{"index": "0", "name": "x" * 200}]
    for junk in ("not json", '{"index": "0"}', '[{"name": "no index"}]', "[3]"):
        monkeypatch.setenv(GPUS_ENV, junk)
        assert slot_gpus() == []


def test_study_show_prints_the_budget_and_the_queue_warning(api: FakeApi) -> None:
    body = study_json(
        usage={
            "trials": {"used": 5, "limit": 100},
            "gpu_hours": {"used": 1.5, "limit": 2},
            "wall_seconds": {"used": 3900, "limit": 28_800},
            "worker_hours": 3.25,
            "spent": None,
        },
        queue_warning="no live worker serves queue 'gpu'",
    )
    api.on("GET", "/studies/1", httpx.Response(200, json=body))
    r = run("study", "show", "1")
    assert r.exit_code == 0, r.output
    assert "GPU-hours 1.5 of 2 (75%); wall time 1h5m of 8h (14%); worker-hours 3.25" in r.output
    assert "study 1: no live worker serves queue 'gpu'" in r.stderr
    spent = {**body["usage"], "spent": "the GPU-hour budget is spent: 2.01 of 2"}
    api.on("GET", "/studies/1", httpx.Response(200, json={**body, "usage": spent}))
    r = run("study", "show", "1")
    assert "the GPU-hour budget is spent: 2.01 of 2: no new trial starts" in r.output


def test_study_ls_warns_about_studies_no_worker_serves(api: FakeApi) -> None:
    page = {
        "items": [
            study_json(2, queue_warning="no live worker serves queue 'gpu'"),
            study_json(1),
        ],
        "next_cursor": None,
    }
    api.on("GET", "/studies", httpx.Response(200, json=page))
    r = run("study", "ls")
    assert r.exit_code == 0, r.output
    assert "study 2: no live worker serves queue 'gpu'" in r.stderr
    assert "study 1:" not in r.stderr
