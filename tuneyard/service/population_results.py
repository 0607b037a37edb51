"""What a pbt or pb2 study shows of its population: a member's lineage and replayable
schedule, the exploits, and the best member's schedule to export.

Reads only: a member's rows (one per boundary, through the unique (trial, resource) key), the
study's exploit rows, and the best member by the completed trials' index. A trial outside a
population study is answered with a 409 that says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneyard.errors import Conflict, NotFound
from tuneyard.protocol import (
    ExploitMark,
    LineageOut,
    PopulationOut,
    PopulationStepOut,
    ScheduleStep,
)
from tuneyard.service.context import StudyContext, Toolkit
from tuneyard.service.trials.population import lineage_of
from tuneyard.states import TrialState
from tuneyard.store.models import PopulationStep, Study, Trial


class PopulationResults:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def _context(self, s: Session, study_id: int) -> tuple[Study, StudyContext]:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        ctx = self.kit.context(study)
        if ctx.population is None:
            raise Conflict(
                f"study {study_id} has a {ctx.spec.scheduler.type} scheduler; lineages and "
                "schedules belong to a pbt or pb2 study's members"
            )
        return study, ctx

    def lineage(self, trial_id: int) -> LineageOut:
        with self.kit.reading() as s:
            trial = s.get(Trial, trial_id)
            if trial is None:
                raise NotFound(f"trial {trial_id} does not exist")
            _, ctx = self._context(s, trial.study_id)
            return self._lineage(s, ctx, trial)

    def population(self, study_id: int) -> PopulationOut:
        with self.kit.reading() as s:
            _, ctx = self._context(s, study_id)
            pop = ctx.spec.scheduler.population_spec()
            exploits = s.scalars(
                select(PopulationStep)
                .where(PopulationStep.study_id == study_id, PopulationStep.decision == "exploit")
                .order_by(PopulationStep.resource, PopulationStep.id)
            ).all()
            steps = s.scalar(select(func.count()).where(PopulationStep.study_id == study_id))
            members = s.scalar(
                select(func.count()).where(Trial.study_id == study_id, Trial.parent_id.is_(None))
            )
            best = self._best(s, ctx, study_id)
            return PopulationOut(
                study_id=study_id,
                interval=pop.interval,
                max_resource=pop.max_resource,
                members=members or 0,
                steps=steps or 0,
                exploits=[
                    ExploitMark(
                        trial_id=r.trial_id,
                        number=r.number,
                        resource=r.resource,
                        donor_trial_id=r.donor_id or 0,
                        donor_number=r.donor_number if r.donor_number is not None else -1,
                        value=r.value,
                        donor_value=self._value(ctx, r.donor_score),
                    )
                    for r in exploits
                ],
                best=None if best is None else self._lineage(s, ctx, best),
            )

    def schedule(self, study_id: int) -> LineageOut:
        """The best member's lineage, whose schedule replays its training."""
        with self.kit.reading() as s:
            _, ctx = self._context(s, study_id)
            best = self._best(s, ctx, study_id)
            if best is None:
                raise NotFound(f"study {study_id} has no member with a value yet")
            return self._lineage(s, ctx, best)

    @staticmethod
    def _best(s: Session, ctx: StudyContext, study_id: int) -> Trial | None:
        """The completed member with the best value, else the member with the best latest
        value (a population still training)."""
        order = Trial.value.asc() if ctx.sign > 0 else Trial.value.desc()
        for states in ((TrialState.COMPLETED,), None):
            q = select(Trial).where(
                Trial.study_id == study_id, Trial.parent_id.is_(None), Trial.value.is_not(None)
            )
            if states is not None:
                q = q.where(Trial.state.in_(states))
            best = s.scalars(q.order_by(order, Trial.number).limit(1)).first()
            if best is not None:
                return best
        return None

    @staticmethod
    def _value(ctx: StudyContext, score: float | None) -> float | None:
        return None if score is None else ctx.sign * score

    def _lineage(self, s: Session, ctx: StudyContext, trial: Trial) -> LineageOut:
        rows: Sequence[PopulationStep] = s.scalars(
            select(PopulationStep)
            .where(PopulationStep.trial_id == trial.id)
            .order_by(PopulationStep.resource)
        ).all()
        schedule = lineage_of(trial, rows).schedule()
        return LineageOut(
            study_id=trial.study_id,
            trial_id=trial.id,
            number=trial.number,
            state=TrialState(trial.state),
            value=trial.value,
            resource=trial.resource,
            steps=[
                PopulationStepOut(
                    resource=r.resource,
                    value=r.value,
                    decision="exploit" if r.decision == "exploit" else "keep",
                    params=r.params,
                    new_params=r.new_params,
                    donor_trial_id=r.donor_id,
                    donor_number=r.donor_number,
                    donor_value=self._value(ctx, r.donor_score),
                    reason=r.reason,
                    created_at=r.created_at,
                )
                for r in rows
            ],
            schedule=[ScheduleStep(resource=res, params=dict(p)) for res, p in schedule],
        )
