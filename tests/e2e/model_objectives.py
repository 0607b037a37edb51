"""Objectives of the end-to-end tests of checkpoints worth keeping: they save every epoch,
and say in their reports which epoch they restored."""

from __future__ import annotations

import math
import time
from typing import Any


def saves_every_epoch(trial: Any) -> None:
    """Saves its state every epoch (before the epoch's report); each report's ``restored``
    metric is the epoch its job restored from its checkpoint (0: none)."""
    state = trial.load(default={"epoch": 0})
    restored = state["epoch"]
    if restored != int(trial.resource_from):
        raise RuntimeError(
            f"checkpoint at epoch {restored}, the job starts at {trial.resource_from}"
        )
    for epoch in trial.epochs():
        time.sleep(0.4)
        state["epoch"] = epoch
        trial.save(state)
        loss = (trial.params["x"] - 0.3) ** 2 + 0.5 / math.sqrt(epoch)
        trial.report(epoch, loss=loss, restored=restored)


def torch_model(trial: Any) -> None:
    """A tiny PyTorch model whose weights are a function of ``x`` and the epoch, saved as a
    state_dict (torch's format) at the end of every epoch."""
    import torch

    model = torch.nn.Linear(2, 1)
    saved = trial.load("model.pt")
    if saved is not None:
        model.load_state_dict(saved["state_dict"])
    for epoch in trial.epochs():
        with torch.no_grad():
            model.weight.fill_(trial.params["x"] * epoch)
            model.bias.fill_(float(epoch))
        trial.save({"state_dict": model.state_dict(), "epoch": epoch}, name="model.pt")
        trial.report(epoch, loss=(trial.params["x"] - 0.3) ** 2 + 1.0 / epoch)
