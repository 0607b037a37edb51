"""Keras 3: a callback that reports each epoch to the trial, and a ``fit`` that resumes.

    from tuneyard.integrations.keras import fit, restore

    def train(trial):
        model = restore(trial)                        # None for a new trial
        if model is None:
            model = build(trial.params)               # a compiled keras.Model
        fit(trial, model, x, y, validation_data=(x_val, y_val), monitor="val_loss")

One resource unit is one epoch, reported as ``epoch index + 1``: the first epoch is step 1,
as :meth:`Trial.epochs` counts. On ``pause`` the callback saves the whole model (weights,
optimizer state, compile settings) in Keras' own ``.keras`` format through
``trial.save_with`` and stops the fit; on ``complete`` it saves it as well, which the worker
keeps as the trial's model; on ``stop`` it only stops. The saved archive also records how
many epochs the model has trained (an entry ``tuneyard.json`` beside Keras' own, which
``keras.models.load_model`` ignores), so :func:`restore` can refuse a checkpoint that does not
hold the epoch the job resumes from.

Keras needs a backend installed and named before it is first imported (``KERAS_BACKEND``:
``torch``, ``jax`` or ``tensorflow``); this module imports Keras, so set it first.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from tuneyard.integrations._common import (
    CheckpointMismatch,
    check_restored,
    report_logged,
    whole_units,
)

CHECKPOINT = "model.keras"
_STAMP = "tuneyard.json"  # the entry of the archive that says how many epochs it holds
_WHERE = "Keras"


class TuneyardCallback(keras.callbacks.Callback):
    """Reports ``logs[monitor]`` at the end of every epoch (step ``epoch + 1``) and obeys the
    answer. ``metric`` is the name the study knows it by, when that is not ``monitor``; the
    other numbers Keras logged (``loss``, ``accuracy``…) go beside it.

    Fit with ``initial_epoch=int(trial.resource_from)`` (:func:`fit` does): a resumed job
    that starts counting from 0 again would report the paused epochs a second time, so each
    epoch is checked to follow the last one reported, and a wrong one raises before it
    trains. ``last_value`` is the last value reported."""

    def __init__(
        self,
        trial: Any,
        monitor: str = "val_loss",
        *,
        metric: str | None = None,
        checkpoint: str = CHECKPOINT,
    ) -> None:
        super().__init__()
        _check_name(checkpoint)
        self.trial = trial
        self.monitor = monitor
        self.metric = metric
        self.checkpoint = checkpoint
        self.last_value: float | None = None
        self._done, _ = whole_units(trial, _WHERE)  # epochs trained so far

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch != self._done:
            raise ValueError(
                f"Keras is starting epoch {epoch + 1}, but the trial goes on after epoch "
                f"{self._done}: fit with initial_epoch={self._done} (int(trial.resource_from) "
                "for a new fit)"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._done = epoch + 1
        decision, self.last_value = report_logged(
            self.trial, step, logs or {}, self.monitor, self.metric, f"{_WHERE} (epoch {step})"
        )
        if decision in ("pause", "complete"):
            save(self.trial, self.model, step, self.checkpoint)
        if decision != "continue" or step >= self.trial.resource_to:
            # The job's range is done even on a "continue" (a scheduler without rungs there):
            # the worker then completes the trial with the last value.
            self.model.stop_training = True


def save(trial: Any, model: Any, epochs: int, name: str = CHECKPOINT) -> Path:
    """Save ``model`` with ``model.save`` in the trial's checkpoint directory, recording that
    it has trained ``epochs`` epochs; written whole or not at all (``trial.save_with``)."""
    _check_name(name)

    def write(path: Path) -> None:
        model.save(path)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(_STAMP, json.dumps({"epochs": epochs}))

    return Path(trial.save_with(write, name))


def restore(trial: Any, name: str = CHECKPOINT, **load_kwargs: Any) -> Any:
    """The model a paused job saved, loaded with ``keras.models.load_model`` (its optimizer
    state included); None for a job that starts from epoch 0, which has nothing to resume.

    Raises :class:`CheckpointMismatch` when the job resumes but finds no checkpoint, or one
    that holds another epoch than ``trial.resource_from``."""
    _check_name(name)
    start, _ = whole_units(trial, _WHERE)
    if start == 0:
        return None
    path = Path(trial.checkpoint_dir) / name
    if not path.is_file():
        raise CheckpointMismatch(
            f"the job resumes from epoch {start}, but there is no Keras checkpoint at {path}"
        )
    check_restored(_epochs_in(path), start, "epochs", path)
    return keras.models.load_model(path, **load_kwargs)


def fit(
    trial: Any,
    model: Any,
    *args: Any,
    monitor: str = "val_loss",
    metric: str | None = None,
    checkpoint: str = CHECKPOINT,
    callbacks: Sequence[Any] = (),
    **fit_kwargs: Any,
) -> float | None:
    """``model.fit(*args, **fit_kwargs)`` over the job's epochs, ``resource_from`` + 1 to
    ``resource_to``, with a :class:`TuneyardCallback` first among ``callbacks``; returns the
    last value reported.

    A report that promotes the trial on the spot (``continue`` with a larger
    ``resource_to``) reaches past the epochs the fit was given: the fit is then run again
    from where it stopped, up to the new end."""
    for taken in ("epochs", "initial_epoch"):
        if taken in fit_kwargs:
            raise ValueError(
                f"fit sets {taken} from the trial's resource range; do not pass {taken}="
            )
    callback = TuneyardCallback(trial, monitor, metric=metric, checkpoint=checkpoint)
    done, _ = whole_units(trial, _WHERE)
    while not trial.should_stop and done < trial.resource_to:
        _, end = whole_units(trial, _WHERE)
        model.fit(
            *args,
            initial_epoch=done,
            epochs=end,
            callbacks=[callback, *callbacks],
            **fit_kwargs,
        )
        if trial.last_step is None or int(trial.last_step) <= done:
            break  # the fit ran no epoch (an empty dataset): nothing more would change
        done = int(trial.last_step)
    return callback.last_value


def _epochs_in(path: Path) -> int:
    """How many epochs the archive at ``path`` says its model trained."""
    try:
        with zipfile.ZipFile(path) as archive:
            stamp = json.loads(archive.read(_STAMP))
        return int(stamp["epochs"])
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise CheckpointMismatch(
            f"{path} is not a Keras checkpoint saved by tuneyard.integrations.keras "
            f"(it does not say how many epochs it holds: {exc})"
        ) from exc


def _check_name(name: str) -> None:
    if not name.endswith(".keras"):
        raise ValueError(
            f"checkpoint must be a file name ending in .keras (Keras 3's format), got {name!r}"
        )
