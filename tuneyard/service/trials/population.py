"""Population-based training in the service: the exploit-or-keep step of a member that paused
at an interval boundary, and its lineage.

A pbt or pb2 study's members pause at every boundary (:mod:`tuneyard.scheduler.schedulers.
population`). When a member's pause is acknowledged, its checkpoint at the boundary is
stored, and the step runs in the same transaction, under the study's lock:

1. the member's row for the boundary is written (``population_steps``: its score, the
   parameters it trained with, its checkpoint);
2. the population it ranks against is each other member's latest row at or before the
   boundary (one grouped read through (study_id, resource): the population is the study's
   trials, bounded by the definition), and PB2 also reads the study's latest finished
   intervals (at most :data:`tuneyard.scheduler.pbt.pb2.MAX_POINTS`);
3. the rule (:class:`tuneyard.scheduler.pbt.PopulationRule`) keeps the member or has it
   exploit a top-quantile donor at the same boundary. An exploit copies the donor's archive
   into the member's own checkpoints (the same content, so the worker's cache by digest
   serves it too) and makes it the member's checkpoint, sets the member's parameters to the
   explored ones, and records the donor, its score, the donor's schedule up to the clone and
   the reason on the row and in the decision log.

The member then waits on its rung and is resumed for the next interval like any promotion,
with its (new) parameters and checkpoint. Only archives stored by this server
(``api:`` locations) are cloned: a directory a worker saves into in place has moved on by the
time another member would clone it, so a member that saves that way never donates (its step
says so when it would have).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneyard.scheduler.pbt import (
    Interval,
    Lineage,
    LineageEntry,
    MemberScore,
    PopulationDecision,
)
from tuneyard.scheduler.pbt.pb2 import MAX_POINTS
from tuneyard.service.checkpoint_locations import API_PREFIX, uploaded_folder
from tuneyard.service.context import StudyContext
from tuneyard.service.trials.replicates import Replicates
from tuneyard.states import LogKind
from tuneyard.store.models import PopulationStep, Study, Trial

_EPS = 1e-9


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def lineage_of(trial: Trial, steps: Sequence[PopulationStep]) -> Lineage:
    """A member's lineage from its rows (oldest first): its start, then each exploit."""
    start = steps[0].params if steps else trial.params
    entries = [LineageEntry(0.0, dict(start), None, "started")]
    for row in steps:
        if row.decision != "exploit":
            continue
        inherited = tuple((float(r), dict(p)) for r, p in (row.inherited or ()))
        entries.append(
            LineageEntry(
                row.resource, dict(row.new_params), row.donor_number, row.reason, inherited
            )
        )
    return Lineage(trial.number, tuple(entries))


def _effective(row: PopulationStep) -> float:
    """The score of what a member holds from its step on: after an exploit, its donor's
    checkpoint, so its donor's score (what a member cloning it gets)."""
    score = row.donor_score if row.decision == "exploit" else row.score
    return math.inf if score is None else score


class Population(Replicates):
    def _population_step(self, s: Session, ctx: StudyContext, study: Study, trial: Trial) -> None:
        """The exploit-or-keep step of ``trial``, whose pause at a boundary was just
        acknowledged (its checkpoint there stored). The study's lock is held."""
        rule = ctx.population
        assert rule is not None
        b = ctx.scheduler.resources[trial.rung]
        done = s.scalar(
            select(PopulationStep.id).where(
                PopulationStep.trial_id == trial.id, PopulationStep.resource == b
            )
        )
        if done is not None:
            return  # a re-run that paused at the same boundary again: decided already
        score = _finite(None if trial.value is None else ctx.sign * trial.value)
        prev = s.scalars(
            select(PopulationStep)
            .where(PopulationStep.trial_id == trial.id, PopulationStep.resource < b - _EPS)
            .order_by(PopulationStep.resource.desc())
            .limit(1)
        ).first()
        score_from = None
        if prev is not None:
            score_from = prev.donor_score if prev.decision == "exploit" else prev.score
        rows = self._population_at(s, study.id, trial.id, b)
        by_number = {r.number: r for r in rows}
        members = [MemberScore(r.number, r.resource, _effective(r), r.new_params) for r in rows]
        intervals: Sequence[Interval] = ()
        if rule.spec.type == "pb2":
            intervals = self._intervals(s, study.id)

        def can_donate(m: MemberScore) -> bool:
            row = by_number.get(m.member)
            return row is not None and self._stored_archive(study.id, row) is not None

        me = MemberScore(trial.number, b, math.inf if score is None else score, trial.params)
        decision = rule.decide(me, members, intervals, can_donate)
        row = PopulationStep(
            study_id=study.id,
            trial_id=trial.id,
            number=trial.number,
            resource=b,
            score=score,
            value=_finite(trial.value),
            score_from=score_from,
            params=dict(trial.params),
            checkpoint=trial.checkpoint,
            decision=decision.kind,
            new_params=dict(decision.params),
            reason=decision.reason,
            created_at=self.kit.clock(),
        )
        if decision.kind == "exploit":
            assert decision.donor is not None
            donor_row = by_number[decision.donor]
            self._exploit(s, study, trial, decision, donor_row, row)
        trial.reason = decision.reason
        s.add(row)
        kind = LogKind.EXPLOIT if decision.kind == "exploit" else LogKind.KEEP
        self._log(s, trial, kind, decision.reason, trial.rung, b)

    def _exploit(
        self,
        s: Session,
        study: Study,
        trial: Trial,
        decision: PopulationDecision,
        donor_row: PopulationStep,
        row: PopulationStep,
    ) -> None:
        source = self._stored_archive(study.id, donor_row)
        assert source is not None  # the rule asked can_donate
        folder = uploaded_folder(self.kit.settings, study.id, trial.id)
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / source.name
        if not dest.exists():
            tmp = folder / f".clone-{source.name}"
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        digest = source.name.removesuffix(".tar.gz")
        self._set_checkpoint(trial, f"{API_PREFIX}{trial.id}/{digest}")
        trial.params = dict(decision.params)
        donor = s.get(Trial, donor_row.trial_id)
        assert donor is not None
        donor_steps = self._steps(s, donor.id)
        inherited = lineage_of(donor, donor_steps).schedule(upto=decision.resource_from)
        row.donor_id = donor.id
        row.donor_number = donor.number
        row.donor_score = decision.donor_score
        row.inherited = [[r, dict(p)] for r, p in inherited]
        row.checkpoint = trial.checkpoint

    def _stored_archive(self, study_id: int, row: PopulationStep) -> Path | None:
        """The archive file of a step's checkpoint when this server stores it still, else
        None (a directory location, or an archive the retention sweep deleted)."""
        loc = row.checkpoint
        if loc is None or not loc.startswith(API_PREFIX):
            return None
        owner, _, digest = loc[len(API_PREFIX) :].partition("/")
        path = uploaded_folder(self.kit.settings, study_id, int(owner)) / f"{digest}.tar.gz"
        return path if path.is_file() else None

    @staticmethod
    def _population_at(s: Session, study_id: int, trial_id: int, b: float) -> list[PopulationStep]:
        """Each other member's latest step at or before ``b``."""
        latest = (
            select(PopulationStep.trial_id, func.max(PopulationStep.resource).label("at"))
            .where(
                PopulationStep.study_id == study_id,
                PopulationStep.resource <= b + _EPS,
                PopulationStep.trial_id != trial_id,
            )
            .group_by(PopulationStep.trial_id)
            .subquery()
        )
        return list(
            s.scalars(
                select(PopulationStep).join(
                    latest,
                    (PopulationStep.trial_id == latest.c.trial_id)
                    & (PopulationStep.resource == latest.c.at),
                )
            )
        )

    @staticmethod
    def _intervals(s: Session, study_id: int) -> list[Interval]:
        """The study's latest finished intervals with both ends' scores, for PB2."""
        rows = s.execute(
            select(
                PopulationStep.number,
                PopulationStep.resource,
                PopulationStep.params,
                PopulationStep.score_from,
                PopulationStep.score,
            )
            .where(
                PopulationStep.study_id == study_id,
                PopulationStep.score.is_not(None),
                PopulationStep.score_from.is_not(None),
            )
            .order_by(PopulationStep.resource.desc(), PopulationStep.id.desc())
            .limit(MAX_POINTS)
        ).all()
        return [Interval(n, r, p, f - sc) for n, r, p, f, sc in rows]

    @staticmethod
    def _steps(s: Session, trial_id: int) -> list[PopulationStep]:
        return list(
            s.scalars(
                select(PopulationStep)
                .where(PopulationStep.trial_id == trial_id)
                .order_by(PopulationStep.resource)
            )
        )


def schedule_json(schedule: Sequence[tuple[float, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """A replayable schedule as the API returns it: [{resource, params}, ...]."""
    return [{"resource": r, "params": dict(p)} for r, p in schedule]
