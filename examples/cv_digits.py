"""The digits MLP of :mod:`examples.mlp_digits`, cross-validated: one fold per job.

With ``evaluation: {folds: 5}`` in the study, each trial runs five jobs, each told its fold
(``trial.fold``, 0..4): the job trains on the other four fifths of the digits and reports the
error on its fifth, epoch by epoch, as ``val_error``. The service aggregates the folds (their
mean, with its spread) into the trial's value, ranks rungs by it and, with ``racing``, stops a
configuration shown worse than the best one on the folds both ran. The folds are fixed
(``KFold`` shuffled with a fixed seed), so every configuration sees the same splits: that is
what makes the racing test paired.

Each fold saves its own model when it pauses at a rung, so a promoted trial's folds resume
where they paused, on any machine.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from typing import Any

import numpy as np

from examples.mlp_digits import METRIC, build

SPLIT_SEED = 0


@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(float), y


@lru_cache(maxsize=16)
def fold_data(fold: int, folds: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fold's training and validation data, standardized on its training part."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    x, y = digits()
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SPLIT_SEED).split(x, y)
    train_idx, val_idx = list(splits)[fold]
    scaler = StandardScaler().fit(x[train_idx])
    return scaler.transform(x[train_idx]), scaler.transform(x[val_idx]), y[train_idx], y[val_idx]


def train(trial: Any) -> float | None:
    """One fold of one configuration, one ``partial_fit`` pass per epoch."""
    from sklearn.exceptions import ConvergenceWarning

    if trial.fold is None or trial.folds is None:
        raise RuntimeError("examples.cv_digits:train needs evaluation.folds in the study")
    x_train, x_val, y_train, y_val = fold_data(trial.fold, trial.folds)
    state = trial.load()
    start = int(trial.resource_from)
    if state is None:
        if start > 0:
            raise RuntimeError(f"no checkpoint to resume fold {trial.fold} from at epoch {start}")
        # Every fold of a configuration starts from the same initial weights.
        state = {"model": build(trial.params, seed=trial.number), "epoch": 0}
    elif state["epoch"] != start:
        raise RuntimeError(f"checkpoint at epoch {state['epoch']}, the job starts at {start}")
    model = state["model"]
    classes = np.unique(y_train)
    error = None
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in trial.epochs():
            try:
                model.partial_fit(x_train, y_train, classes=classes)
            except ValueError as exc:
                if "non-finite" not in str(exc):
                    raise
                trial.report(epoch, **{METRIC: math.nan})
                return None
            error = float(1.0 - model.score(x_val, y_val))
            state["epoch"] = epoch
            trial.report(epoch, **{METRIC: error})
    if trial.decision not in ("stop", "complete"):
        trial.save(state)
    return error
