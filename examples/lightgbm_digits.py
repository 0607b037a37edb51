"""Gradient-boosted trees on scikit-learn's bundled digits with LightGBM, one report per round.

The resource is boosting rounds (one unit = one round, see
:mod:`tuneyard.integrations.lightgbm`). Hyperparameters: ``learning_rate``, ``num_leaves``,
``min_data_in_leaf``, ``feature_fraction``, ``bagging_fraction`` and ``lambda_l2``; reports
``valid-multi_logloss`` after every round, with ``valid-multi_error`` beside it. A paused
trial's model is saved in LightGBM's own text format and a promotion goes on from it
(``init_model``), on this worker or another.

    pip install 'tuneyard[lightgbm]'
    tuneyard study create -f examples/lightgbm_study.yaml

One thread per trial (``num_threads``): a worker runs one trial per slot, and a round on
1,347 digits takes a few milliseconds.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

METRIC = "valid-multi_logloss"


@lru_cache(maxsize=1)
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits split 75/25 (stratified, random_state=0): x_train, x_val, y_train, y_val."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return x_train, x_val, y_train, y_val


def booster_params(params: dict[str, Any], seed: int) -> dict[str, Any]:
    bagging = float(params.get("bagging_fraction", 1.0))
    return {
        "objective": "multiclass",
        "num_class": 10,
        "metric": ["multi_logloss", "multi_error"],
        "learning_rate": float(params.get("learning_rate", 0.1)),
        "num_leaves": int(params.get("num_leaves", 15)),
        "min_data_in_leaf": int(params.get("min_data_in_leaf", 20)),
        "feature_fraction": float(params.get("feature_fraction", 1.0)),
        "bagging_fraction": bagging,
        "bagging_freq": 1 if bagging < 1.0 else 0,
        "lambda_l2": float(params.get("lambda_l2", 0.0)),
        "num_threads": 1,
        "seed": seed,
        "verbose": -1,
    }


def objective(trial: Any) -> None:
    """Train the job's rounds, resuming from the paused model file when there is one."""
    import lightgbm

    from tuneyard.integrations.lightgbm import train

    x_train, x_val, y_train, y_val = dataset()
    # Built per job: a Dataset is bound to the model it continues (its init scores).
    train_set = lightgbm.Dataset(x_train, label=y_train, free_raw_data=False)
    valid_set = lightgbm.Dataset(x_val, label=y_val, reference=train_set, free_raw_data=False)
    train(
        trial,
        booster_params(trial.params, seed=trial.number),
        train_set,
        valid_sets=[valid_set],
        valid_names=["valid"],
        monitor=METRIC,
    )
