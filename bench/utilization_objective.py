"""The objective bench/utilization.py runs: epochs that sleep, a report after each.

It records when each call starts and ends (wall clock) in a file per worker process under
``$TUNEYARD_BENCH_TRACE``, so the benchmark can tell the time spent inside the objective from
the time a worker spends between two of them.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

EPOCH_SECONDS = float(os.environ.get("TUNEYARD_BENCH_EPOCH", "0.2"))


def train(trial: Any) -> None:
    start = time.time()
    try:
        for epoch in trial.epochs():
            time.sleep(EPOCH_SECONDS)
            p = trial.params
            loss = (math.log10(p["lr"]) + 2.0) ** 2 / 8 + abs(p["momentum"] - 0.9) + 1.0 / epoch
            trial.report(epoch, loss=loss)
    finally:
        _trace(start, time.time())


def _trace(start: float, end: float) -> None:
    where = os.environ.get("TUNEYARD_BENCH_TRACE")
    if not where:
        return
    name = os.environ.get("TUNEYARD_WORKER_NAME", "?").replace("/", "_")
    with open(Path(where) / f"{name}.{os.getpid()}.trace", "a") as f:
        f.write(f"{start:.6f} {end:.6f}\n")
