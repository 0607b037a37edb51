"""Hugging Face Transformers: a ``TrainerCallback`` that reports each epoch's evaluation and
obeys the answer, resuming from the ``Trainer``'s own checkpoints.

    from tuneyard.integrations.transformers import TuneyardCallback

    def train(trial):
        callback = TuneyardCallback(trial, monitor="eval_loss")
        args = TrainingArguments(
            output_dir=str(trial.checkpoint_dir / "run"),
            num_train_epochs=9,              # the study's max_resource
            eval_strategy="epoch",
            save_strategy="no",
            report_to="none",
            learning_rate=trial.params["lr"],
        )
        trainer = Trainer(model, args, train_dataset=train, eval_dataset=val,
                          callbacks=[callback])
        return callback.train(trainer)

One resource unit is one epoch, reported as the trainer's ``state.epoch`` at the evaluation
that ends it (``eval_strategy="epoch"`` is required): the first epoch is step 1, as
:meth:`Trial.epochs` counts. Metric names are the Trainer's, ``eval_`` prefix included
(``eval_loss``, ``eval_accuracy`` from ``compute_metrics``).

``num_train_epochs`` is the study's ``max_resource`` in every job, not the job's end: the
Trainer sizes its learning-rate schedule from it, and a schedule that changed length between
a paused job and its resume would not continue the one in the checkpoint. The callback ends
training at the trial's ``resource_to`` itself (and trains on when a report promotes the
trial on the spot); ``max_steps`` must be left unset, since it overrides the epochs.

On ``pause`` the callback asks the Trainer to save its checkpoint at the end of that epoch
(``control.should_save``: model, optimizer, scheduler, RNG and trainer state, written by the
Trainer as for any of its checkpoints) and to stop; the folder the Trainer wrote in
``output_dir`` is then moved into the trial's checkpoint directory with ``trial.save_with``
(copied instead, when ``save_strategy`` is not ``"no"`` and the Trainer may still need its own
checkpoints, say for ``load_best_model_at_end``). On ``complete``, or when training reaches
``resource_to`` without a terminal answer, it is saved as well and the worker keeps it as the
trial's model; on ``stop`` training only stops.

A resumed job (``trial.resource_from > 0``) trains with
``trainer.train(resume_from_checkpoint=callback.resume_from)``, which
:meth:`TuneyardCallback.train` passes; the checkpoint's epoch is checked against
``resource_from`` before it is loaded, and training that starts at another epoch fails before
its first step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import transformers
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from tuneyard.integrations._common import CheckpointMismatch, report_logged, whole_units

CHECKPOINT = "trainer-checkpoint"
_WHERE = "Transformers"
_TERMINAL = ("pause", "stop", "complete")
_STATE = "trainer_state.json"  # the file of a Trainer checkpoint that holds its counters


def _value(option: Any) -> str:
    """An option of ``TrainingArguments`` as the string it was given as (they are enums)."""
    return str(getattr(option, "value", option))


class TuneyardCallback(transformers.TrainerCallback):
    """Reports ``metrics[monitor]`` of each epoch's evaluation and acts on the answer.
    ``metric`` is the name the study knows it by, when that is not ``monitor``; the other
    numbers of the evaluation (``eval_runtime``, ``compute_metrics``' results) go beside it.
    ``last_value`` is the last value reported.

    An evaluation outside :meth:`Trainer.train` (a ``trainer.evaluate()`` afterwards)
    reports nothing."""

    def __init__(
        self,
        trial: Any,
        monitor: str = "eval_loss",
        *,
        metric: str | None = None,
        checkpoint: str = CHECKPOINT,
    ) -> None:
        if not checkpoint or "/" in checkpoint or checkpoint.startswith("."):
            raise ValueError(f"checkpoint must be a plain folder name, got {checkpoint!r}")
        self.trial = trial
        self.monitor = monitor
        self.metric = metric
        self.checkpoint = checkpoint
        self.last_value: float | None = None
        self._start, _ = whole_units(trial, _WHERE)
        self._training = False
        self._reported: int | None = None  # the last epoch reported by this job
        self._save_pending = False

    @property
    def path(self) -> Path:
        """Where the checkpoint folder is kept, and resumed from."""
        return Path(self.trial.checkpoint_dir) / self.checkpoint

    @property
    def resume_from(self) -> str | None:
        """The checkpoint a resumed job trains from (``trainer.train(resume_from_checkpoint=
        ...)``), None for a job that starts at epoch 0. Raises :class:`CheckpointMismatch` when
        the job resumes but finds no Trainer checkpoint, or one of another epoch."""
        if self._start == 0:
            return None
        state = self.path / _STATE
        if not state.is_file():
            raise CheckpointMismatch(
                f"the job resumes after epoch {self._start}, but there is no Trainer "
                f"checkpoint at {self.path} (no {_STATE})"
            )
        try:
            epoch = float(json.loads(state.read_text())["epoch"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointMismatch(f"{state} does not say which epoch it holds: {exc}") from exc
        if abs(epoch - self._start) > 1e-6:
            raise CheckpointMismatch(
                f"the Trainer checkpoint at {self.path} holds epoch {epoch:g}, but the job "
                f"resumes after epoch {self._start}"
            )
        return str(self.path)

    def train(self, trainer: Any, **kwargs: Any) -> float | None:
        """``trainer.train(**kwargs)`` from the trial's checkpoint on a resume; returns the
        last value reported (the objective's result when training reached the job's end)."""
        if "resume_from_checkpoint" in kwargs:
            raise ValueError(
                "train resumes from the trial's checkpoint; do not pass resume_from_checkpoint="
            )
        if not any(cb is self for cb in trainer.callback_handler.callbacks):
            raise ValueError("give the Trainer this callback: Trainer(..., callbacks=[callback])")
        trainer.train(resume_from_checkpoint=self.resume_from, **kwargs)
        return self.last_value

    # -- the Trainer's events --------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        _check_arguments(args, self.trial)
        # After the Trainer restored the checkpoint (if any): its state says where it starts.
        started = float(state.epoch or 0)
        if abs(started - self._start) > 1e-6:
            how = (
                "train with resume_from_checkpoint=callback.resume_from (callback.train does)"
                if started == 0
                else "the checkpoint holds another epoch than the one the trial paused at"
            )
            raise CheckpointMismatch(
                f"the Trainer starts after epoch {started:g}, but the job resumes after epoch "
                f"{self._start}: {how}"
            )
        # A control restored with the checkpoint (restore_callback_states_from_checkpoint)
        # still says stop, as it did when the paused job saved it.
        control.should_training_stop = False
        self._training, self._reported, self._save_pending = True, None, False
        return control

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        if not self._training:
            return control
        epoch = round(float(state.epoch or 0))
        if abs(float(state.epoch or 0) - epoch) > 1e-6 or epoch == self._reported:
            raise ValueError(
                f"the Trainer evaluated at epoch {state.epoch:g}; the callback reports once at "
                'the end of each epoch: set eval_strategy="epoch"'
            )
        if self.trial.should_stop:
            control.should_training_stop = True  # already answered: nothing more to report
            return control
        logged = {k: v for k, v in (metrics or {}).items() if k != "epoch"}
        decision, self.last_value = report_logged(
            self.trial, epoch, logged, self.monitor, self.metric, f"{_WHERE} (epoch {epoch})"
        )
        self._reported = epoch
        # A "continue" may promote the trial on the spot: resource_to is read again.
        end = whole_units(self.trial, _WHERE)[1]
        if decision == "continue" and end > args.num_train_epochs:
            raise ValueError(
                f"the trial was promoted to {end} epochs, past TrainingArguments."
                f"num_train_epochs={args.num_train_epochs:g}: give it the study's max_resource"
            )
        ran_out = decision == "continue" and epoch >= end
        if decision in ("pause", "complete") or ran_out:
            control.should_save = True
            self._save_pending = True
        if decision in _TERMINAL or ran_out:
            control.should_training_stop = True
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if not self._save_pending:
            return control
        self._save_pending = False
        written = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not (written / _STATE).is_file():
            raise FileNotFoundError(f"the Trainer wrote no checkpoint at {written}")
        keep_own = _value(args.save_strategy) != "no"

        def write(path: Path) -> None:
            if keep_own:
                shutil.copytree(written, path)
            else:
                shutil.move(str(written), str(path))

        self.trial.save_with(write, self.checkpoint)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._training = False
        return control


def _check_arguments(args: Any, trial: Any) -> None:
    """The ``TrainingArguments`` the callback needs, each refused with what to set."""
    if args.world_size > 1:
        raise ValueError(
            f"training runs in {args.world_size} processes, and each would report the same "
            "epochs: the callback supports one process (no torchrun or accelerate launch)"
        )
    if _value(args.eval_strategy) != "epoch":
        raise ValueError(
            f'TrainingArguments.eval_strategy is "{_value(args.eval_strategy)}": the callback '
            'reports each epoch\'s evaluation, set eval_strategy="epoch"'
        )
    if args.max_steps is not None and args.max_steps > 0:
        raise ValueError(
            f"TrainingArguments.max_steps={args.max_steps} overrides num_train_epochs; leave "
            "it unset and give num_train_epochs the study's max_resource"
        )
    _, end = whole_units(trial, _WHERE)
    if args.num_train_epochs < end:
        raise ValueError(
            f"TrainingArguments.num_train_epochs={args.num_train_epochs:g} ends before the "
            f"trial's resource_to ({end}): give it the study's max_resource"
        )
