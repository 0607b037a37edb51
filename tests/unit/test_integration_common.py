"""What every framework callback reports beside its monitored metric."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from tuneyard.integrations._common import MissingMetric, report_logged


class Recorder:
    def __init__(self) -> None:
        self.reports: list[tuple[int, dict[str, Any]]] = []

    def report(self, step: int, **metrics: Any) -> str:
        self.reports.append((step, metrics))
        return "continue"


def test_one_element_tensors_and_arrays_are_reported_as_numbers() -> None:
    trial = Recorder()
    logged = {
        "val_loss": torch.tensor(0.25),
        "train_loss": torch.tensor([0.5]),
        "acc": np.float32(0.75),
        "lr": np.array([0.01]),
        "epoch": 7,
        "step": 70,  # report()'s own argument: left out
    }
    decision, value = report_logged(trial, 3, logged, "val_loss", None, "test")
    assert decision == "continue" and value == pytest.approx(0.25)
    step, metrics = trial.reports[0]
    assert step == 3
    assert metrics == pytest.approx(
        {"val_loss": 0.25, "train_loss": 0.5, "acc": 0.75, "lr": 0.01, "epoch": 7.0}
    )
    assert all(type(v) is float for v in metrics.values())


def test_what_decides_nothing_is_left_out_but_the_monitored_nan_goes_as_is() -> None:
    trial = Recorder()
    logged = {
        "loss": float("nan"),
        "grad": torch.ones(3),  # not one number
        "inf": float("inf"),
        "flag": True,
        "name": "adam",
    }
    report_logged(trial, 1, logged, "loss", "val_error", "test")
    _, metrics = trial.reports[0]
    assert list(metrics) == ["val_error"] and math.isnan(metrics["val_error"])


def test_a_monitor_that_was_not_logged_names_what_was() -> None:
    with pytest.raises(MissingMetric, match=r"no 'val_los'.*val_loss"):
        report_logged(Recorder(), 1, {"val_loss": 0.1}, "val_los", None, "Keras")
