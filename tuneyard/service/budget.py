"""A study's budgets: how many trials it may start, how much GPU time its attempts may use and
how long it may run. When one is spent, no new trial starts; running trials finish, and the
study ends when nothing is left to run (see :meth:`TrialCore._maybe_finish`).

Usage is kept as the study's counters (tuneyard/store/counters.py), added as each attempt ends,
so checking a budget on the next-job path reads one row, whatever the study's size. GPU time is
an attempt's wall time times its GPUs (a CPU-only attempt uses none); worker time is the wall
time of every attempt, CPU or GPU. Both count ended attempts: a running attempt's time is
added when it ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tuneyard.scheduler.decisions import fmt
from tuneyard.service.context import Toolkit
from tuneyard.spec import LimitsSpec, StudySpec
from tuneyard.spec.durations import format_duration
from tuneyard.store.counters import Counts
from tuneyard.store.models import Study

HOUR = 3600.0


@dataclass(frozen=True)
class Barrier:
    """Why a study may start no new trial: which budget (``trials``, ``gpu_hours`` or
    ``wall_time``) and the reason, e.g. "the GPU-hour budget is spent: 2.01 of 2"."""

    kind: str
    reason: str

    @property
    def ending(self) -> str:
        """The study's reason when it completes behind this barrier."""
        return "all trials finished" if self.kind == "trials" else self.reason


@dataclass(frozen=True)
class Line:
    """One budget: what is used, and the limit (None: none is set)."""

    used: float
    limit: float | None

    @property
    def spent(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    @property
    def fraction(self) -> float:
        return self.used / self.limit if self.limit else 0.0


@dataclass(frozen=True)
class Usage:
    """A study's budgets now: trials started of the ones it may start, GPU-hours of
    ``max_gpu_hours``, seconds since it was created of ``max_wall_time``, and its worker
    hours; ``barrier`` says which one stops new trials, if one does."""

    trials: Line
    gpu_hours: Line
    wall_seconds: Line
    worker_hours: float
    barrier: Barrier | None

    def binding(self) -> tuple[str, Line]:
        """The budget closest to being spent, with its unit ("trials", "GPU-hours" or
        "seconds" of wall time): trials when no other limit is set, as every study has one."""
        lines = [
            ("trials", self.trials),
            ("GPU-hours", self.gpu_hours),
            ("seconds", self.wall_seconds),
        ]
        # max() keeps the first of equals: trials before GPU-hours before wall time.
        return max(
            (x for x in lines if x[1].limit is not None), key=lambda x: min(1.0, x[1].fraction)
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the API's ``usage`` and the dashboard's budget lines."""

        def line(x: Line) -> dict[str, float | None]:
            return {"used": x.used, "limit": x.limit}

        return {
            "trials": line(self.trials),
            "gpu_hours": line(self.gpu_hours),
            "wall_seconds": line(self.wall_seconds),
            "worker_hours": self.worker_hours,
            "spent": self.barrier.reason if self.barrier is not None else None,
        }


def study_wall_seconds(study: Study, now: datetime) -> float:
    """Seconds from the study's creation to its end (to now while it has not ended)."""
    end = study.finished_at or now
    return max(0.0, (end - study.created_at).total_seconds())


def usage(study: Study, spent: Counts, limits: LimitsSpec, capacity: int, now: datetime) -> Usage:
    """``spent``: the study's counters (its GPU and worker seconds)."""
    trials = Line(float(study.trials_started), float(capacity))
    gpu = Line(spent.gpu_seconds / HOUR, limits.max_gpu_hours)
    wall = Line(study_wall_seconds(study, now), limits.max_wall_time)
    barrier: Barrier | None = None
    if trials.spent:
        barrier = Barrier("trials", f"all {capacity} trials have started")
    elif gpu.limit is not None and gpu.spent:
        barrier = Barrier(
            "gpu_hours",
            f"the GPU-hour budget is spent: {_hours(gpu.used)} of {_hours(gpu.limit)}",
        )
    elif wall.limit is not None and wall.spent:
        barrier = Barrier(
            "wall_time",
            "the wall-time budget is spent: "
            f"{format_duration(wall.used)} of {format_duration(wall.limit)}",
        )
    return Usage(trials, gpu, wall, spent.worker_seconds / HOUR, barrier)


def read_usage(kit: Toolkit, study: Study, spent: Counts, now: datetime) -> Usage:
    """A study's usage for the read paths (a study shown, a page of them): the trials it may
    start come from the context this process holds, else from its definition; only a grid,
    whose size may be fewer trials than ``max_trials``, has its context built for it."""
    ctx = kit.cached_context(study.id, study.created_at)
    if ctx is None and (study.spec.get("sampler") or {}).get("type") == "grid":
        ctx = kit.context(study)
    if ctx is not None:
        return usage(study, spent, ctx.spec.limits, ctx.capacity, now)
    limits = StudySpec.from_stored(study.spec).limits
    return usage(study, spent, limits, limits.max_trials, now)


def new_trial_barrier(
    study: Study, spent: Callable[[], Counts], limits: LimitsSpec, capacity: int, now: datetime
) -> Barrier | None:
    """Why the study may place no new trial now, or None when it may: every trial it may
    start has started, its GPU-hours reached ``max_gpu_hours``, or ``max_wall_time`` has
    passed since it was created. ``spent`` reads the study's counters, only when a budget
    other than the trials' is set."""
    unlimited = limits.max_gpu_hours is None and limits.max_wall_time is None
    if study.trials_started < capacity and unlimited:
        return None  # the common case, decided without building the usage
    return usage(study, spent(), limits, capacity, now).barrier


def attempt_usage(wall_seconds: float, gpu_count: int) -> Counts:
    """What an ended attempt adds to its study's counters: its wall time as worker time, and
    times its GPUs as GPU time (a clock that went back counts nothing)."""
    wall = max(0.0, wall_seconds)
    return Counts(0, wall * max(0, gpu_count), wall)


def _hours(h: float) -> str:
    """GPU-hours as people read them: 2.01, 0.5, 12, 1,250."""
    if h >= 1000:
        return f"{h:,.0f}"
    return fmt(round(h, 2)) if h >= 0.01 or h == 0 else f"{h:.2g}"
