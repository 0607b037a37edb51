"""Run assignments: load the objective, restore, run, then pause, complete or fail the trial.

``run_assignment`` is one job; ``work_loop`` asks for jobs until the study is over;
``run_local_workers`` runs that loop in a few processes on this machine (no Redis needed).

The parts live in their own modules; this one names them all in one place:

- :mod:`tuneyard.worker.assignment`: one job, from restore to the call that ends it;
- :mod:`tuneyard.worker.guards`: the heartbeat and the watchdog (timeout, grace) threads;
- :mod:`tuneyard.worker.control`: the calls a job makes, its options, the worker's shutdown
  switch and the clock its guards read;
- :mod:`tuneyard.worker.objective`: finding the objective, and its error or its value;
- :mod:`tuneyard.worker.local`: the worker loop and local worker processes.
"""

from __future__ import annotations

from tuneyard.worker.assignment import run_assignment
from tuneyard.worker.control import (
    SYSTEM_CLOCK,
    Clock,
    Control,
    JobOptions,
    SystemClock,
    WorkerClient,
)
from tuneyard.worker.guards import EXIT_RESTART, AttemptTimeout
from tuneyard.worker.local import THREAD_VARS, WorkerCrashed, run_local_workers, work_loop
from tuneyard.worker.objective import (
    ERROR_TAIL,
    Objective,
    error_text,
    load_objective,
    make_objective,
)

__all__ = [
    "ERROR_TAIL",
    "EXIT_RESTART",
    "SYSTEM_CLOCK",
    "THREAD_VARS",
    "AttemptTimeout",
    "Clock",
    "Control",
    "JobOptions",
    "Objective",
    "SystemClock",
    "WorkerClient",
    "WorkerCrashed",
    "error_text",
    "load_objective",
    "make_objective",
    "run_assignment",
    "run_local_workers",
    "work_loop",
]
