"""Model-based samplers inside the service, on SQLite and PostgreSQL: observations recorded at
rungs and at the end of trials, state kept in the database so that API processes taking
turns on one study suggest exactly what a single process would."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.helpers import API, curve, run_job, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings
from tuneyard.store.models import Observation, SamplerState, Trial


def spec(kind: str, trials: int = 16) -> dict[str, Any]:
    return study_spec(
        sampler={"type": kind, "seed": 5, "n_startup": 4} if kind != "random" else {"type": kind},
        limits={"max_trials": trials, "max_concurrent": 1},
    )


@pytest.fixture
def apps(settings: Settings) -> Iterator[list[TestClient]]:
    """Two API processes on one database (separate engines and sampler caches)."""
    with ExitStack() as stack:
        yield [stack.enter_context(TestClient(create_app(settings))) for _ in range(2)]


def play(clients: list[TestClient], sid: int) -> list[dict[str, Any]]:
    """A sequential worker asking the given clients in turn; returns the configurations."""
    configs = []
    for i in range(1000):
        http = clients[i % len(clients)]
        r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"})
        if r.status_code == 409:
            return configs
        assert r.status_code == 200, r.text
        job = r.json()
        if job["kind"] == "new":
            configs.append(job["params"])
        run_job(http, job, curve)
    raise AssertionError("the study did not finish")


@pytest.mark.parametrize("kind", ["tpe", "cmaes", "mfgp"])
def test_processes_taking_turns_suggest_what_one_process_would(
    apps: list[TestClient], kind: str
) -> None:
    one, two = apps
    alone = one.post(f"{API}/studies", json=spec(kind)).json()["id"]
    shared = one.post(f"{API}/studies", json=spec(kind)).json()["id"]
    assert play([one], alone) == play([one, two], shared)


def test_observations_are_recorded_at_rungs_and_at_the_end(
    apps: list[TestClient], database_url: str
) -> None:
    http = apps[0]
    sid = http.post(f"{API}/studies", json=spec("tpe")).json()["id"]
    play([http], sid)
    engine = create_engine(database_url)
    with Session(engine) as s:
        rows = s.scalars(select(Observation).where(Observation.study_id == sid)).all()
        trials = {t.id: t for t in s.scalars(select(Trial).where(Trial.study_id == sid))}
        state = s.get(SamplerState, sid)
    engine.dispose()
    assert {r.resource for r in rows} <= {1.0, 3.0, 9.0, 27.0}
    for t in trials.values():
        mine = sorted(r.resource for r in rows if r.trial_id == t.id)
        assert mine, f"trial {t.number} informs the sampler nothing"
        assert mine[-1] == t.resource, "the trial's last result is observed"
    # Saved when enough observations came in; a process loading it reads the rest.
    assert state is not None and 1 <= state.revision < len(trials)
    assert 0 <= state.watermark <= max(r.id for r in rows)


def test_a_random_search_records_no_observations(apps: list[TestClient], database_url: str) -> None:
    http = apps[0]
    sid = http.post(f"{API}/studies", json=spec("random", 6)).json()["id"]
    play([http], sid)
    engine = create_engine(database_url)
    with Session(engine) as s:
        assert s.scalars(select(Observation)).first() is None
        assert s.get(SamplerState, sid) is None
    engine.dispose()


def test_a_study_that_names_no_sampler_runs_tpe(apps: list[TestClient], database_url: str) -> None:
    http = apps[0]
    body = study_spec(limits={"max_trials": 14, "max_concurrent": 1})
    del body["sampler"]
    r = http.post(f"{API}/studies", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert http.get(f"{API}/studies/{sid}").json()["spec"]["sampler"] == {
        "type": "tpe",
        "seed": None,
    }
    configs = play([http], sid)
    assert len(configs) == 14
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
    # The model-based path: results observed and the sampler's state kept, which random
    # search has neither of.
    engine = create_engine(database_url)
    with Session(engine) as s:
        assert s.scalars(select(Observation).where(Observation.study_id == sid)).first()
        assert s.get(SamplerState, sid) is not None
    engine.dispose()
    # Options without a type are the default sampler's.
    seeded = http.post(f"{API}/studies", json={**body, "sampler": {"seed": 4, "n_startup": 3}})
    assert seeded.status_code == 201, seeded.text
    assert seeded.json()["spec"]["sampler"] == {"type": "tpe", "seed": 4, "n_startup": 3}


@pytest.mark.parametrize(
    ("sampler", "field", "words"),
    [
        ({"type": "tpe", "gamma": 2}, "sampler.gamma", "less than or equal to 0.5"),
        ({"type": "random", "gamma": 0.2}, "sampler", "gamma: not an option of the random"),
        ({"type": "genetic", "population_size": 4, "elitism": 4}, "sampler", "elitism (4)"),
        ({"type": "annealing"}, "sampler.type", "'tpe'"),
        ({"type": "gp", "max_history": 3}, "sampler.max_history", "greater than or equal to 10"),
    ],
)
def test_bad_sampler_options_are_a_422_naming_the_field(
    apps: list[TestClient], sampler: dict[str, Any], field: str, words: str
) -> None:
    r = apps[0].post(f"{API}/studies", json=study_spec(sampler=sampler))
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(e["field"] == field and words in e["message"] for e in errors), errors
    assert apps[0].get(f"{API}/studies").json()["items"] == []
