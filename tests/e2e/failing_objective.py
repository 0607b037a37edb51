"""An objective whose code is broken: every trial raises the same error before its first
report, as after an edit that renamed a function the objective still calls."""

from __future__ import annotations

from typing import Any


def broken(trial: Any) -> None:
    helpers: Any = object()
    helpers.train_slow(trial.params["x"])  # AttributeError, the same for every trial
