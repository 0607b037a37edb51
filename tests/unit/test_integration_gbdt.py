"""The XGBoost and LightGBM callbacks with the real libraries on a small slice of digits, under
a real ``Trial`` whose reports a scripted service answers: a pause saves the framework's own
model and a resumed job goes on from it, the round after; stop and complete end training;
an on-the-spot promotion trains on; a checkpoint that does not match the job is refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import pytest
import xgboost

from tests.fakes import FakeService, job
from tuneyard.integrations import lightgbm as lgb_cb
from tuneyard.integrations import xgboost as xgb_cb
from tuneyard.integrations._common import CheckpointMismatch, MissingMetric
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.runner import load_objective, run_assignment
from tuneyard.worker.trial import Trial


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:600], y[:600], x[600:900], y[600:900]


@dataclass
class Framework:
    """One library behind the same questions: train a job, read a saved model's rounds,
    predict with a model."""

    name: str
    module: Any
    monitor: str
    checkpoint: str
    run: Callable[..., Any]
    rounds_in: Callable[[Path], int]
    rounds_of: Callable[[Any], int]
    predict: Callable[[Any], np.ndarray]


def _xgb_run(trial: Trial, **kw: Any) -> Any:
    x, y, xv, yv = digits()
    params = {"objective": "multi:softprob", "num_class": 10, "max_depth": 2, "nthread": 1}
    dtrain, dvalid = xgboost.DMatrix(x, label=y), xgboost.DMatrix(xv, label=yv)
    kw.setdefault("monitor", "valid-mlogloss")
    return xgb_cb.train(trial, params, dtrain, evals=[(dtrain, "train"), (dvalid, "valid")], **kw)


def _lgb_run(trial: Trial, **kw: Any) -> Any:
    x, y, xv, yv = digits()
    params = {
        "objective": "multiclass",
        "num_class": 10,
        "metric": ["multi_logloss", "multi_error"],
        "num_leaves": 4,
        "num_threads": 1,
        "verbose": -1,
    }
    train_set = lightgbm.Dataset(x, label=y)
    valid = lightgbm.Dataset(xv, label=yv, reference=train_set)
    kw.setdefault("monitor", "valid-multi_logloss")
    return lgb_cb.train(trial, params, train_set, valid_sets=[valid], valid_names=["valid"], **kw)


FRAMEWORKS = {
    "xgboost": Framework(
        "xgboost",
        xgb_cb,
        "valid-mlogloss",
        "model.ubj",
        _xgb_run,
        lambda p: xgboost.Booster(model_file=str(p)).num_boosted_rounds(),
        lambda b: int(b.num_boosted_rounds()),
        lambda b: b.predict(xgboost.DMatrix(digits()[2])),
    ),
    "lightgbm": Framework(
        "lightgbm",
        lgb_cb,
        "valid-multi_logloss",
        "model.txt",
        _lgb_run,
        lambda p: lightgbm.Booster(model_file=p).current_iteration(),
        lambda b: int(b.current_iteration()),
        lambda b: b.predict(digits()[2]),
    ),
}


@pytest.fixture(params=sorted(FRAMEWORKS))
def fw(request: pytest.FixtureRequest) -> Framework:
    return FRAMEWORKS[request.param]


def make_trial(svc: FakeService, directory: Path, frm: float, to: float, number: int = 3) -> Trial:
    return Trial(svc, 1, 5, number, {}, frm, to, directory)


def steps(svc: FakeService) -> list[float]:
    return [args[1] for kind, args in svc.calls if kind == "report"]


def test_a_pause_saves_the_booster_and_the_resumed_job_goes_on_from_the_next_round(
    fw: Framework, tmp_path: Path
) -> None:
    first = FakeService({3: ("pause", 3)})
    paused = make_trial(first, tmp_path / "a", 0, 3)
    fw.run(paused)
    assert steps(first) == [1, 2, 3] and paused.decision == "pause"
    saved = tmp_path / "a" / fw.checkpoint
    assert fw.rounds_in(saved) == 3
    # Every logged metric goes with the monitored one.
    _, _, _, metrics = [args for kind, args in first.calls if kind == "report"][-1]
    assert (
        fw.monitor in metrics
        and len(metrics) >= 2
        and all(isinstance(v, float) for v in metrics.values())
    )

    # The checkpoint travels to another directory (another worker), and the job resumes.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    second = FakeService({6: ("complete", 6)})
    resumed = make_trial(second, tmp_path / "b", 3, 6)
    booster = fw.run(resumed)
    assert steps(second) == [4, 5, 6] and resumed.decision == "complete"
    # Complete saves the model too: the worker keeps it as the trial's.
    assert fw.rounds_in(tmp_path / "b" / fw.checkpoint) == 6

    # Paused and resumed, it is the model trained straight through.
    straight = make_trial(FakeService({6: ("complete", 6)}), tmp_path / "c", 0, 6)
    whole = fw.run(straight)
    assert fw.rounds_of(booster) == fw.rounds_of(whole) == 6
    np.testing.assert_allclose(fw.predict(booster), fw.predict(whole), rtol=1e-6)


def test_a_stop_ends_training_and_saves_nothing(fw: Framework, tmp_path: Path) -> None:
    svc = FakeService({2: ("stop", None)})
    trial = make_trial(svc, tmp_path, 0, 9)
    booster = fw.run(trial)
    assert steps(svc) == [1, 2] and trial.decision == "stop"
    assert fw.rounds_of(booster) == 2
    assert not (tmp_path / fw.checkpoint).exists()


def test_an_on_the_spot_promotion_trains_on_to_the_new_end(fw: Framework, tmp_path: Path) -> None:
    svc = FakeService({2: ("continue", 5), 5: ("pause", 5)})
    trial = make_trial(svc, tmp_path, 0, 2)
    booster = fw.run(trial)
    assert steps(svc) == [1, 2, 3, 4, 5]
    assert fw.rounds_of(booster) == 5 and fw.rounds_in(tmp_path / fw.checkpoint) == 5


def test_a_continue_at_the_end_of_the_job_ends_it(fw: Framework, tmp_path: Path) -> None:
    """A scheduler without a rung at the job's end answers continue there: the range is done."""
    svc = FakeService()
    trial = make_trial(svc, tmp_path, 0, 3)
    booster = fw.run(trial)
    assert steps(svc) == [1, 2, 3] and trial.decision == "continue"
    assert fw.rounds_of(booster) == 3


def test_rounds_per_unit_reports_every_kth_round(fw: Framework, tmp_path: Path) -> None:
    svc = FakeService({2: ("pause", 2)})
    trial = make_trial(svc, tmp_path / "a", 0, 4)
    fw.run(trial, rounds_per_unit=5)
    assert steps(svc) == [1, 2]
    assert fw.rounds_in(tmp_path / "a" / fw.checkpoint) == 10

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    second = FakeService({4: ("complete", 4)})
    booster = fw.run(make_trial(second, tmp_path / "b", 2, 4), rounds_per_unit=5)
    assert steps(second) == [3, 4] and fw.rounds_of(booster) == 20
    with pytest.raises(ValueError, match="rounds_per_unit must be at least 1"):
        fw.run(make_trial(FakeService(), tmp_path / "c", 0, 1), rounds_per_unit=0)


def test_a_metric_not_logged_names_those_that_were(fw: Framework, tmp_path: Path) -> None:
    trial = make_trial(FakeService(), tmp_path, 0, 3)
    with pytest.raises(MissingMetric) as err:
        fw.run(trial, monitor="valid-auc")
    assert "'valid-auc'" in str(err.value) and fw.monitor in str(err.value)


def test_a_checkpoint_that_does_not_match_the_job_is_refused(fw: Framework, tmp_path: Path) -> None:
    fw.run(make_trial(FakeService({3: ("pause", 3)}), tmp_path, 0, 3))
    # The service says the job resumes from 4: the checkpoint holds 3.
    with pytest.raises(CheckpointMismatch, match=r"holds 3 boosting rounds.*resumes from 4"):
        fw.run(make_trial(FakeService(), tmp_path, 4, 6))
    # A resumed job with no checkpoint at all.
    with pytest.raises(CheckpointMismatch, match=r"no .* checkpoint"):
        fw.run(make_trial(FakeService(), tmp_path / "empty", 3, 6))


def test_training_a_fresh_model_on_a_resumed_job_is_refused(tmp_path: Path) -> None:
    """The callback alone, handed a model that was not restored: it would report 1 again."""
    x, y, _, _ = digits()
    svc = FakeService()
    trial = make_trial(svc, tmp_path, 3, 6)
    dtrain = xgboost.DMatrix(x, label=y)
    params = {"objective": "multi:softprob", "num_class": 10, "nthread": 1}
    callback = xgb_cb.TuneyardCallback(trial, "train-mlogloss")
    with pytest.raises(CheckpointMismatch, match=r"booster with 0 rounds.*starts from 3"):
        xgboost.train(params, dtrain, 3, evals=[(dtrain, "train")], callbacks=[callback])

    lgb_params = {"objective": "multiclass", "num_class": 10, "verbose": -1, "num_threads": 1}
    train_set = lightgbm.Dataset(x, label=y)
    lgb_callback = lgb_cb.TuneyardCallback(trial, "training-multi_logloss")
    with pytest.raises(CheckpointMismatch, match=r"training from round 0.*starts from 3"):
        lightgbm.train(lgb_params, train_set, 3, valid_sets=[train_set], callbacks=[lgb_callback])
    assert steps(svc) == []


def test_xgboost_s_scikit_learn_wrapper_pauses_and_resumes(tmp_path: Path) -> None:
    x, y, xv, yv = digits()
    first = FakeService({2: ("pause", 2)})
    trial = make_trial(first, tmp_path, 0, 4)
    model = xgboost.XGBClassifier(
        n_estimators=4,
        max_depth=2,
        n_jobs=1,
        callbacks=[xgb_cb.TuneyardCallback(trial, "validation_0-mlogloss")],
    )
    model.fit(x, y, eval_set=[(xv, yv)], verbose=False)
    assert steps(first) == [1, 2]

    second = FakeService({4: ("complete", 4)})
    resumed = make_trial(second, tmp_path, 2, 4)
    booster = xgb_cb.restore(resumed)
    model = xgboost.XGBClassifier(
        n_estimators=2,
        max_depth=2,
        n_jobs=1,
        callbacks=[xgb_cb.TuneyardCallback(resumed, "validation_0-mlogloss")],
    )
    model.fit(x, y, eval_set=[(xv, yv)], xgb_model=booster, verbose=False)
    assert steps(second) == [3, 4] and model.get_booster().num_boosted_rounds() == 4


def test_lightgbm_datasets_already_freed_are_refused_before_training(tmp_path: Path) -> None:
    x, y, _, _ = digits()
    train_set = lightgbm.Dataset(x, label=y).construct()
    with pytest.raises(ValueError, match=r"train_set was built .* free_raw_data=False"):
        lgb_cb.train(
            make_trial(FakeService(), tmp_path, 0, 2),
            {"objective": "multiclass", "num_class": 10, "verbose": -1},
            train_set,
            valid_sets=[train_set],
            monitor="training-multi_logloss",
        )


def test_a_resource_range_between_rounds_is_refused(fw: Framework, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"resource_to is 2.5"):
        fw.run(make_trial(FakeService(), tmp_path, 0, 2.5))


@pytest.mark.parametrize("example", ["xgboost_digits", "lightgbm_digits"])
def test_the_example_pauses_and_resumes_on_another_worker(example: str, tmp_path: Path) -> None:
    """The example objective through the worker's own job runner: paused at round 3 with its
    model uploaded, resumed from it elsewhere, completed at 9 with its model kept."""
    objective = load_objective(f"examples.{example}:objective")
    store = FilesystemCheckpointStore(tmp_path / "shared")
    first = FakeService({3: ("pause", 3)})
    a = job("new", 0, 3, params={})
    assert run_assignment(first, 1, a, objective, store, tmp_path / "a") == "pause"  # type: ignore[arg-type]
    (location,) = [args[1] for kind, args in first.calls if kind == "pause"]
    second = FakeService({9: ("complete", 9)})
    b = a.model_copy(
        update={"kind": "resume", "resource_from": 3, "resource_to": 9, "checkpoint": location}
    )
    assert run_assignment(second, 1, b, objective, store, tmp_path / "b") == "complete"  # type: ignore[arg-type]
    assert steps(first) == [1, 2, 3] and steps(second) == [4, 5, 6, 7, 8, 9]
    assert second.models and second.models[0] is not None


@pytest.mark.parametrize("example", ["xgboost", "lightgbm"])
def test_the_example_study_names_the_example_s_objective_and_metric(example: str) -> None:
    import importlib

    import yaml

    from tuneyard.spec import StudySpec

    root = Path(__file__).resolve().parents[2] / "examples"
    spec = StudySpec.model_validate(yaml.safe_load((root / f"{example}_study.yaml").read_text()))
    assert spec.execution is not None
    assert spec.execution.entrypoint == f"examples.{example}_digits:objective"
    assert spec.metric == importlib.import_module(f"examples.{example}_digits").METRIC
    assert spec.scheduler.type == "asha"
