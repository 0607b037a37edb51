"""Warm starts: the observations of earlier studies, fed to a new study's model-based sampler.

The studies named in ``warm_start`` are checked when the new study is created (each exists,
optimises the same metric in the same direction with one objective, and shares parameters
with the new space); a definition that fails is a 422 naming ``warm_start.studies[i]``. The
observations themselves are read once, when the new study's sampler is first built (its
first suggestion), mapped into the new space and given to the sampler before its own: the
latest :data:`~tuneyard.spec.warm_start.MAX_PRIORS_PER_STUDY` of each study, those whose
parameters the new space accepts. They take negative trial numbers, so they never collide
with the study's own trials, and their count is saved with the sampler's state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneyard.errors import InvalidRequest
from tuneyard.scheduler.samplers.base import Observation as Prior
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import StudySpec
from tuneyard.spec.warm_start import MAX_PRIORS_PER_STUDY
from tuneyard.states import TrialState
from tuneyard.store.models import Observation, Study, Trial


def check_sources(s: Session, spec: StudySpec, model_based: bool) -> None:
    """Refuse a warm start the new study could not use, naming the field and why."""
    ws = spec.warm_start
    if ws is None:
        return
    if not model_based:
        raise InvalidRequest(
            f"warm_start: the {spec.sampler.type} sampler learns nothing from earlier "
            "observations; use a model-based one (tpe, gp, bohb, cmaes, ...)",
            field="warm_start",
        )
    if spec.ranked_by_fronts:
        raise InvalidRequest(
            "warm_start: applies to a study with one objective and no constraints for now",
            field="warm_start",
        )
    for i, sid in enumerate(ws.studies):
        where = f"warm_start.studies[{i}]"
        row = s.execute(select(Study.spec).where(Study.id == sid)).first()
        if row is None:
            raise InvalidRequest(f"{where}: study {sid} does not exist", field=where)
        old = StudySpec.from_stored(row.spec)
        if old.ranked_by_fronts:
            raise InvalidRequest(
                f"{where}: study {sid} has several objectives or constraints", field=where
            )
        if (old.metric, old.direction) != (spec.metric, spec.direction):
            raise InvalidRequest(
                f"{where}: study {sid} {old.direction}s {old.metric!r}, this one "
                f"{spec.direction}s {spec.metric!r}; their scores do not compare",
                field=where,
            )
        shared = [
            n for n, p in spec.space.items() if n in old.space and old.space[n].type == p.type
        ]
        if not shared:
            raise InvalidRequest(
                f"{where}: study {sid} shares no parameter (same name and type) with this space",
                field=where,
            )


def priors(
    s: Session, space: SearchSpace, sources: Sequence[int], sign: float = 1.0
) -> list[Prior]:
    """The observations of the ``sources`` studies that fit ``space``, numbered -1, -2, ...

    A source whose sampler was model-based recorded its observations (every rung a trial
    reached and its end); another (random, grid, Sobol) recorded none, and its trials' latest
    values stand for them (``sign``: +1 when minimising, -1 when maximising)."""
    out: list[Prior] = []
    numbers: dict[tuple[int, int], int] = {}
    for sid in sources:
        rows: Sequence[Any] = s.execute(
            select(Observation.number, Observation.resource, Observation.score, Trial.params)
            .join(Trial, Trial.id == Observation.trial_id)
            .where(Observation.study_id == sid, Observation.scores.is_(None))
            .order_by(Observation.id.desc())
            .limit(MAX_PRIORS_PER_STUDY)
        ).all()
        if not rows:
            latest = s.execute(
                select(Trial.number, Trial.resource, Trial.value, Trial.params)
                .where(
                    Trial.study_id == sid,
                    Trial.parent_id.is_(None),
                    Trial.value.is_not(None),
                    Trial.resource.is_not(None),
                    Trial.state.in_(_OBSERVED),
                )
                .order_by(Trial.number.desc())
                .limit(MAX_PRIORS_PER_STUDY)
            ).all()
            rows = [(n, r, sign * v, p) for n, r, v, p in latest]
        for number, resource, score, params in reversed(rows):
            if not math.isfinite(score):
                continue
            try:
                mapped = space.validate({k: v for k, v in params.items() if k in space.params})
            except ValueError:
                continue  # a value out of the new bounds, or a parameter it lacks
            # One prior trial per source trial, its rungs and its end together.
            n = numbers.setdefault((sid, number), -(len(numbers) + 1))
            out.append(Prior(n, mapped, float(resource), float(score)))
    return out


# A trial whose latest value is a result: it ended, or waits at a rung.
_OBSERVED = (TrialState.COMPLETED, TrialState.STOPPED, TrialState.PAUSED)
