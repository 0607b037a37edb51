"""LightGBM: a callback that reports boosting rounds to the trial, and a ``train`` that
resumes from the model file a paused job saved.

    from tuneyard.integrations.lightgbm import train

    def objective(trial):
        params = {"objective": "multiclass", "num_class": 10, "learning_rate": ...}
        train(trial, params, train_set, valid_sets=[valid_set], valid_names=["valid"],
              monitor="valid-multi_logloss")

The resource is counted in boosting rounds, as in :mod:`tuneyard.integrations.xgboost`: one
unit is one round by default, ``rounds_per_unit=k`` reports after every ``k``-th as step
``rounds // k`` (keep it the same for every job of a study).

``monitor`` names a metric as ``<dataset name>-<metric>``: the dataset name is the one given
in ``valid_names`` (LightGBM's default is ``valid_0``, and ``training`` for the training set
when it is among ``valid_sets``), the metric is LightGBM's (``multi_logloss``, ``l2``,
``auc``…). Every metric of every evaluated set is reported beside it.

On ``pause`` the callback saves the booster with its own ``save_model`` (text, all rounds)
through ``trial.save_with`` and ends training by raising LightGBM's
``EarlyStopException`` (the booster then keeps every round it trained); on ``complete`` it
saves it as well, which the worker keeps as the trial's model; on ``stop`` it only ends.
A resumed job passes that file as ``init_model=`` (:func:`restore` checks that it holds
``resource_from`` units of rounds) and trains the rest, so its first report is the unit
after the paused one. It is a callback for ``lightgbm.train`` and the scikit-learn
wrapper's ``fit(callbacks=[...], init_model=...)``, not for ``lightgbm.cv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightgbm

from tuneyard.integrations._common import (
    CheckpointMismatch,
    check_restored,
    check_rounds_per_unit,
    report_logged,
    whole_units,
)

CHECKPOINT = "model.txt"
_WHERE = "LightGBM"


class TuneyardCallback:
    """Reports ``monitor`` (``<dataset name>-<metric>``) once per unit of
    ``rounds_per_unit`` rounds, as step ``rounds // rounds_per_unit``, and obeys the answer;
    ``metric`` is the name the study knows it by, when that is not ``monitor``.
    ``last_value`` is the last value reported.

    At its first round it checks that training started from the rounds the job starts from
    (none for a new trial, ``resource_from`` units for a resumed one): a model that was not
    restored would report the paused units a second time."""

    before_iteration = False

    def __init__(
        self,
        trial: Any,
        monitor: str,
        *,
        metric: str | None = None,
        rounds_per_unit: int = 1,
        checkpoint: str = CHECKPOINT,
    ) -> None:
        check_rounds_per_unit(rounds_per_unit)
        self.trial = trial
        self.monitor = monitor
        self.metric = metric
        self.rounds_per_unit = rounds_per_unit
        self.checkpoint = checkpoint
        self.last_value: float | None = None
        start, _ = whole_units(trial, _WHERE)
        self.rounds = start * rounds_per_unit  # what the booster should hold now
        self._begun_at: int | None = None  # the begin_iteration of the training under way
        # LightGBM runs callbacks by this order (read from the instance); its own early
        # stopping is 30: a pause or stop ends training before early stopping sees the round.
        self.order = 25

    def __call__(self, env: Any) -> None:
        if env.begin_iteration != self._begun_at:
            # A new lightgbm.train: it must go on from the rounds reported so far.
            if env.begin_iteration != self.rounds:
                raise CheckpointMismatch(
                    f"LightGBM is training from round {env.begin_iteration}, but the job "
                    f"starts from {self.rounds} ({self.rounds // self.rounds_per_unit} units "
                    f"of {self.rounds_per_unit}): pass init_model=restore(trial)"
                )
            self._begun_at = env.begin_iteration
        self.rounds = env.iteration + 1
        if self.rounds % self.rounds_per_unit:
            return
        step = self.rounds // self.rounds_per_unit
        decision, self.last_value = report_logged(
            self.trial,
            step,
            logged_metrics(env.evaluation_result_list or []),
            self.monitor,
            self.metric,
            f"LightGBM (round {self.rounds}; evaluate with valid_sets= and valid_names=)",
        )
        if decision in ("pause", "complete"):
            save(self.trial, env.model, self.checkpoint)
        # Stop at the end of the job's range even on a "continue" (a scheduler without rungs
        # there): the worker then completes the trial with the last value.
        if decision != "continue" or step >= self.trial.resource_to:
            raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list)


def logged_metrics(results: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """The round's evaluation results by ``<dataset name>-<metric>``: LightGBM gives them as
    (dataset, metric, value, higher is better) tuples."""
    return {f"{item[0]}-{item[1]}": item[2] for item in results}


def save(trial: Any, booster: Any, name: str = CHECKPOINT) -> Path:
    """``booster.save_model`` in the trial's checkpoint directory, every round of it (not only
    up to a ``best_iteration``). Written whole or not at all."""
    return Path(trial.save_with(lambda path: booster.save_model(path, num_iteration=-1), name))


def restore(trial: Any, name: str = CHECKPOINT, *, rounds_per_unit: int = 1) -> Path | None:
    """The model file a paused job saved, for ``init_model=``; None for a job that starts
    at 0.

    Raises :class:`CheckpointMismatch` when the job resumes but finds no checkpoint, or one
    that does not hold ``resource_from`` units of ``rounds_per_unit`` rounds."""
    check_rounds_per_unit(rounds_per_unit)
    start, _ = whole_units(trial, _WHERE)
    if start == 0:
        return None
    path = Path(trial.checkpoint_dir) / name
    if not path.is_file():
        raise CheckpointMismatch(
            f"the job resumes from unit {start}, but there is no LightGBM checkpoint at {path}"
        )
    rounds = lightgbm.Booster(model_file=path).current_iteration()
    check_restored(rounds, start * rounds_per_unit, "boosting rounds", path)
    return path


def train(
    trial: Any,
    params: Mapping[str, Any],
    train_set: Any,
    *,
    valid_sets: Sequence[Any],
    valid_names: Sequence[str] | None = None,
    monitor: str,
    metric: str | None = None,
    rounds_per_unit: int = 1,
    checkpoint: str = CHECKPOINT,
    callbacks: Sequence[Any] = (),
    **train_kwargs: Any,
) -> Any:
    """``lightgbm.train`` over the job's units: from the restored model (a resumed job) or
    none, for the rounds up to ``resource_to``, with a :class:`TuneyardCallback` among
    ``callbacks``. Returns the booster.

    A report that promotes the trial on the spot (``continue`` with a larger
    ``resource_to``) reaches past the rounds ``lightgbm.train`` was given: training then goes
    on from the booster it returned, up to the new end. LightGBM can only do that with the
    datasets' raw data, so this keeps it (``free_raw_data=False``) on datasets not built yet,
    and refuses ones already built without it."""
    for taken in ("num_boost_round", "init_model"):
        if taken in train_kwargs:
            raise ValueError(f"train sets {taken} from the trial; do not pass {taken}=")
    for i, dataset in enumerate([train_set, *valid_sets]):
        _keep_raw_data(dataset, "train_set" if i == 0 else f"valid_sets[{i - 1}]")
    init: Any = restore(trial, checkpoint, rounds_per_unit=rounds_per_unit)
    callback = TuneyardCallback(
        trial, monitor, metric=metric, rounds_per_unit=rounds_per_unit, checkpoint=checkpoint
    )
    done = callback.rounds
    booster = None
    while not trial.should_stop:
        _, end = whole_units(trial, _WHERE)
        if done >= end * rounds_per_unit:
            break
        booster = lightgbm.train(
            dict(params),
            train_set,
            num_boost_round=end * rounds_per_unit - done,
            valid_sets=list(valid_sets),
            valid_names=None if valid_names is None else list(valid_names),
            init_model=init,
            callbacks=[callback, *callbacks],
            **train_kwargs,
        )
        if booster.current_iteration() <= done:
            break  # no round trained: going round again would change nothing
        done = booster.current_iteration()
        init = booster
    return booster


def _keep_raw_data(dataset: Any, name: str) -> None:
    """Continued training sets the init scores from the raw data: keep it, or say why not."""
    if dataset.free_raw_data is False:
        return
    if getattr(dataset, "_handle", None) is None:
        dataset.free_raw_data = False
        return
    if dataset.data is None:
        raise ValueError(
            f"{name} was built and its raw data freed, which training on after an "
            "on-the-spot promotion needs: create it with lightgbm.Dataset(..., "
            "free_raw_data=False), or pass it before it is used"
        )
