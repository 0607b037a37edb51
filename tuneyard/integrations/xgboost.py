"""XGBoost: a training callback that reports boosting rounds to the trial, and a ``train``
that resumes from the booster a paused job saved.

    from tuneyard.integrations.xgboost import train

    def objective(trial):
        params = {"objective": "multi:softprob", "num_class": 10, "eta": trial.params["eta"]}
        train(trial, params, dtrain, evals=[(dvalid, "valid")], monitor="valid-mlogloss")

The resource is counted in boosting rounds: by default one unit is one round, so a study's
``max_resource: 81`` trains up to 81 trees per class. With ``rounds_per_unit=k`` one unit is
``k`` rounds and the callback reports after every ``k``-th (a study with
``max_resource: 100`` and ``rounds_per_unit=10`` trains up to 1,000 rounds, with rungs in
tens of rounds and a tenth of the reports). The unit is the callback's argument, not the
study's: keep it the same for every job of a study.

``monitor`` names a metric as XGBoost logs it, ``<evals name>-<metric>``: ``valid-mlogloss``
for ``evals=[(dvalid, "valid")]``, ``validation_0-logloss`` for the first ``eval_set`` of the
scikit-learn wrapper. Every metric of every evaluation set is reported beside it.

On ``pause`` the callback saves the booster with its own ``save_model`` (``model.ubj``,
XGBoost's binary JSON; name it ``.json`` for text) through ``trial.save_with`` and stops the
training; on ``complete`` it saves it as well, which the worker keeps as the trial's model;
on ``stop`` it only stops. A resumed job loads it (:func:`restore`), checks that it holds
``resource_from`` units of rounds, and trains the rest, so its first report is the unit
after the paused one.

With the scikit-learn wrapper, pass the callback to the estimator and the restored booster
to ``fit``, for the remaining rounds::

    booster = restore(trial)
    done = int(trial.resource_from)
    model = XGBClassifier(n_estimators=int(trial.resource_to) - done, callbacks=[
        TuneyardCallback(trial, "validation_0-mlogloss")])
    model.fit(x, y, eval_set=[(x_val, y_val)], xgb_model=booster)

(that one does not go on past ``resource_to`` when a report promotes the trial on the spot;
:func:`train` does.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import xgboost

from tuneyard.integrations._common import (
    CheckpointMismatch,
    check_restored,
    check_rounds_per_unit,
    report_logged,
    whole_units,
)

CHECKPOINT = "model.ubj"
_WHERE = "XGBoost"


class TuneyardCallback(xgboost.callback.TrainingCallback):
    """Reports ``monitor`` (``<evals name>-<metric>``) once per unit of ``rounds_per_unit``
    rounds, as step ``rounds // rounds_per_unit``, and obeys the answer; ``metric`` is the
    name the study knows it by, when that is not ``monitor``. ``last_value`` is the last
    value reported.

    Before training it checks that the booster it is given holds the rounds the job starts
    from (none for a new trial, ``resource_from`` units for a resumed one): training a
    booster that was not restored would report the paused units a second time."""

    def __init__(
        self,
        trial: Any,
        monitor: str,
        *,
        metric: str | None = None,
        rounds_per_unit: int = 1,
        checkpoint: str = CHECKPOINT,
    ) -> None:
        super().__init__()
        check_rounds_per_unit(rounds_per_unit)
        self.trial = trial
        self.monitor = monitor
        self.metric = metric
        self.rounds_per_unit = rounds_per_unit
        self.checkpoint = checkpoint
        self.last_value: float | None = None
        start, _ = whole_units(trial, _WHERE)
        self.rounds = start * rounds_per_unit  # what the booster should hold now

    def before_training(self, model: Any) -> Any:
        have = model.num_boosted_rounds()
        if have != self.rounds:
            raise CheckpointMismatch(
                f"XGBoost was given a booster with {have} rounds, but the job starts from "
                f"{self.rounds} ({self.rounds // self.rounds_per_unit} units of "
                f"{self.rounds_per_unit}): pass xgb_model=restore(trial)"
            )
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Mapping[str, Any]) -> bool:
        self.rounds = model.num_boosted_rounds()
        if self.rounds % self.rounds_per_unit:
            return False
        step = self.rounds // self.rounds_per_unit
        decision, self.last_value = report_logged(
            self.trial,
            step,
            logged_metrics(evals_log),
            self.monitor,
            self.metric,
            f"XGBoost (round {self.rounds}; name evaluation sets in evals=[(dmatrix, name)])",
        )
        if decision in ("pause", "complete"):
            save(self.trial, model, self.checkpoint)
        # Stop at the end of the job's range even on a "continue" (a scheduler without rungs
        # there): the worker then completes the trial with the last value.
        return decision != "continue" or step >= self.trial.resource_to


def logged_metrics(evals_log: Mapping[str, Mapping[str, Sequence[Any]]]) -> dict[str, Any]:
    """The latest value of every metric XGBoost logged, by ``<evals name>-<metric>``; for
    ``xgboost.cv``'s (mean, std) pairs, the mean."""
    latest: dict[str, Any] = {}
    for data, metrics in evals_log.items():
        for name, history in metrics.items():
            if len(history):
                value = history[-1]
                latest[f"{data}-{name}"] = value[0] if isinstance(value, tuple) else value
    return latest


def save(trial: Any, booster: Any, name: str = CHECKPOINT) -> Path:
    """``booster.save_model`` in the trial's checkpoint directory; XGBoost picks the format
    from ``name``'s suffix (``.ubj`` or ``.json``). Written whole or not at all."""
    return Path(trial.save_with(lambda path: booster.save_model(str(path)), name))


def restore(trial: Any, name: str = CHECKPOINT, *, rounds_per_unit: int = 1) -> Any:
    """The booster a paused job saved, for ``xgb_model=``; None for a job that starts at 0.

    Raises :class:`CheckpointMismatch` when the job resumes but finds no checkpoint, or one
    whose ``num_boosted_rounds()`` is not ``resource_from`` units of ``rounds_per_unit``."""
    check_rounds_per_unit(rounds_per_unit)
    start, _ = whole_units(trial, _WHERE)
    if start == 0:
        return None
    path = Path(trial.checkpoint_dir) / name
    if not path.is_file():
        raise CheckpointMismatch(
            f"the job resumes from unit {start}, but there is no XGBoost checkpoint at {path}"
        )
    booster = xgboost.Booster(model_file=str(path))
    check_restored(booster.num_boosted_rounds(), start * rounds_per_unit, "boosting rounds", path)
    return booster


def train(
    trial: Any,
    params: Mapping[str, Any],
    dtrain: Any,
    *,
    evals: Sequence[tuple[Any, str]],
    monitor: str,
    metric: str | None = None,
    rounds_per_unit: int = 1,
    checkpoint: str = CHECKPOINT,
    callbacks: Sequence[Any] = (),
    **train_kwargs: Any,
) -> Any:
    """``xgboost.train`` over the job's units: from the restored booster (a resumed job) or
    none, for the rounds up to ``resource_to``, with a :class:`TuneyardCallback` first among
    ``callbacks``. Returns the booster.

    A report that promotes the trial on the spot (``continue`` with a larger
    ``resource_to``) reaches past the rounds ``xgboost.train`` was given: training then goes
    on from the booster it returned, up to the new end, with the same callbacks."""
    for taken in ("num_boost_round", "xgb_model"):
        if taken in train_kwargs:
            raise ValueError(f"train sets {taken} from the trial; do not pass {taken}=")
    booster = restore(trial, checkpoint, rounds_per_unit=rounds_per_unit)
    callback = TuneyardCallback(
        trial, monitor, metric=metric, rounds_per_unit=rounds_per_unit, checkpoint=checkpoint
    )
    done = callback.rounds
    while not trial.should_stop:
        _, end = whole_units(trial, _WHERE)
        if done >= end * rounds_per_unit:
            break
        booster = xgboost.train(
            dict(params),
            dtrain,
            num_boost_round=end * rounds_per_unit - done,
            evals=list(evals),
            xgb_model=booster,
            callbacks=[callback, *callbacks],
            **train_kwargs,
        )
        if booster.num_boosted_rounds() <= done:
            break  # no round trained: going round again would change nothing
        done = booster.num_boosted_rounds()
    return booster
