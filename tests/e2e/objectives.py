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
        # Later trials are worse, so a new trial is rarely the one promoted on the spot:
        # paused trials get promoted through `next`, on whichever worker asks first.
        x = trial.params["x"]
        loss = 0.01 * trial.number + 0.001 * (x - 0.3) ** 2 + 0.5 / math.sqrt(epoch)
        trial.report(epoch, loss=loss)
    trial.save(state)


def slow_curve(trial: Any) -> None:
    """``curve`` with epochs long enough for a fault to land in the middle of a trial."""
    state = trial.load(default={"epochs": 0})
    if state["epochs"] != int(trial.resource_from):
        raise RuntimeError(
            f"checkpoint holds {state['epochs']} epochs but the job starts at {trial.resource_from}"
        )
    print(f"trial {trial.number} starts at epoch {state['epochs']}")
    for epoch in trial.epochs():
        time.sleep(0.25)
        state["epochs"] = epoch
        print(f"epoch {epoch}")
        loss = 0.01 * trial.number + (trial.params["x"] - 0.3) ** 2 + 0.5 / math.sqrt(epoch)
        trial.report(epoch, loss=loss)
    trial.save(state)


def raises(trial: Any) -> None:
    trial.report(1, loss=0.5)
    raise ValueError(f"bad batch in trial {trial.number}")


def hangs(trial: Any) -> None:
    trial.report(1, loss=0.5)
    print("waiting for a lock that never comes")
    time.sleep(3600)


def reports_nan(trial: Any) -> None:
    trial.report(1, loss=0.5)
    trial.report(2, loss=float("nan"))


def recorded_curve(trial: Any) -> None:
    """Slow epochs whose every report, with its answer, goes to the JSON-lines file named by
    TUNEYARD_TEST_RECORD: what each attempt sent and what it was told. Each attempt's values
    differ (the attempt is in them), so the stored curve says whose it is."""
    import json
    import os

    record = os.environ["TUNEYARD_TEST_RECORD"]
    for epoch in trial.epochs():
        time.sleep(0.4)
        loss = round(1.0 / epoch + 0.001 * trial.attempt, 6)
        decision = trial.report(epoch, loss=loss)
        line = {
            "attempt": trial.attempt,
            "step": epoch,
            "loss": loss,
            "decision": decision,
            "stale": trial.stale is not None,
            "at": time.time(),
        }
        with open(record, "a") as f:
            f.write(json.dumps(line) + "\n")
        if trial.should_stop:
            return


def trade_off(trial: Any) -> None:
    """Two objectives and a constrained metric: a wider model (``width``) learns to a lower
    error but answers slower and takes more memory; ``lr`` sets how fast it gets there.
    Strict about resuming, as ``curve`` is."""
    state = trial.load(default={"epochs": 0})
    if state["epochs"] != int(trial.resource_from):
        raise RuntimeError(
            f"checkpoint holds {state['epochs']} epochs but the job starts at {trial.resource_from}"
        )
    width, lr = trial.params["width"], trial.params["lr"]
    for epoch in trial.epochs():
        time.sleep(0.02)
        state["epochs"] = epoch
        error = 0.05 + 1.0 / width + abs(math.log10(lr) + 2) * 0.1 + 0.5 / math.sqrt(epoch)
        trial.report(
            epoch,
            val_error=error,
            latency_ms=2.0 + 0.05 * width,
            gpu_mem_gb=4 + 0.1 * width,
        )
    trial.save(state)


# Per fold, how hard it is for every configuration: what racing's paired test cancels.
FOLD_SHIFT = (0.0, 0.06, -0.04, 0.09, 0.02)


def cross_validated(trial: Any) -> None:
    """One fold of a 5-fold cross-validation: the configuration's quality (``x`` near 0.3 is
    best) plus the fold's difficulty, approached as 1/sqrt(epoch). Strict about resuming:
    each fold resumes from its own checkpoint, and the fold it holds must be the job's."""
    if trial.fold is None:
        raise RuntimeError("cross_validated needs evaluation.folds")
    state = trial.load(default={"epochs": 0, "fold": trial.fold})
    if state["epochs"] != int(trial.resource_from) or state["fold"] != trial.fold:
        raise RuntimeError(
            f"checkpoint holds fold {state['fold']} at {state['epochs']} epochs but the job is "
            f"fold {trial.fold} from {trial.resource_from}"
        )
    x = trial.params["x"]
    for epoch in trial.epochs():
        time.sleep(0.02)
        state["epochs"] = epoch
        # A configuration's own noise on each fold, fixed by its x and the fold.
        noise = 0.01 * math.sin(1000 * x + 7 * trial.fold)
        loss = (x - 0.3) ** 2 + FOLD_SHIFT[trial.fold] + noise + 0.5 / math.sqrt(epoch)
        trial.report(epoch, loss=loss)
    trial.save(state)


def population_member(trial: Any) -> None:
    """A member of the PBT paper's toy population: theta descends the surrogate weighted by
    the mutable ``h0``, ``h1``; the loss is the true quadratic. Strict about its checkpoint:
    it must hold the epoch the job starts from, and a clone's first report is computed from
    the donor's theta there, so its curve continues the donor's. Each report says whose
    checkpoint the job restored (``restored_from``) and the loss stored in it
    (``restored_loss``), for the test to hold against the donor's report."""
    state = trial.load(default=None)
    if state is None:
        if trial.resource_from != 0:
            raise RuntimeError(f"no checkpoint, but the job starts at {trial.resource_from}")
        state = {"owner": trial.trial_id, "epochs": 0, "theta": [0.9, 0.9], "loss": None}
    elif state["epochs"] != int(trial.resource_from):
        raise RuntimeError(
            f"checkpoint of trial {state['owner']} holds epoch {state['epochs']} but the job "
            f"starts at {trial.resource_from}"
        )
    restored_from, restored_loss = state["owner"], state["loss"]
    h = (trial.params["h0"], trial.params["h1"])
    for epoch in trial.epochs():
        time.sleep(0.05)
        state["theta"] = [t - 0.2 * 2 * w * t for t, w in zip(state["theta"], h, strict=True)]
        state["epochs"] = epoch
        state["loss"] = state["theta"][0] ** 2 + state["theta"][1] ** 2
        state["owner"] = trial.trial_id
        trial.report(
            epoch,
            loss=state["loss"],
            restored_from=float(restored_from),
            restored_loss=restored_loss,
        )
    trial.save(state)
