"""Run an Optuna-style objective under tuneyard, without Optuna installed.

::

    from tuneyard import optuna_compat

    def objective(trial):                       # unchanged Optuna code
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        for step in range(20):
            score = train_one_epoch(lr)
            trial.report(score, step)
            if trial.should_prune():
                raise optuna_compat.TrialPruned()  # or optuna.TrialPruned
        return score

    train = optuna_compat.objective(objective)  # the study's entrypoint: "mymodule:train"
    definition = optuna_compat.definition_from(objective, name="lr", max_resource=20,
                                               entrypoint="mymodule:train")

:func:`objective` turns the function into an entrypoint whose suggest calls return the study's
values; :func:`space_from` and :func:`definition_from` read the study's space from the
objective's suggest calls. Optuna is imported by neither; an ``optuna.TrialPruned`` the
objective raises is understood all the same.
"""

from tuneyard.optuna_compat.space import (
    ConditionalSpaceError,
    RecordingTrial,
    definition_from,
    space_from,
)
from tuneyard.optuna_compat.suggest import SpaceMismatch
from tuneyard.optuna_compat.trial import CompatTrial, TrialPruned, is_pruned, objective

__all__ = [
    "CompatTrial",
    "ConditionalSpaceError",
    "RecordingTrial",
    "SpaceMismatch",
    "TrialPruned",
    "definition_from",
    "is_pruned",
    "objective",
    "space_from",
]
