"""Warm starts through HTTP on SQLite and PostgreSQL: a new study's model-based sampler starts
from an earlier study's observations (mapped into its space, not counted as its trials), and
a warm start it could not use is refused naming the field."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API
from tuneyard.api.app import create_app
from tuneyard.settings import Settings


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def loss(params: dict[str, Any]) -> float:
    return (params["x"] - 0.8) ** 2 + (params["y"] - 0.2) ** 2


def spec(sampler: dict[str, Any], trials: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "warm",
        "metric": "loss",
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "y": {"type": "float", "low": 0.0, "high": 1.0},
        },
        "sampler": sampler,
        "scheduler": {"type": "fifo", "max_resource": 1},
        "limits": {"max_trials": trials, "max_concurrent": 1},
        **extra,
    }


def run(http: TestClient, sid: int) -> list[float]:
    """Every trial in turn, one report at the end; the losses in trial order."""
    out = []
    while True:
        r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"})
        if r.status_code == 409:
            return out
        assert r.status_code == 200, r.text
        job = r.json()
        out.append(loss(job["params"]))
        rep = http.post(
            f"{API}/trials/{job['trial_id']}/reports",
            json={"attempt": job["attempt"], "step": 1, "value": out[-1]},
        )
        assert rep.status_code == 200, rep.text


@pytest.mark.parametrize("source", ["random", "gp"])
def test_a_warm_started_sampler_starts_where_the_earlier_study_left_off(
    http: TestClient, source: str
) -> None:
    # A random source leaves no sampler observations (its trials' values stand for them); a
    # model-based one does.
    earlier = http.post(f"{API}/studies", json=spec({"type": source, "seed": 2}, 30)).json()
    run(http, earlier["id"])
    tpe = {"type": "tpe", "seed": 5}
    cold = http.post(f"{API}/studies", json=spec(tpe, 6)).json()
    warm = http.post(f"{API}/studies", json=spec(tpe, 6, warm_start={"studies": [earlier["id"]]}))
    assert warm.status_code == 201, warm.text
    cold_losses = run(http, cold["id"])
    warm_losses = run(http, warm.json()["id"])
    # Cold, TPE's first trials are its random start-up; warm, they follow the 30 priors.
    assert statistics.median(warm_losses) < 0.5 * statistics.median(cold_losses), (
        warm_losses,
        cold_losses,
    )
    # The priors are not the new study's trials: its budget and counts are its own.
    view = http.get(f"{API}/studies/{warm.json()['id']}").json()
    assert sum(view["counts"].values()) == 6


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"warm_start": {"studies": [999_999]}}, "warm_start.studies[0]", "does not exist"),
        ({"sampler": {"type": "random"}}, "warm_start", "learns nothing"),
        ({"metric": "accuracy"}, "warm_start.studies[0]", "do not compare"),
        (
            {"space": {"z": {"type": "float", "low": 0, "high": 1}}},
            "warm_start.studies[0]",
            "shares no parameter",
        ),
        ({"warm_start": {"studies": [1, 1]}}, "studies", "named twice"),
    ],
)
def test_a_warm_start_the_study_cannot_use_is_refused_naming_the_field(
    http: TestClient, change: dict[str, Any], field: str, words: str
) -> None:
    earlier = http.post(f"{API}/studies", json=spec({"type": "random", "seed": 2}, 3)).json()
    body = {**spec({"type": "tpe"}, 3, warm_start={"studies": [earlier["id"]]}), **change}
    r = http.post(f"{API}/studies", json=body)
    assert r.status_code == 422, r.text
    assert field in r.text and words in r.text
