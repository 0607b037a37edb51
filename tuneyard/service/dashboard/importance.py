"""Parameter importance of a study: which trials and values it is fitted on (the highest rung
enough trials reached, else the completed trials), read by a sample of at most
``IMPORTANCE_SAMPLE`` of them, and cached per study until they grow. The statistics are
:mod:`tuneyard.scheduler.importance`."""

from __future__ import annotations

import math
import time
from typing import Any

from pydantic_core import from_json
from sqlalchemy import Text, func, select
from sqlalchemy import cast as sa_cast
from sqlalchemy.orm import Session

from tuneyard.scheduler.importance import RUNG_TRIALS as IMPORTANCE_RUNG_TRIALS
from tuneyard.scheduler.importance import first_order_importance, pick_rung
from tuneyard.scheduler.importance import ranked as ranked_importance
from tuneyard.service.dashboard.base import CachedImportance, DashboardBase, study_key
from tuneyard.spec import StudySpec
from tuneyard.states import TrialState
from tuneyard.store.models import Rung, RungEntry, Study, Trial

# Importance is fitted on at most this many trials, and needs at least MIN_IMPORTANCE_TRIALS.
IMPORTANCE_SAMPLE = 2000
# A cached importance is kept at least this long, and after that until the trials it would be
# fitted on grew by IMPORTANCE_GROWTH (or its rung changed).
IMPORTANCE_MIN_AGE_S = 10.0
IMPORTANCE_GROWTH = 0.02


class Importance(DashboardBase):
    def importance(self, study_id: int) -> dict[str, Any]:
        """Importance of each parameter, cached per study: recomputed once the trials it is
        fitted on have grown by IMPORTANCE_GROWTH, and at most every IMPORTANCE_MIN_AGE_S."""
        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            key = study_key(study)
            basis = self._importance_basis(s, study)
        hit = self.caches.importance.get(key)
        now = time.monotonic()
        if hit is not None and not _stale(hit, basis, now):
            return hit.result
        with self.caches.importance_lock:
            hit = self.caches.importance.get(key)
            if hit is not None and not _stale(hit, basis, time.monotonic()):
                return hit.result
            with self.kit.transaction() as s:
                study = self._study(s, study_id)
                basis = self._importance_basis(s, study)
                result = self._fit_importance(s, study, basis)
            self.caches.importance.put(key, CachedImportance(basis, time.monotonic(), result))
            return result

    def _importance_basis(self, s: Session, study: Study) -> tuple[Any, ...]:
        """What an importance is fitted on: ("rung", k, resource, entries) for the highest rung
        that IMPORTANCE_RUNG_TRIALS trials reached (or, failing that, the rung most reached),
        else ("completed", count)."""
        rows = s.execute(
            select(Rung.rung, func.sum(Rung.entries), func.min(Rung.resource))
            .where(Rung.study_id == study.id)
            .group_by(Rung.rung)
            .order_by(Rung.rung)
        ).all()
        rungs = [(int(k), int(n or 0), float(r)) for k, n, r in rows]
        chosen = pick_rung(rungs, IMPORTANCE_RUNG_TRIALS)
        if chosen is not None:
            k, n, r = chosen
            return ("rung", k, r, n)
        completed = s.scalar(
            select(func.count())
            .select_from(Trial)
            .where(
                Trial.study_id == study.id,
                Trial.parent_id.is_(None),
                Trial.state == TrialState.COMPLETED,
                Trial.value.is_not(None),
            )
        )
        return ("completed", int(completed or 0))

    def _fit_importance(self, s: Session, study: Study, basis: tuple[Any, ...]) -> dict[str, Any]:
        spec = StudySpec.from_stored(study.spec)
        if basis[0] == "rung":
            _, k, resource, n = basis
            ranked = (
                select(
                    RungEntry.trial_id.label("tid"),
                    RungEntry.score.label("y"),
                    func.row_number().over(order_by=(RungEntry.score, RungEntry.id)).label("rn"),
                )
                .where(RungEntry.study_id == study.id, RungEntry.rung == k)
                .subquery()
            )
            every = max(1, math.ceil(n / IMPORTANCE_SAMPLE))
            rows = s.execute(
                select(sa_cast(Trial.params, Text), ranked.c.y)
                .join(ranked, Trial.id == ranked.c.tid)
                .where((ranked.c.rn - 1) % every == 0)
            ).all()
            source = f"values at rung {k} (resource {resource:g})"
            rung: int | None = k
            why = (
                f"rung {k} (resource {resource:g}) is the highest rung that at least "
                f"{IMPORTANCE_RUNG_TRIALS} trials reached ({n})"
                if n >= IMPORTANCE_RUNG_TRIALS
                else f"no rung has {IMPORTANCE_RUNG_TRIALS} trials yet: rung {k} (resource "
                f"{resource:g}) is the one the most reached ({n})"
            )
        else:
            resource = None
            rung = None
            why = "no rung has values yet: the completed trials' final values"
            n = basis[1]
            ranked = (
                select(
                    sa_cast(Trial.params, Text).label("params"),
                    Trial.value.label("y"),
                    func.row_number().over(order_by=(Trial.value, Trial.id)).label("rn"),
                )
                .where(
                    Trial.study_id == study.id,
                    Trial.parent_id.is_(None),
                    Trial.state == TrialState.COMPLETED,
                    Trial.value.is_not(None),
                )
                .subquery()
            )
            every = max(1, math.ceil(n / IMPORTANCE_SAMPLE))
            rows = s.execute(
                select(ranked.c.params, ranked.c.y).where((ranked.c.rn - 1) % every == 0)
            ).all()
            source = "values of completed trials"
        configs = from_json("[" + ",".join(r[0] for r in rows) + "]") if rows else []
        y = [float(r[1]) for r in rows]
        scores = first_order_importance(spec.space, configs, y)
        return {
            "method": (
                "first-order variance decomposition (fANOVA-style) of the ranked "
                f"{source}: the share of variance explained by each parameter's mean per "
                "quantile bin (per choice for a categorical, inactive as its own bin), "
                "corrected for the number of bins (omega squared); importance is that share "
                "normalised to sum to 1"
            ),
            "params": [
                {"name": name, "importance": share, "variance_explained": v}
                for name, share, v in ranked_importance(scores)
            ],
            "trials_used": len(configs),
            "resource": resource,
            "rung": rung,
            "rung_trials": IMPORTANCE_RUNG_TRIALS,
            "basis": why,
            "computed_at": self.kit.clock(),
        }


def _stale(hit: CachedImportance, basis: tuple[Any, ...], now: float) -> bool:
    if now - hit.computed < IMPORTANCE_MIN_AGE_S:
        return False
    if hit.basis[:-1] != basis[:-1]:
        return True
    before, after = int(hit.basis[-1]), int(basis[-1])
    return abs(after - before) > max(0, int(IMPORTANCE_GROWTH * before))
