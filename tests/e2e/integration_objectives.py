"""The framework examples as end-to-end objectives, each noting what its job found in its
checkpoint directory before it started: one JSON line per job in the file named by
TUNEYARD_TEST_RECORD (trial, attempt, resource_from, and the units the framework's own saved
model holds, read with the framework itself; None when there is none)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def _note(trial: Any, framework: str, units: int | None) -> None:
    line = {
        "framework": framework,
        "trial": trial.trial_id,
        "attempt": trial.attempt,
        "resource_from": trial.resource_from,
        "units": units,
    }
    with open(os.environ["TUNEYARD_TEST_RECORD"], "a") as f:
        f.write(json.dumps(line) + "\n")


def xgboost_digits(trial: Any) -> None:
    import xgboost

    from examples import xgboost_digits as example

    path = Path(trial.checkpoint_dir) / "model.ubj"
    units = xgboost.Booster(model_file=str(path)).num_boosted_rounds() if path.is_file() else None
    _note(trial, "xgboost", units)
    example.objective(trial)


def lightgbm_digits(trial: Any) -> None:
    import lightgbm

    from examples import lightgbm_digits as example

    path = Path(trial.checkpoint_dir) / "model.txt"
    units = lightgbm.Booster(model_file=path).current_iteration() if path.is_file() else None
    _note(trial, "lightgbm", units)
    example.objective(trial)


def keras_digits(trial: Any) -> float | None:
    """Epochs held, from the optimizer's step count in the saved model: Keras' own record."""
    import keras

    from examples import keras_digits as example

    path = Path(trial.checkpoint_dir) / "model.keras"
    units = None
    if path.is_file():
        steps = int(keras.models.load_model(path).optimizer.iterations)
        per_epoch = -(-len(example.dataset()[0]) // int(trial.params.get("batch_size", 64)))
        units = steps // per_epoch
    _note(trial, "keras", units)
    return example.objective(trial)
