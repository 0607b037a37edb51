"""A trial's page: the trial as the public API gives it, its attempts with their workers' hosts
and GPUs, and what it used."""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select

from tuneyard.service.dashboard.base import DashboardBase
from tuneyard.service.studies import StudyService, TrialDetail
from tuneyard.states import AttemptState
from tuneyard.store.models import Worker

# Metrics a worker or an objective may report that the trial detail shows as peak memory.
PEAK_MEMORY_KEYS = ("peak_memory_mib", "gpu_peak_memory_mib", "max_memory_mib")


class TrialPage(DashboardBase):
    def trial(self, trial_id: int) -> tuple[TrialDetail, list[dict[str, Any]], dict[str, Any]]:
        """A trial as the public API gives it, its attempts each with its worker's host and
        GPUs (from the worker registry) and duration, and what the trial used."""
        detail = StudyService(self.kit).trial(trial_id)
        now = self.kit.clock()
        names = sorted({a.worker for a in detail.attempts if a.worker})
        with self.kit.transaction() as s:
            workers = {
                w.name: (w.host, list(w.gpus))
                for w in s.scalars(select(Worker).where(Worker.name.in_(names)))
            }
        peak = None
        for r in detail.reports:
            for key in PEAK_MEMORY_KEYS:
                v = r.metrics.get(key) if isinstance(r.metrics, dict) else None
                if isinstance(v, int | float) and math.isfinite(v):
                    peak = max(peak or 0.0, float(v))
        out = []
        wall = 0.0
        gpus: list[dict[str, Any]] = []
        for a in detail.attempts:
            host, used = workers.get(a.worker or "", (None, []))
            end = a.ended_at or (now if a.state == AttemptState.RUNNING else None)
            duration = max(0.0, (end - a.started_at).total_seconds()) if end else None
            wall += duration or 0.0
            gpus += [g for g in used if g not in gpus]
            out.append(
                {
                    "number": a.number,
                    "worker": a.worker,
                    "host": host,
                    "gpus": used,
                    "state": a.state,
                    "started_at": a.started_at,
                    "ended_at": a.ended_at,
                    "duration_s": duration,
                    "resource_from": a.resource_from,
                    "resource_to": a.resource_to,
                    "error": a.error,
                }
            )
        resources = {
            "wall_time_s": wall,
            "resource_trained": detail.trial.resource,
            "gpus": gpus,
            "peak_memory_mib": peak,
        }
        return detail, out, resources
