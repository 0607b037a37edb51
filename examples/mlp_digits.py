"""An MLP on scikit-learn's bundled digits, trained epoch by epoch under a tuneyard trial.

Hyperparameters: ``lr``, ``batch_size``, ``layers`` x ``units``, ``momentum``, ``solver``
(sgd or adam), ``nesterov`` (sgd only) and optionally ``l2``. Each epoch is one pass of
``MLPClassifier.partial_fit``; the validation error is reported after each one. The model is
saved with ``trial.save`` whenever the trial pauses, so a promoted trial resumes where it
stopped, on this machine or another.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any

import numpy as np

METRIC = "val_error"


@lru_cache(maxsize=1)
def dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


def build(params: dict[str, Any], seed: int) -> Any:
    from sklearn.neural_network import MLPClassifier

    solver = params.get("solver", "adam")
    return MLPClassifier(
        hidden_layer_sizes=(int(params.get("units", 64)),) * int(params.get("layers", 1)),
        solver=solver,
        learning_rate_init=float(params.get("lr", 1e-3)),
        batch_size=int(params.get("batch_size", 64)),
        momentum=float(params.get("momentum", 0.9)),
        nesterovs_momentum=bool(params.get("nesterov", False)),
        alpha=float(params.get("l2", 1e-4)),
        random_state=seed,
        max_iter=1,
    )


def train(trial: Any) -> float | None:
    """The objective: ``for epoch in trial.epochs()`` trains and reports one epoch each."""
    x_train, x_val, y_train, y_val = dataset()
    classes = np.unique(y_train)
    state = trial.load()
    model = state if state is not None else build(trial.params, seed=trial.number)
    error = None
    with warnings.catch_warnings():
        # One pass per call is the point; sklearn warns that it did not converge.
        warnings.simplefilter("ignore")
        for epoch in trial.epochs():
            model.partial_fit(x_train, y_train, classes=classes)
            error = float(1.0 - model.score(x_val, y_val))
            trial.report(epoch, **{METRIC: error})
    trial.save(model)
    return error
