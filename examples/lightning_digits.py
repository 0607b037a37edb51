"""An MLP on scikit-learn's bundled digits, trained with PyTorch Lightning under a trial.

The training loop is Lightning's own: :class:`tuneyard.integrations.lightning.TuneyardCallback`
reports ``val_loss`` after each epoch's validation, stops the fit when the service pauses or
stops the trial, and saves a Lightning checkpoint on a pause, which a promoted trial resumes
from on whichever worker runs it. Hyperparameters: ``lr``, ``hidden``, ``dropout``,
``weight_decay``, ``batch_size``; ``val_acc`` is logged beside the loss.

    pip install 'tuneyard[lightning]'
    tuneyard study create -f examples/lightning_study.yaml
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import lightning.pytorch as pl
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from tuneyard.integrations.lightning import TuneyardCallback


@lru_cache(maxsize=1)
def _arrays() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return tuple(train_test_split(x, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


class Digits(pl.LightningDataModule):
    """The digits, 75/25 split; training batches shuffled with a seeded generator."""

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seed = seed

    def _data(self, train: bool) -> TensorDataset:
        x_train, x_val, y_train, y_val = _arrays()
        x, y = (x_train, y_train) if train else (x_val, y_val)
        return TensorDataset(torch.tensor(x), torch.tensor(y))

    def train_dataloader(self) -> DataLoader[Any]:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(self._data(True), batch_size=self.batch_size, shuffle=True, generator=gen)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self._data(False), batch_size=512)


class DigitsMLP(pl.LightningModule):
    def __init__(
        self, lr: float = 1e-2, hidden: int = 64, dropout: float = 0.1, weight_decay: float = 0.0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(64, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(dropout),
            torch.nn.Linear(hidden, 10),
        )

    def training_step(self, batch: Any, _: int) -> Any:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, _: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


def build(params: dict[str, Any], seed: int) -> DigitsMLP:
    torch.manual_seed(seed)  # the initial weights, and the dropout masks that follow
    return DigitsMLP(
        lr=float(params.get("lr", 1e-2)),
        hidden=int(params.get("hidden", 64)),
        dropout=float(params.get("dropout", 0.1)),
        weight_decay=float(params.get("weight_decay", 0.0)),
    )


def fit(trial: Any, model: pl.LightningModule) -> float | None:
    """Fit ``model`` over the trial's epochs; returns the last ``val_loss`` reported."""
    callback = TuneyardCallback(trial, monitor="val_loss")
    trainer = pl.Trainer(
        callbacks=[callback],
        accelerator="auto",
        devices=1,
        logger=False,  # the trial's reports are the record
        enable_checkpointing=False,  # the callback keeps the checkpoint a resume needs
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    data = Digits(int(trial.params.get("batch_size", 64)), seed=trial.number)
    return callback.fit(trainer, model, datamodule=data)


def train(trial: Any) -> float | None:
    return fit(trial, build(trial.params, seed=trial.number))
