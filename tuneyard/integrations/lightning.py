"""PyTorch Lightning: a callback that reports each validation epoch and obeys the answer.

    from tuneyard.integrations.lightning import TuneyardCallback

    def train(trial):
        callback = TuneyardCallback(trial, monitor="val_loss")
        trainer = lightning.pytorch.Trainer(callbacks=[callback], logger=False)
        callback.fit(trainer, Model(**trial.params), datamodule=Digits())

One resource unit is one epoch, reported as ``trainer.current_epoch + 1`` once the epoch and
its validation have ended: the first epoch is step 1, as :meth:`Trial.epochs` counts. The
callback sets the trainer's ``max_epochs`` to the trial's ``resource_to`` (and raises it when a
report promotes the trial on the spot), so whatever ``max_epochs`` the trainer was given is
replaced.

On ``pause`` the fit stops at the end of that epoch and a Lightning checkpoint
(``trainer.save_checkpoint``: weights, optimizers, LR schedulers, loop counters, callback
states) is written through ``trial.save_with``; on ``complete``, or when the fit runs out of
epochs without a terminal answer, it is written as well, and the worker keeps it as the
trial's model; on ``stop`` the fit only stops. The checkpoint is written once the fit has
ended (``on_train_end``), after the epoch's end hooks and LR scheduler step, so its loop
counters hold whole epochs and a fit resumed from it starts at the next one. Written at the
end of validation instead, as ``ModelCheckpoint`` does, it would hold an epoch Lightning
counts as unfinished: the resumed fit would start inside it and run its end hooks again.

A resumed job (``trial.resource_from > 0``) fits with ``ckpt_path=callback.ckpt_path``, which
:meth:`TuneyardCallback.fit` passes; the first epoch it trains is checked to be the one after
``resource_from``, and a job that restored nothing, or another epoch, fails before training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from tuneyard.integrations._common import CheckpointMismatch, report_logged, whole_units

CHECKPOINT = "lightning.ckpt"
_WHERE = "Lightning"
_TERMINAL = ("pause", "stop", "complete")

log = logging.getLogger("tuneyard.integrations")


class TuneyardCallback(pl.Callback):
    """Reports ``trainer.callback_metrics[monitor]`` once per epoch, when the epoch (its
    validation included) has ended, and acts on the answer. ``metric`` is the name the study
    knows it by, when that is not ``monitor``; the other scalars Lightning logged go beside
    it: the epoch's validation metrics and its training metrics logged with ``on_epoch=True``
    (not those the module logs in its own ``on_train_epoch_end``, which runs after).

    Validation must run once at the end of every epoch (Lightning's default
    ``check_val_every_n_epoch=1``): an epoch that ends unreported raises, since the service
    would otherwise never hear of it. ``last_value`` is the last value reported."""

    def __init__(
        self,
        trial: Any,
        monitor: str = "val_loss",
        *,
        metric: str | None = None,
        checkpoint: str = CHECKPOINT,
    ) -> None:
        super().__init__()
        if not checkpoint.endswith(".ckpt") or "/" in checkpoint:
            raise ValueError(f"checkpoint must be a file name ending in .ckpt, got {checkpoint!r}")
        self.trial = trial
        self.monitor = monitor
        self.metric = metric
        self.checkpoint = checkpoint
        self.last_value: float | None = None
        self._start, _ = whole_units(trial, _WHERE)
        self._validated: int | None = None  # the last epoch validated in this fit
        self._ran_out = False  # the fit reached resource_to on a "continue"

    @property
    def path(self) -> Path:
        """Where the checkpoint is saved, and restored from on a resume."""
        return Path(self.trial.checkpoint_dir) / self.checkpoint

    @property
    def ckpt_path(self) -> str | None:
        """The checkpoint a resumed job fits from (``trainer.fit(..., ckpt_path=...)``), None
        for a job that starts at epoch 0. Raises :class:`CheckpointMismatch` when the job
        resumes but the trial's checkpoint directory holds no Lightning checkpoint."""
        if self._start == 0:
            return None
        if not self.path.is_file():
            raise CheckpointMismatch(
                f"the job resumes after epoch {self._start}, but there is no Lightning "
                f"checkpoint at {self.path}"
            )
        return str(self.path)

    def fit(self, trainer: Any, model: Any, *args: Any, **kwargs: Any) -> float | None:
        """``trainer.fit(model, *args, **kwargs)`` from the trial's checkpoint on a resume,
        with ``max_epochs`` set to the trial's ``resource_to``; returns the last value
        reported (the objective's result when the fit ran out of epochs)."""
        if "ckpt_path" in kwargs:
            raise ValueError("fit resumes from the trial's checkpoint; do not pass ckpt_path=")
        if not any(cb is self for cb in trainer.callbacks):
            raise ValueError("give the trainer this callback: Trainer(callbacks=[callback])")
        trainer.fit_loop.max_epochs = whole_units(self.trial, _WHERE)[1]
        trainer.fit(model, *args, ckpt_path=self.ckpt_path, **kwargs)
        return self.last_value

    # -- Lightning's hooks -----------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.world_size > 1:
            raise ValueError(
                f"the fit runs in {trainer.world_size} processes, and each would report the "
                "same epochs: the callback supports one process (devices=1, num_nodes=1)"
            )
        if trainer.max_steps not in (None, -1):
            raise ValueError(
                f"the trainer's max_steps={trainer.max_steps} would end the fit before the "
                "trial's last epoch; leave it unset (the callback sets max_epochs)"
            )
        for name in ("min_epochs", "min_steps"):
            if getattr(trainer.fit_loop, name):
                raise ValueError(
                    f"the trainer's {name} keeps the fit going after the service says pause "
                    f"or stop; leave {name} unset"
                )
        trainer.fit_loop.max_epochs = whole_units(self.trial, _WHERE)[1]
        self._validated, self._ran_out = None, False

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # After Lightning restored the checkpoint (if any): its loop counters say which
        # epoch the fit trains first.
        if trainer.current_epoch != self._start:
            how = (
                "fit with ckpt_path=callback.ckpt_path (callback.fit does)"
                if trainer.current_epoch == 0
                else "the checkpoint holds another epoch than the one the trial paused at"
            )
            raise CheckpointMismatch(
                f"Lightning is starting epoch {trainer.current_epoch + 1}, but the job resumes "
                f"after epoch {self._start}: {how}"
            )

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return  # the check before the first epoch, or a validate() outside a fit
        epoch = trainer.current_epoch + 1
        if self._validated == epoch:
            raise ValueError(
                f"Lightning validated twice in epoch {epoch}; the callback reports once per "
                "epoch: leave val_check_interval at 1.0 (validation at each epoch's end)"
            )
        self._validated = epoch

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # Reported here rather than at the validation's end: only now does Lightning hold
        # this epoch's own training metrics (``on_epoch=True``), not the previous epoch's.
        epoch = trainer.current_epoch + 1
        if self.trial.should_stop:
            trainer.should_stop = True  # already answered: nothing more to report
            return
        if self._validated != epoch:
            raise ValueError(
                f"epoch {epoch} ended without a validation, so {self.monitor!r} cannot be "
                "reported: give the fit validation data and validate every epoch "
                "(check_val_every_n_epoch=1)"
            )
        decision, self.last_value = report_logged(
            self.trial,
            epoch,
            {name: _scalar(value) for name, value in trainer.callback_metrics.items()},
            self.monitor,
            self.metric,
            f"{_WHERE} (epoch {epoch})",
        )
        if decision in _TERMINAL:
            trainer.should_stop = True
            return
        # A "continue" may promote the trial on the spot: train on to its new end.
        end = whole_units(self.trial, _WHERE)[1]
        trainer.fit_loop.max_epochs = end
        self._ran_out = epoch >= end

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        decision = self.trial.decision
        if decision in ("pause", "complete") or (decision == "continue" and self._ran_out):
            self.trial.save_with(trainer.save_checkpoint, self.checkpoint)
            log.debug(
                "trial %s: Lightning checkpoint saved at epoch %s",
                self.trial.trial_id,
                trainer.current_epoch,
            )


def _scalar(value: Any) -> Any:
    """A one-element tensor as its number: Lightning logs metrics as tensors."""
    if hasattr(value, "numel") and value.numel() == 1:
        return value.item()
    return value
