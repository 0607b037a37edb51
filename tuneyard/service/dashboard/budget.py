"""A study's budgets on the dashboard: the lines of its card (trials, GPU-hours and wall time,
each used of its limit; read from the study's counters, see :mod:`tuneyard.service.budget`)
and the best value against the GPU-hours used so far.

The curve is computed in SQL over the study's ended attempts in the order they ended: running
sums of their GPU-seconds and wall seconds, and the running best of the values of the trials
they completed (window functions, on both backends); only the points where the best improved
come back, so the answer stays small however many attempts the study ran. It is kept per
process until the study's version moves, like the other views.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session

from tuneyard.service.budget import HOUR
from tuneyard.service.dashboard.base import DashboardBase, study_key
from tuneyard.states import AttemptState, TrialState
from tuneyard.store import counters
from tuneyard.store.models import Attempt, Study, Trial


class BudgetViews(DashboardBase):
    def budget_curve(self, study_id: int) -> bytes:
        """The best value against GPU-hours (and worker-hours) used, as JSON, cached per
        version of the study."""
        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            token = self._token(study, self._latest_change(s, [study.id]).get(study.id))
            key = (*study_key(study), "budget", 0)
            hit = self.caches.views.get(key)
            if hit is not None and hit[0] == token:
                return hit[1]
            data = self._budget_curve(s, study)
        body = to_json(data)
        self.caches.views.put(key, (token, body))
        return body

    def _budget_curve(self, s: Session, study: Study) -> dict[str, Any]:
        order = (Attempt.ended_at, Attempt.id)
        completed = case(
            (
                and_(Attempt.state == AttemptState.COMPLETED, Trial.state == TrialState.COMPLETED),
                Trial.value,
            ),
        )
        running_best = func.min if study.direction == "minimize" else func.max
        ended = (
            select(
                Attempt.id.label("id"),
                Attempt.ended_at.label("ended_at"),
                Trial.id.label("trial_id"),
                Trial.number.label("number"),
                func.sum(func.coalesce(Attempt.wall_seconds, 0.0) * Attempt.gpu_count)
                .over(order_by=order)
                .label("gpu_seconds"),
                func.sum(func.coalesce(Attempt.wall_seconds, 0.0))
                .over(order_by=order)
                .label("worker_seconds"),
                running_best(completed).over(order_by=order).label("best"),
            )
            .join(Trial, Trial.id == Attempt.trial_id)
            .where(Trial.study_id == study.id, Attempt.ended_at.is_not(None))
            .subquery()
        )
        with_prev = select(
            ended,
            func.lag(ended.c.best).over(order_by=(ended.c.ended_at, ended.c.id)).label("prev"),
        ).subquery()
        rows = s.execute(
            select(
                with_prev.c.gpu_seconds,
                with_prev.c.worker_seconds,
                with_prev.c.best,
                with_prev.c.trial_id,
                with_prev.c.number,
            )
            .where(
                with_prev.c.best.is_not(None),
                or_(with_prev.c.prev.is_(None), with_prev.c.best != with_prev.c.prev),
            )
            .order_by(with_prev.c.ended_at, with_prev.c.id)
        ).all()
        spent = counters.read(s, study.id)
        return {
            "direction": study.direction,
            "points": [
                {
                    "gpu_hours": float(g or 0.0) / HOUR,
                    "worker_hours": float(w or 0.0) / HOUR,
                    "value": float(v),
                    "trial_id": int(tid),
                    "number": int(n),
                }
                for g, w, v, tid, n in rows
            ],
            "gpu_hours": spent.gpu_seconds / HOUR,
            "worker_hours": spent.worker_seconds / HOUR,
        }
