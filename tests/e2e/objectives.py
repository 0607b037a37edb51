"""Objectives for end-to-end tests: fast, deterministic, and strict about resuming."""

from __future__ import annotations

import math
import time
from typing import Any


def curve(trial: Any) -> None:
    """A learning curve set by ``x``; checks its checkpoint matches where the job starts."""
    state = trial.load(default={"epochs": 0, "trace": []})
    if state["epochs"] != int(trial.resource_from):
        raise RuntimeError(
            f"checkpoint holds {state['epochs']} epochs but the job starts at {trial.resource_from}"
        )
    for epoch in trial.epochs():
        time.sleep(0.02)
        state["epochs"] = epoch
        state["trace"].append(epoch)
        x = trial.params["x"]
        trial.report(epoch, loss=(x - 0.3) ** 2 + 0.5 / math.sqrt(epoch))
    trial.save(state)
