"""The Keras 3 callback with real Keras (torch backend, CPU) on a small slice of digits, under a
real ``Trial`` whose reports a scripted service answers: a pause saves the model in Keras'
format and a resumed job goes on from it at the next epoch, optimizer state included; stop
and complete end the fit; an on-the-spot promotion fits on; a wrong start is refused."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # read when Keras is first imported, below

import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from tests.fakes import FakeService, job
from tuneyard.integrations._common import CheckpointMismatch, MissingMetric
from tuneyard.integrations.keras import TuneyardCallback, fit, restore
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.runner import load_objective, run_assignment
from tuneyard.worker.trial import Trial

BATCH = 100


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return x[:500], y[:500], x[500:700], y[500:700]


def build() -> Any:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run(trial: Trial, model: Any = None, **kw: Any) -> Any:
    x, y, xv, yv = digits()
    if model is None:
        model = build()
    kw.setdefault("monitor", "val_loss")
    fit(trial, model, x, y, validation_data=(xv, yv), batch_size=BATCH, verbose=0, **kw)
    return model


def make_trial(svc: FakeService, directory: Path, frm: float, to: float) -> Trial:
    return Trial(svc, 1, 5, 3, {}, frm, to, directory)


def reports(svc: FakeService) -> list[tuple[float, dict[str, Any]]]:
    return [(args[1], args[3]) for kind, args in svc.calls if kind == "report"]


def steps(svc: FakeService) -> list[float]:
    return [step for step, _ in reports(svc)]


def test_a_pause_saves_the_model_and_the_resumed_job_fits_on_from_the_next_epoch(
    tmp_path: Path,
) -> None:
    first = FakeService({2: ("pause", 2)})
    model = run(make_trial(first, tmp_path / "a", 0, 2))
    assert steps(first) == [1, 2]
    _, metrics = reports(first)[-1]
    assert set(metrics) == {"val_loss", "loss", "accuracy", "val_accuracy"}
    steps_per_epoch = -(-len(digits()[0]) // BATCH)
    assert int(model.optimizer.iterations) == 2 * steps_per_epoch

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    second = FakeService({4: ("complete", 4)})
    resumed = make_trial(second, tmp_path / "b", 2, 4)
    restored = restore(resumed)
    assert restored is not None
    # The optimizer state came back with the weights: Adam goes on from its 2 epochs.
    assert int(restored.optimizer.iterations) == 2 * steps_per_epoch
    np.testing.assert_allclose(
        restored.predict(digits()[2], verbose=0), model.predict(digits()[2], verbose=0)
    )
    run(resumed, restored)
    assert steps(second) == [3, 4] and resumed.decision == "complete"
    # Complete saves the model as well: the worker keeps it as the trial's.
    done = restore(make_trial(FakeService(), tmp_path / "b", 4, 5))
    assert int(done.optimizer.iterations) == 4 * steps_per_epoch


def test_a_stop_ends_the_fit_and_saves_nothing(tmp_path: Path) -> None:
    svc = FakeService({1: ("stop", None)})
    model = run(make_trial(svc, tmp_path, 0, 5))
    assert steps(svc) == [1]
    assert int(model.optimizer.iterations) == -(-len(digits()[0]) // BATCH)
    assert not (tmp_path / "model.keras").exists()


def test_an_on_the_spot_promotion_fits_on_to_the_new_end(tmp_path: Path) -> None:
    svc = FakeService({1: ("continue", 3), 3: ("pause", 3)})
    trial = make_trial(svc, tmp_path, 0, 1)
    run(trial)
    assert steps(svc) == [1, 2, 3] and trial.decision == "pause"
    assert restore(make_trial(FakeService(), tmp_path, 3, 9)) is not None


def test_fit_returns_the_last_value_when_the_range_ends_on_a_continue(tmp_path: Path) -> None:
    svc = FakeService()
    x, y, xv, yv = digits()
    trial = make_trial(svc, tmp_path, 0, 2)
    value = fit(trial, build(), x, y, validation_data=(xv, yv), batch_size=BATCH, verbose=0)
    assert steps(svc) == [1, 2] and value == reports(svc)[-1][1]["val_loss"]


def test_a_resumed_fit_that_starts_from_epoch_0_is_refused(tmp_path: Path) -> None:
    x, y, xv, yv = digits()
    svc = FakeService()
    callback = TuneyardCallback(make_trial(svc, tmp_path, 2, 4))
    with pytest.raises(ValueError, match=r"starting epoch 1.*initial_epoch"):
        build().fit(x, y, validation_data=(xv, yv), epochs=4, callbacks=[callback], verbose=0)
    assert steps(svc) == []
    with pytest.raises(ValueError, match="do not pass epochs="):
        fit(make_trial(svc, tmp_path, 0, 2), build(), x, y, epochs=3)


def test_a_checkpoint_that_does_not_match_the_job_is_refused(tmp_path: Path) -> None:
    run(make_trial(FakeService({2: ("pause", 2)}), tmp_path, 0, 2))
    with pytest.raises(CheckpointMismatch, match=r"holds 2 epochs, but the job resumes from 3"):
        restore(make_trial(FakeService(), tmp_path, 3, 5))
    with pytest.raises(CheckpointMismatch, match="no Keras checkpoint"):
        restore(make_trial(FakeService(), tmp_path / "empty", 2, 5))
    # A .keras file saved without the callback does not say which epoch it holds.
    (tmp_path / "plain").mkdir()
    build().save(tmp_path / "plain" / "model.keras")
    with pytest.raises(CheckpointMismatch, match="does not say how many epochs"):
        restore(make_trial(FakeService(), tmp_path / "plain", 2, 5))
    with pytest.raises(ValueError, match=r"ending in \.keras"):
        restore(make_trial(FakeService(), tmp_path, 2, 5), name="model.h5")


def test_a_metric_not_logged_names_those_that_were(tmp_path: Path) -> None:
    with pytest.raises(MissingMetric) as err:
        run(make_trial(FakeService(), tmp_path, 0, 2), monitor="val_acc")
    assert "'val_acc'" in str(err.value) and "val_accuracy" in str(err.value)


def test_the_example_pauses_and_resumes_on_another_worker(tmp_path: Path) -> None:
    objective = load_objective("examples.keras_digits:objective")
    store = FilesystemCheckpointStore(tmp_path / "shared")
    first = FakeService({1: ("pause", 1)})
    a = job("new", 0, 1, params={"units": 8, "batch_size": 128})
    assert run_assignment(first, 1, a, objective, store, tmp_path / "a") == "pause"  # type: ignore[arg-type]
    (location,) = [args[1] for kind, args in first.calls if kind == "pause"]
    second = FakeService({3: ("complete", 3)})
    b = a.model_copy(
        update={"kind": "resume", "resource_from": 1, "resource_to": 3, "checkpoint": location}
    )
    assert run_assignment(second, 1, b, objective, store, tmp_path / "b") == "complete"  # type: ignore[arg-type]
    assert steps(first) == [1] and steps(second) == [2, 3]
    assert second.models and second.models[0] is not None


def test_the_example_study_names_the_example_s_objective_and_metric() -> None:
    import yaml

    from examples import keras_digits
    from tuneyard.spec import StudySpec

    path = Path(__file__).resolve().parents[2] / "examples" / "keras_study.yaml"
    spec = StudySpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec.execution is not None
    assert spec.execution.entrypoint == "examples.keras_digits:objective"
    assert spec.metric == keras_digits.METRIC
