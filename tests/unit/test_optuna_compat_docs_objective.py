"""The pruning objective of Optuna's documentation (a linear classifier on iris trained with
``partial_fit``), written out as its own module and run unchanged under tuneyard.

The module imports ``optuna`` and raises ``optuna.TrialPruned``. With Optuna installed (the
bench extra) that is the real package, and the same file is also optimised by Optuna itself,
which shows it is a genuine Optuna objective. Without it, ``optuna`` is a stand-in module whose
``TrialPruned`` is tuneyard's, and everything else runs the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

from tests.fakes import FakeService, job, run
from tuneyard import optuna_compat
from tuneyard.spec import StudySpec

OBJECTIVE = """
import optuna
import sklearn.datasets
import sklearn.linear_model
import sklearn.model_selection


def objective(trial):
    iris = sklearn.datasets.load_iris()
    classes = list(set(iris.target))
    train_x, valid_x, train_y, valid_y = sklearn.model_selection.train_test_split(
        iris.data, iris.target, test_size=0.25, random_state=0
    )

    alpha = trial.suggest_float("alpha", 1e-5, 1e-1, log=True)
    loss = trial.suggest_categorical("loss", ["hinge", "log_loss"])
    clf = sklearn.linear_model.SGDClassifier(alpha=alpha, loss=loss, random_state=0)

    for step in range(20):
        clf.partial_fit(train_x, train_y, classes=classes)

        # Report the intermediate objective value, and prune when told to.
        intermediate_value = 1.0 - clf.score(valid_x, valid_y)
        trial.report(intermediate_value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    return 1.0 - clf.score(valid_x, valid_y)
"""

REAL_OPTUNA = importlib.util.find_spec("optuna") is not None


@pytest.fixture
def docs_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    if not REAL_OPTUNA:
        stand_in = types.ModuleType("optuna")
        stand_in.TrialPruned = optuna_compat.TrialPruned  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "optuna", stand_in)
    (tmp_path / "optuna_docs_objective.py").write_text(OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "optuna_docs_objective", raising=False)
    return importlib.import_module("optuna_docs_objective")


def test_the_documented_objective_gives_a_definition_and_is_pruned_by_the_service(
    docs_module: types.ModuleType, tmp_path: Path
) -> None:
    spec = optuna_compat.definition_from(
        docs_module.objective,
        name="iris-sgd",
        max_resource=20,
        entrypoint="optuna_docs_objective:train",
    )
    assert StudySpec.model_validate(spec.model_dump(mode="json")) == spec
    assert spec.model_dump(mode="json", exclude_defaults=True)["space"] == {
        "alpha": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        "loss": {"type": "categorical", "choices": ["hinge", "log_loss"]},
    }
    assert spec.scheduler.mode == "stopping"

    train = optuna_compat.objective(docs_module.objective, space=spec)
    params = {"alpha": 1e-3, "loss": "log_loss"}
    svc = FakeService({4: ("stop", None)})
    assert run(svc, job(to=20, params=params), train, tmp_path, "w") == "stop"
    assert [a[1] for a in svc.args("report")] == [1, 2, 3, 4]
    assert all(0.0 <= a[2] <= 1.0 for a in svc.args("report"))

    svc = FakeService()
    assert run(svc, job(to=20, params=params), train, tmp_path, "w2") == "complete"
    assert [a[1] for a in svc.args("report")] == list(range(1, 21))
    ((_, final),) = svc.args("complete")
    assert final == svc.args("report")[-1][2]  # the value after the 20th epoch, returned


def test_the_optuna_trial_pruned_it_raises_is_pruning(docs_module: types.ModuleType) -> None:
    import optuna

    assert optuna_compat.is_pruned(optuna.TrialPruned())
    assert not optuna_compat.is_pruned(ValueError("not pruning"))
    if REAL_OPTUNA:
        # The same file, unchanged, is an Optuna objective: Optuna runs and prunes it.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1),
        )
        study.optimize(docs_module.objective, n_trials=4)
        assert len(study.trials) == 4 and study.best_value <= 1.0
