"""Trials run elsewhere (an Optuna study's), brought into a study as its history.

``POST /studies/{id}/trials/import`` takes trials that ended elsewhere, completed or pruned,
with their parameters, final value and intermediate values. Each becomes a trial of the
study, numbered after those it has (they count towards ``max_trials``), completed or stopped
with a reason that says where it came from, its intermediate values stored as its reports,
and, for a model-based sampler, each value an observation, so the sampler starts from them.
They are not placed on the study's rungs: rungs rank the trials that ran under the study's
scheduler.

One transaction under the study's lock; a bad trial refuses the whole batch with a 422 that
names ``trials[i]`` and the reason, and nothing is stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy import select

from tuneyard.errors import Conflict, InvalidRequest, NotFound
from tuneyard.protocol import ImportedTrialIn
from tuneyard.service.context import Toolkit
from tuneyard.states import FINAL_STUDY_STATES, DecisionKind, TrialState
from tuneyard.store import observations
from tuneyard.store.models import Report, Study, Trial


def _refuse(i: int, what: str) -> InvalidRequest:
    return InvalidRequest(f"trials[{i}].{what}", field=f"trials[{i}]")


class ImportService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def import_trials(self, study_id: int, trials: Sequence[ImportedTrialIn]) -> list[int]:
        """Store ``trials`` as the study's next trials; their numbers."""
        with self.kit.transaction() as s:
            study = s.scalar(
                select(Study)
                .where(Study.id == study_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if study is None:
                raise NotFound(f"study {study_id} does not exist")
            if study.state in FINAL_STUDY_STATES:
                raise Conflict(f"study {study_id} is {study.state}; it takes no more trials")
            ctx = self.kit.context(study)
            if ctx.spec.ranked_by_fronts or ctx.spec.evaluation is not None:
                raise InvalidRequest(
                    "trials: importing applies to a study with one objective, no constraints "
                    "and no evaluation folds",
                    field="trials",
                )
            room = ctx.capacity - study.trials_started
            if len(trials) > room:
                raise InvalidRequest(
                    f"trials: {len(trials)} trials, but the study has room for {room} more "
                    f"(limits.max_trials {ctx.spec.limits.max_trials}, "
                    f"{study.trials_started} started)",
                    field="trials",
                )
            top = ctx.scheduler.ladder.max_resource
            now = self.kit.clock()
            checked = []
            for i, t in enumerate(trials):
                try:
                    params = ctx.space.validate(t.params)
                except ValueError as exc:
                    raise _refuse(i, f"params: {exc}") from None
                steps = [float(step) for step, _ in t.intermediate]
                if len(set(steps)) != len(steps):
                    raise _refuse(i, "intermediate: a step is given twice")
                for step, v in t.intermediate:
                    if not 0 < step <= top or not math.isfinite(v):
                        raise _refuse(
                            i,
                            f"intermediate: step {step} must lie in (0, {top}] (the study's "
                            f"max_resource) and its value be finite, got {v}",
                        )
                curve = sorted((float(a), float(b)) for a, b in t.intermediate)
                value = t.value
                if value is None and t.state == "pruned" and curve:
                    value = curve[-1][1]
                if value is None or not math.isfinite(value):
                    raise _refuse(i, f"value: a {t.state} trial needs a finite value, got {value}")
                checked.append((t, params, curve, value))
            numbers = []
            for t, params, curve, value in checked:
                number = study.trials_started
                study.trials_started += 1
                done = t.state == "completed"
                resource = top if done else (curve[-1][0] if curve else top)
                where = f" ({t.source})" if t.source else ""
                reason = (
                    f"imported{where}: completed"
                    if done
                    else f"imported{where}: pruned at {resource:g}"
                )
                trial = Trial(
                    study_id=study.id,
                    number=number,
                    state=TrialState.COMPLETED if done else TrialState.STOPPED,
                    params=params,
                    bracket=0,
                    base_rung=0,
                    rung=-1,
                    resource_from=0.0,
                    resource_to=resource,
                    value=value,
                    resource=resource,
                    best_score=min(ctx.sign * v for v in [value, *(b for _, b in curve)]),
                    score_sum=0.0,
                    score_count=0,
                    attempts=0,
                    reason=reason,
                    created_at=now,
                    updated_at=now,
                    ended_at=now,
                )
                s.add(trial)
                s.flush()
                points = dict(curve)
                points[resource] = value
                for step, v in sorted(points.items()):
                    last = step == resource
                    kind = (
                        DecisionKind.CONTINUE
                        if not last
                        else DecisionKind.COMPLETE
                        if done
                        else DecisionKind.STOP
                    )
                    s.add(
                        Report(
                            trial_id=trial.id,
                            attempt=1,
                            step=step,
                            value=v,
                            metrics={},
                            decision=kind,
                            reason=reason if last else "imported",
                            created_at=now,
                        )
                    )
                    if ctx.model is not None:
                        observations.add(
                            s,
                            study_id=study.id,
                            trial_id=trial.id,
                            number=number,
                            resource=step,
                            score=ctx.sign * v,
                            scores=None,
                            violation=0.0,
                            noise=0.0,
                            created_at=now,
                        )
                numbers.append(number)
            return numbers
