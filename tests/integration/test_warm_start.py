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


def run(http: TestClient, sid: int, most: int | None = None) -> list[float]:
    """Every trial in turn (or the first ``most``), one report at the end; the losses in trial
    order."""
    out: list[float] = []
    while most is None or len(out) < most:
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
    return out


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
    # The priors are not the new study's trials: its budget and counts are its own, in the
    # API and on the dashboard.
    wid = warm.json()["id"]
    view = http.get(f"{API}/studies/{wid}").json()
    assert sum(view["counts"].values()) == 6
    card = http.get(f"{API}/dashboard/studies/{wid}").json()
    assert card["trials_started"] == 6 and sum(card["counts"].values()) == 6
    assert card["budget"]["trials"]["used"] == 6
    history = http.get(f"{API}/dashboard/studies/{wid}/history").json()
    assert history["total"] == 6 and all(p["number"] >= 0 for p in history["points"])
    priors = http.get(f"{API}/studies/{wid}/priors").json()
    assert priors["read"] and priors["total"] == priors["trials"] == 30


def by_number(http: TestClient, sid: int) -> dict[int, float]:
    trials = http.get(f"{API}/studies/{sid}/trials", params={"limit": 500}).json()["items"]
    return {t["number"]: t["value"] for t in trials}


def test_the_priors_a_study_was_given_are_listed_with_their_sources(http: TestClient) -> None:
    tpe = {"type": "tpe", "seed": 3, "n_startup": 4}
    # A model-based source records observations; a random one leaves its trials' values.
    a = http.post(f"{API}/studies", json={**spec(tpe, 12), "name": "first"}).json()["id"]
    b = http.post(f"{API}/studies", json={**spec({"type": "random"}, 5), "name": "rnd"}).json()
    run(http, a, most=8)  # a is still running: 4 trials to go
    run(http, b["id"])
    sid = http.post(f"{API}/studies", json=spec(tpe, 3, warm_start={"studies": [a, b["id"]]}))
    sid = sid.json()["id"]

    before = http.get(f"{API}/studies/{sid}/priors").json()
    assert before["read"] is False  # no suggestion yet: what the sampler would read now
    assert before["total"] == 13

    run(http, sid)
    got = http.get(f"{API}/studies/{sid}/priors").json()
    assert got["read"] is True
    assert got["total"] == got["trials"] == 13
    assert [(x["study_id"], x["name"], x["observations"]) for x in got["sources"]] == [
        (a, "first", 8),
        (b["id"], "rnd", 5),
    ]
    # Numbered as the sampler numbers them, each with its source trial's value and the
    # configuration it ran.
    assert sorted(p["number"] for p in got["priors"]) == list(range(-13, 0))
    values = {a: by_number(http, a), b["id"]: by_number(http, b["id"])}
    for p in got["priors"]:
        assert p["value"] == pytest.approx(values[p["study_id"]][p["trial_number"]])
        assert p["value"] == pytest.approx(loss(p["params"])) and p["resource"] == 1.0

    # What the source learns after the study started is not what this study was given...
    run(http, a)
    assert http.get(f"{API}/studies/{sid}/priors").json()["total"] == 13
    # ...while a study started now gets it.
    later = http.post(f"{API}/studies", json=spec(tpe, 1, warm_start={"studies": [a]}))
    assert http.get(f"{API}/studies/{later.json()['id']}/priors").json()["total"] == 12

    # A bounded list: the best ones, in the sampler's order; the totals stay whole.
    top = http.get(f"{API}/studies/{sid}/priors", params={"limit": 3}).json()
    assert top["total"] == 13 and len(top["priors"]) == 3
    best = sorted(p["value"] for p in got["priors"])[:3]
    assert sorted(p["value"] for p in top["priors"]) == pytest.approx(best)
    numbers = [p["number"] for p in top["priors"]]
    assert numbers == sorted(numbers, reverse=True)


def test_priors_are_in_the_metric_units_of_a_maximised_study(http: TestClient) -> None:
    body = {**spec({"type": "random", "seed": 1}, 4), "direction": "maximize"}
    src = http.post(f"{API}/studies", json=body).json()["id"]
    run(http, src)
    warm = {**body, "sampler": {"type": "tpe"}, "warm_start": {"studies": [src]}}
    sid = http.post(f"{API}/studies", json=warm).json()["id"]
    got = http.get(f"{API}/studies/{sid}/priors").json()
    source = by_number(http, src)
    assert sorted(p["value"] for p in got["priors"]) == pytest.approx(sorted(source.values()))


def test_a_study_without_warm_start_has_no_priors_and_a_missing_one_is_404(
    http: TestClient,
) -> None:
    sid = http.post(f"{API}/studies", json=spec({"type": "tpe"}, 2)).json()["id"]
    got = http.get(f"{API}/studies/{sid}/priors").json()
    assert got == {
        "study_id": sid,
        "read": False,
        "total": 0,
        "trials": 0,
        "sources": [],
        "priors": [],
    }
    assert http.get(f"{API}/studies/999999/priors").status_code == 404
    bad = http.get(f"{API}/studies/{sid}/priors", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.text


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
