"""``tuneyard import optuna``: an Optuna study (a real one, in its SQLite or PostgreSQL
storage) becomes a
tuneyard study whose history holds its completed and pruned trials, with their parameters,
intermediate and final values, and whose sampler starts from them; what cannot be imported
is refused, naming the parameter or the field."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from tests.conftest import PG_URL, _unreachable, postgres_problem
from tests.helpers import API, serve
from tuneyard import cli
from tuneyard.api.app import create_app
from tuneyard.settings import Settings
from tuneyard.store.models import Observation

ENV = {"COLUMNS": "300", "NO_COLOR": "1"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def optuna_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where Optuna keeps the study to import: a SQLite file, or a PostgreSQL database of its
    own (Optuna's tables would meet tuneyard's of the same names in a shared one)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'optuna.db'}"
        return
    problem = postgres_problem()
    if problem:
        _unreachable("PostgreSQL", problem)
    name = f"optuna_import_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def optuna_study(url: str, name: str = "mlp", conditional: bool = False) -> str:
    """A finished Optuna study in the storage at ``url``: 24 trials of a curve over lr,
    layers and an optimizer, the worse ones pruned by Optuna's median pruner. Its URL."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=url,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1),
    )

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        layers = trial.suggest_int("layers", 1, 3)
        opt = trial.suggest_categorical("optimizer", ["sgd", "adam"])
        if conditional and opt == "sgd":
            trial.suggest_float("momentum", 0.0, 0.99)
        final = abs(math.log10(lr) + 2.5) * 0.1 + 0.02 * layers + (0.05 if opt == "sgd" else 0)
        loss = 1.0
        for step in range(5):
            loss = final + 0.5 / (step + 1)
            trial.report(loss, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    study.optimize(objective, n_trials=24)
    return url


def test_an_optuna_study_becomes_the_history_of_a_new_study(
    http: TestClient, settings: Settings, optuna_storage: str
) -> None:
    url = optuna_study(optuna_storage)
    source = optuna.load_study(study_name="mlp", storage=url)
    finished = [t for t in source.trials if t.state.name in ("COMPLETE", "PRUNED")]
    pruned = [t for t in finished if t.state.name == "PRUNED"]
    assert pruned, "the pruner pruned nothing: the test would not cover pruned trials"
    with serve(create_app(settings)) as api:
        r = CliRunner().invoke(
            cli.app,
            ["import", "optuna", "--storage", url, "--study", "mlp", "--more", "5", "--api", api],
            env=ENV,
        )
    assert r.exit_code == 0, r.output
    assert f"with {len(finished)} imported trials" in r.output
    sid = http.get(f"{API}/studies").json()["items"][0]["id"]
    study = http.get(f"{API}/studies/{sid}").json()
    spec = study["spec"]
    space = spec["space"]
    assert sorted(space) == ["layers", "lr", "optimizer"]
    assert (space["lr"]["type"], space["lr"]["low"], space["lr"]["high"]) == ("float", 1e-4, 1e-1)
    assert space["lr"]["log"] is True
    assert (space["layers"]["type"], space["layers"]["low"], space["layers"]["high"]) == (
        "int",
        1,
        3,
    )
    assert space["optimizer"]["choices"] == ["sgd", "adam"]
    assert spec["limits"]["max_trials"] == len(finished) + 5
    assert spec["scheduler"]["max_resource"] == 5  # Optuna's steps 0..4 moved up by one
    trials = http.get(f"{API}/studies/{sid}/trials", params={"limit": 100}).json()["items"]
    assert len(trials) == len(finished)
    by_number = {t["number"]: t for t in trials}
    for i, src in enumerate(finished):
        t = by_number[i]
        assert t["params"] == src.params
        want = "completed" if src.state.name == "COMPLETE" else "stopped"
        assert t["state"] == want and "imported (Optuna 'mlp' trial" in t["reason"]
        detail = http.get(f"{API}/trials/{t['id']}").json()
        steps = {rep["step"]: rep["value"] for rep in detail["reports"]}
        for step, value in src.intermediate_values.items():
            assert steps[step + 1] == pytest.approx(value)
        if src.state.name == "COMPLETE":
            assert t["value"] == pytest.approx(src.value)
    # The sampler starts from the imported trials: every value is an observation, and the
    # next trial is numbered after them.
    engine = create_engine(settings.database_url)
    with Session(engine) as db:
        observed = db.scalar(
            select(func.count()).select_from(Observation).where(Observation.study_id == sid)
        )
    engine.dispose()
    assert observed == sum(
        len(t.intermediate_values) + (t.state.name == "COMPLETE") for t in finished
    ) - sum(1 for t in finished if t.state.name == "COMPLETE" and 4 in t.intermediate_values)
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json()
    assert job["number"] == len(finished)


def test_what_cannot_be_imported_is_refused_naming_it(
    http: TestClient, settings: Settings, tmp_path: Path
) -> None:
    url = optuna_study(f"sqlite:///{tmp_path / 'cond.db'}", name="cond", conditional=True)
    with serve(create_app(settings)) as api:
        r = CliRunner().invoke(
            cli.app,
            ["import", "optuna", "--storage", url, "--study", "cond", "--api", api],
            env=ENV,
        )
        missing = CliRunner().invoke(
            cli.app,
            ["import", "optuna", "--storage", url, "--study", "nope", "--api", api],
            env=ENV,
        )
    assert r.exit_code == 2 and "momentum: suggested in" in r.output and "conditional" in r.output
    assert missing.exit_code == 2 and "cannot load the Optuna study 'nope'" in missing.output
    assert http.get(f"{API}/studies").json()["items"] == []  # nothing was created


@pytest.mark.parametrize(
    ("trial", "words"),
    [
        ({"params": {"x": 2.0}, "state": "completed", "value": 0.1}, "trials[0].params: "),
        ({"params": {"x": 0.5}, "state": "completed"}, "trials[0].value: a completed trial"),
        (
            {"params": {"x": 0.5}, "state": "pruned", "intermediate": [[0, 0.3]]},
            "trials[0].intermediate: step 0",
        ),
    ],
)
def test_a_bad_imported_trial_refuses_the_batch(
    http: TestClient, trial: dict[str, Any], words: str
) -> None:
    spec = {
        "name": "target",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "sampler": {"type": "tpe"},
        "scheduler": {"type": "fifo", "max_resource": 5},
        "limits": {"max_trials": 10},
    }
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    good = {"params": {"x": 0.3}, "state": "completed", "value": 0.2}
    r = http.post(f"{API}/studies/{sid}/trials/import", json={"trials": [trial, good]})
    assert r.status_code == 422, r.text
    assert words in r.text
    assert http.get(f"{API}/studies/{sid}/trials").json()["items"] == []  # nothing stored
    ok = http.post(f"{API}/studies/{sid}/trials/import", json={"trials": [good] * 3})
    assert ok.status_code == 201 and ok.json()["numbers"] == [0, 1, 2]
    full = http.post(f"{API}/studies/{sid}/trials/import", json={"trials": [good] * 8})
    assert full.status_code == 422 and "room for 7 more" in full.text
