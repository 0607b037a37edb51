"""An Optuna-style objective through the real API and the worker loop, on SQLite and
PostgreSQL: the definition read from its suggest calls is accepted, ASHA's stopping mode prunes
it through should_prune(), and the rest complete with the value they return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import serve
from tuneyard import optuna_compat
from tuneyard.api.app import create_app
from tuneyard.client import Client
from tuneyard.settings import Settings
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.runner import work_loop

EPOCHS = 9


def curve(trial: Any) -> float:
    """A learning curve that settles at (x - 0.3)^2, worse for the "slow" kind."""
    x = trial.suggest_float("x", 0.0, 1.0)
    kind = trial.suggest_categorical("kind", ["fast", "slow"])
    value = 0.0
    for epoch in range(EPOCHS):
        value = (x - 0.3) ** 2 + (2.0 if kind == "slow" else 1.0) / (epoch + 1)
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna_compat.TrialPruned()
    return value


def test_an_optuna_objective_runs_and_is_pruned_under_the_service(
    settings: Settings, tmp_path: Path
) -> None:
    spec = optuna_compat.definition_from(
        curve,
        name="optuna-curve",
        metric="loss",
        max_resource=EPOCHS,
        sampler={"type": "random", "seed": 5},
        limits={"max_trials": 12, "max_concurrent": 1},
    )
    train = optuna_compat.objective(curve, space=spec)
    with serve(create_app(settings)) as url, Client(url) as client:
        study_id = client.create_study(spec).id
        store = FilesystemCheckpointStore(tmp_path / "shared")
        work_loop(client, study_id, train, store, tmp_path / "work", "w1", idle_sleep=0.01)
        trials = client.list_trials(study_id, limit=100).items
        reports = {t.id: client.get_trial(t.id).reports for t in trials}

    assert len(trials) == 12
    states = {t.state for t in trials}
    assert states <= {"completed", "stopped"} and states == {"completed", "stopped"}, states
    for t in trials:
        steps = [r.step for r in reports[t.id]]
        assert steps == list(range(1, len(steps) + 1)), steps  # counted from 1, none skipped
        if t.state == "completed":
            assert steps[-1] == EPOCHS
            x, slow = t.params["x"], t.params["kind"] == "slow"
            assert t.value == (x - 0.3) ** 2 + (2.0 if slow else 1.0) / EPOCHS
        else:
            assert steps[-1] < EPOCHS and reports[t.id][-1].decision == "stop"
