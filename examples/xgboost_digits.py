"""Gradient-boosted trees on scikit-learn's bundled digits with XGBoost, one report per round.

The resource is boosting rounds (one unit = one round, see
:mod:`tuneyard.integrations.xgboost`): ASHA compares configurations after a few trees and
gives the rounds to the promising ones. Hyperparameters: ``eta``, ``max_depth``,
``min_child_weight``, ``subsample``, ``colsample_bytree`` and ``reg_lambda``; reports
``valid-mlogloss`` (the validation split's multi-class log loss) after every round, with
``valid-merror`` beside it. A paused trial's booster is saved in XGBoost's own format and a
promotion goes on from it, on this worker or another.

    pip install 'tuneyard[xgboost]'
    tuneyard study create -f examples/xgboost_study.yaml

One thread per trial (``nthread``): a worker runs one trial per slot, and a round on 1,347
digits takes a few milliseconds, so a trial of 27 rounds costs well under a second.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

METRIC = "valid-mlogloss"


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
    return {
        "objective": "multi:softprob",
        "num_class": 10,
        "eval_metric": ["merror", "mlogloss"],  # the last one is what early stopping would use
        "eta": float(params.get("eta", 0.3)),
        "max_depth": int(params.get("max_depth", 4)),
        "min_child_weight": float(params.get("min_child_weight", 1.0)),
        "subsample": float(params.get("subsample", 1.0)),
        "colsample_bytree": float(params.get("colsample_bytree", 1.0)),
        "lambda": float(params.get("reg_lambda", 1.0)),
        "tree_method": "hist",
        "nthread": 1,
        "seed": seed,
    }


def objective(trial: Any) -> None:
    """Train the job's rounds, resuming from the paused booster when there is one."""
    import xgboost

    from tuneyard.integrations.xgboost import train

    x_train, x_val, y_train, y_val = dataset()
    dtrain = xgboost.DMatrix(x_train, label=y_train)
    dvalid = xgboost.DMatrix(x_val, label=y_val)
    train(
        trial,
        booster_params(trial.params, seed=trial.number),
        dtrain,
        evals=[(dvalid, "valid")],
        monitor=METRIC,
        verbose_eval=False,
    )
