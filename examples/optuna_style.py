"""An objective written for Optuna, run by tuneyard without changing it.

``objective`` is plain Optuna code: it asks ``trial.suggest_*`` for its hyperparameters, trains
scikit-learn's MLP on the bundled digits one pass at a time, reports the validation error after
each pass and raises ``TrialPruned`` when ``trial.should_prune()`` says so. Only its imports
differ: ``TrialPruned`` comes from ``tuneyard.optuna_compat`` (``optuna.TrialPruned`` works as
well where Optuna is installed).

Two lines make it a tuneyard study::

    train = optuna_compat.objective(objective)      # the entrypoint workers run
    optuna_compat.definition_from(objective, ...)   # the space, read from the suggest calls

``python -m examples.optuna_style`` prints that definition as YAML; it is kept in
``examples/optuna_study.yaml`` (``tuneyard study create -f examples/optuna_study.yaml``).
The study uses ASHA in stopping mode: an Optuna objective keeps no checkpoint, so a paused
trial would have to train again from its first pass.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from examples.mlp_digits import dataset
from tuneyard import optuna_compat
from tuneyard.optuna_compat import TrialPruned
from tuneyard.spec import StudySpec

EPOCHS = 20


def objective(trial: Any) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, x_val, y_train, y_val = dataset()
    classes = np.unique(y_train)

    solver = trial.suggest_categorical("solver", ["adam", "sgd"])
    options: dict[str, Any] = {}
    if solver == "sgd":
        options["momentum"] = trial.suggest_float("momentum", 0.5, 0.99)
        options["nesterovs_momentum"] = trial.suggest_categorical("nesterov", [True, False])
    model = MLPClassifier(
        hidden_layer_sizes=(trial.suggest_int("units", 16, 256, log=True),),
        activation=trial.suggest_categorical("activation", ["relu", "tanh"]),
        solver=solver,
        learning_rate_init=trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        alpha=trial.suggest_float("l2", 1e-6, 1e-2, log=True),
        batch_size=64,
        random_state=trial.number,
        **options,
    )

    error = 1.0
    for epoch in range(EPOCHS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.partial_fit(x_train, y_train, classes=classes)
        error = 1.0 - model.score(x_val, y_val)
        trial.report(error, epoch)
        if trial.should_prune():
            raise TrialPruned()
    return error


# The study's entrypoint: "examples.optuna_style:train".
train = optuna_compat.objective(objective)


def definition() -> StudySpec:
    """The study definition of ``examples/optuna_study.yaml``, derived from ``objective``."""
    return optuna_compat.definition_from(
        objective,
        name="optuna-style-digits",
        description="An Optuna objective run unchanged: examples/optuna_style.py",
        metric="val_error",
        max_resource=EPOCHS,
        entrypoint="examples.optuna_style:train",
        sampler={"type": "tpe", "seed": 0},
        limits={"max_trials": 60, "max_concurrent": 4},
    )


if __name__ == "__main__":
    import yaml

    print(
        yaml.safe_dump(definition().model_dump(mode="json", exclude_defaults=True), sort_keys=False)
    )
