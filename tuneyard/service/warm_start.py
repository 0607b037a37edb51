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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneyard.errors import InvalidRequest, NotFound
from tuneyard.protocol import PriorOut, PriorSourceOut, PriorsOut
from tuneyard.scheduler.samplers.base import Observation as Prior
from tuneyard.scheduler.space import SearchSpace
from tuneyard.service.context import Toolkit
from tuneyard.spec import StudySpec
from tuneyard.spec.warm_start import MAX_PRIORS_PER_STUDY
from tuneyard.states import TrialState
from tuneyard.store.models import Observation, SamplerState, Study, Trial


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
    return [
        Prior(p.number, p.params, p.resource, p.score)
        for p in source_priors(s, space, sources, sign)
    ]


@dataclass(frozen=True)
class SourcePrior:
    """One observation given to a warm-started sampler, with where it came from."""

    study_id: int  # the source study
    trial_number: int  # the trial's number in the source study
    number: int  # its number for the new study's sampler: -1, -2, ...
    params: dict[str, Any]  # mapped into the new space
    resource: float
    score: float  # sign * value: the sampler minimises


def source_priors(
    s: Session,
    space: SearchSpace,
    sources: Sequence[int],
    sign: float = 1.0,
    before: datetime | None = None,
) -> list[SourcePrior]:
    """What :func:`priors` gives the sampler, each with its source; ``before``: only what the
    sources held at that time (the dashboard's view of priors already read)."""
    out: list[SourcePrior] = []
    numbers: dict[tuple[int, int], int] = {}
    for sid in sources:
        obs = select(
            Observation.number, Observation.resource, Observation.score, Trial.params
        ).join(Trial, Trial.id == Observation.trial_id)
        obs = obs.where(Observation.study_id == sid, Observation.scores.is_(None))
        if before is not None:
            obs = obs.where(Observation.created_at <= before)
        rows: Sequence[Any] = s.execute(
            obs.order_by(Observation.id.desc()).limit(MAX_PRIORS_PER_STUDY)
        ).all()
        if not rows:
            latest = select(Trial.number, Trial.resource, Trial.value, Trial.params).where(
                Trial.study_id == sid,
                Trial.parent_id.is_(None),
                Trial.value.is_not(None),
                Trial.resource.is_not(None),
                Trial.state.in_(_OBSERVED),
            )
            if before is not None:
                latest = latest.where(Trial.created_at <= before)
            found = s.execute(
                latest.order_by(Trial.number.desc()).limit(MAX_PRIORS_PER_STUDY)
            ).all()
            rows = [(n, r, sign * v, p) for n, r, v, p in found]
        for number, resource, score, params in reversed(rows):
            if not math.isfinite(score):
                continue
            try:
                mapped = space.validate({k: v for k, v in params.items() if k in space.params})
            except ValueError:
                continue  # a value out of the new bounds, or a parameter it lacks
            # One prior trial per source trial, its rungs and its end together.
            n = numbers.setdefault((sid, number), -(len(numbers) + 1))
            out.append(SourcePrior(sid, number, n, mapped, float(resource), float(score)))
    return out


class WarmStartView:
    """The priors a warm-started study used, for the dashboard and the API.

    The sampler read them once, in the transaction that made the study's first trial, so what
    it read is what the sources held then: the same query, cut at that trial's creation (an
    observation committed within the same instant may be shown and have been missed). A
    study whose sampler has not read them yet (no stored sampler state) is shown what it would
    read now. At most ``MAX_PRIORS_PER_STUDY`` per source are read, as by the sampler."""

    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def priors(self, study_id: int, limit: int) -> PriorsOut:
        with self.kit.reading() as s:
            study = s.get(Study, study_id)
            if study is None:
                raise NotFound(f"study {study_id} does not exist")
            ctx = self.kit.context(study)
            ws = ctx.spec.warm_start
            if ws is None:
                return PriorsOut(
                    study_id=study_id, read=False, total=0, trials=0, sources=[], priors=[]
                )
            read = s.get(SamplerState, study_id) is not None
            before = None
            if read:
                before = s.scalar(
                    select(func.min(Trial.created_at)).where(Trial.study_id == study_id)
                )
            found = source_priors(s, ctx.space, ws.studies, ctx.sign, before)
            rows = s.execute(select(Study.id, Study.name).where(Study.id.in_(ws.studies)))
            names: dict[int, str] = {sid: name for sid, name in rows}
        sources = [
            PriorSourceOut(
                study_id=sid,
                name=names.get(sid),
                observations=sum(p.study_id == sid for p in found),
                trials=len({p.number for p in found if p.study_id == sid}),
            )
            for sid in ws.studies
        ]
        # The best ``limit`` (what shapes a model-based sampler most), in the sampler's order.
        shown = sorted(sorted(range(len(found)), key=lambda i: found[i].score)[:limit])
        return PriorsOut(
            study_id=study_id,
            read=read,
            total=len(found),
            trials=len({p.number for p in found}),
            sources=sources,
            priors=[
                PriorOut(
                    study_id=p.study_id,
                    trial_number=p.trial_number,
                    number=p.number,
                    params=p.params,
                    resource=p.resource,
                    value=ctx.sign * p.score,
                )
                for p in (found[i] for i in shown)
            ],
        )


# A trial whose latest value is a result: it ended, or waits at a rung.
_OBSERVED = (TrialState.COMPLETED, TrialState.STOPPED, TrialState.PAUSED)
