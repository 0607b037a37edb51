"""Multi-fidelity schedulers: which trials run on, pause, stop or get promoted."""

from __future__ import annotations

from tuneyard.scheduler.schedulers.asha import ASHA
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView
from tuneyard.scheduler.schedulers.fifo import FIFO
from tuneyard.scheduler.schedulers.median import MedianStopping
from tuneyard.scheduler.schedulers.population import PopulationScheduler
from tuneyard.scheduler.schedulers.sha import Hyperband, SuccessiveHalving
from tuneyard.spec import SchedulerSpec

__all__ = [
    "ASHA",
    "FIFO",
    "Hyperband",
    "MedianStopping",
    "PopulationScheduler",
    "Scheduler",
    "SuccessiveHalving",
    "TrialView",
    "make_scheduler",
]


def make_scheduler(
    spec: SchedulerSpec, direction: str = "minimize", fronts: bool = False
) -> Scheduler:
    """The scheduler ``spec`` names; ``fronts``: a study with several objectives or
    constraints, whose rungs the halving schedulers rank by non-dominated sorting."""
    kinds: dict[str, type[Scheduler]] = {
        "fifo": FIFO,
        "median": MedianStopping,
        "sha": SuccessiveHalving,
        "hyperband": Hyperband,
        "asha": ASHA,
        "pbt": PopulationScheduler,
        "pb2": PopulationScheduler,
    }
    return kinds[spec.type](spec, direction, fronts)
