"""New trials' configurations: a model-based sampler fed incrementally with the observations
recorded since its watermark, its state saved in the database, and a suggestion made ahead of
the study's lock (``presuggest``) so that the costly step never holds it."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, defer
from threadpoolctl import ThreadpoolController

from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.samplers.base import Observation as SamplerObservation
from tuneyard.service import metrics as meter
from tuneyard.service.context import StudyContext
from tuneyard.service.trials.base import TrialCore
from tuneyard.states import StudyState, TrialState
from tuneyard.store.models import (
    Observation,
    SamplerState,
    Study,
    Trial,
)
from tuneyard.store.sql import insert_new


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


# A model-based sampler's state is saved at least once per this many new observations.
SAVE_EVERY = 32

# ... or once per this fraction of the history's size, when that is more: a save writes the
# whole history, so saving every SAVE_EVERY observations would cost O(n) per observation.
SAVE_FRACTION = 8

# Observations recorded in a session, by (trial id, resource): each is written once.
_OBSERVED = "tuneyard.trials.observed"


def _save_after(sampler: ModelSampler) -> int:
    """How many new observations a model-based sampler's stored state may lag behind."""
    return max(SAVE_EVERY, len(sampler.history) // SAVE_FRACTION)


@dataclass(frozen=True, eq=False)
class Suggestion:
    """A new trial's configuration made before the study's lock was taken (``presuggest``)."""

    number: int  # the trial number it was suggested for
    base: int  # the study's trials_started when it was suggested
    params: dict[str, Any]
    sampler: ModelSampler  # the copy that made it (a study's context may be rebuilt)


class Suggestions(TrialCore):
    def presuggest(self, study_id: int) -> Suggestion | None:
        """The next new trial's configuration, made without the study's lock, or None when
        the next call may not make a new trial, or its sampler is not model-based. A caller
        whose calls overlap holds it (``Toolkit.hold_suggestion``) until it hands it to
        ``next_job``, which always lets go of it; a held suggestion counts as running for
        the ones made after it, which take the numbers after it.

        Only a model-based suggestion costs much (TPE with 64 running trials, a GP), and made
        under the lock it would hold every other ``next`` and every rung decision of the study
        for as long. It is made here from what is committed (the observations, the running
        trials, the trial number it would get) and from the suggestions this process holds.
        Under the lock ``_insert_trial`` takes it when nothing was made meanwhile (so for a
        lone worker, suggestions are those of the locked path), or when the trials made since
        hold other configurations (``_still_new``): two API processes may suggest from the
        same state and random stream, and the second to take the lock suggests again. The
        stored state is only ever written under the lock."""
        with self.kit.reading() as s:
            study = s.get(Study, study_id)
            if study is None or study.state != StudyState.RUNNING:
                return None
            ctx = self.kit.context(study)
            sampler = ctx.sampler
            if (
                not isinstance(sampler, ModelSampler)
                or sampler.changes_on_suggest
                or study.active >= ctx.spec.limits.max_concurrent
                or study.trials_started >= ctx.capacity
            ):
                return None
            if ctx.scheduler.pauses and ctx.scheduler.next_promotion(ctx.board(s, study_id)):
                return None  # the next call resumes a paused trial
            with sampler.guard:
                if not self._refresh_sampler(s, study, sampler):
                    return None  # nothing stored yet: the first one is made under the lock
                made = self.kit.suggestions(study_id)
                number = study.trials_started + len(made)
                params = meter.timed_suggest(
                    self.kit,
                    ctx,
                    lambda: self._model_suggest(
                        s, study, sampler, number, [m.params for m in made]
                    ),
                )
            return Suggestion(number, study.trials_started, params, sampler)

    @staticmethod
    def _still_new(
        s: Session, study: Study, early: Suggestion, number: int, ctx: StudyContext
    ) -> bool:
        """Whether a suggestion made before the lock may be the new trial ``number``: no trial
        was made since it was suggested, or those made since hold other configurations. (Its
        random stream may then be that of another number: the order in which parallel
        workers arrive decides which trial gets which configuration anyway.)"""
        if early.sampler is not ctx.sampler:
            return False
        if early.base == number == early.number:
            return True
        since = s.scalars(
            select(Trial.params).where(Trial.study_id == study.id, Trial.number >= early.base)
        )
        return all(params != early.params for params in since)

    def _suggest(self, s: Session, ctx: StudyContext, study: Study, number: int) -> dict[str, Any]:
        """The new trial's configuration, under the study's lock. A model-based sampler is
        brought up to date with the observations recorded since its watermark (not the whole
        study) and told which configurations are running; its state is saved when due (see
        ``_save_sampler``)."""
        sampler = ctx.sampler
        if not isinstance(sampler, ModelSampler):
            return sampler.suggest(number)
        with sampler.guard:
            return self._suggest_model(s, ctx, study, sampler, number)

    def _suggest_model(
        self, s: Session, ctx: StudyContext, study: Study, sampler: ModelSampler, number: int
    ) -> dict[str, Any]:
        created = None
        if not self._refresh_sampler(s, study, sampler):
            created = SamplerState(
                study_id=study.id,
                kind=sampler.kind,
                version=sampler.version,
                watermark=0,
                revision=0,
                state={},
            )
            s.add(created)
            # From scratch, whatever this process's copy took in during a rolled-back call.
            sampler.set_state(type(sampler)(sampler.space, sampler.seed, sampler.spec).get_state())
            sampler.revision, sampler.watermark, sampler.unsaved = -1, 0, 0
            self._refresh_sampler(s, study, sampler, load=False)
        params = self._model_suggest(s, study, sampler, number)
        self._save_sampler(s, ctx, study, created)
        return params

    def _refresh_sampler(
        self, s: Session, study: Study, sampler: ModelSampler, load: bool = True
    ) -> bool:
        """Bring this process's copy of the sampler up to date: the stored state when another
        process moved it on, then the observations after its watermark. False when the study
        has no stored state yet.

        The stored state is read only when this process's copy is not the latest: it holds
        the whole history, and reading it on every call would grow with the study."""
        if load:
            row = s.execute(
                select(SamplerState.revision).where(SamplerState.study_id == study.id)
            ).first()
            if row is None:
                return False
            if sampler.revision != row.revision:
                # Another API process moved it on (or this one's last save was rolled back).
                stored = s.execute(
                    select(SamplerState.state, SamplerState.revision, SamplerState.watermark).where(
                        SamplerState.study_id == study.id
                    )
                ).one()
                sampler.set_state(stored.state)
                sampler.revision, sampler.watermark = stored.revision, stored.watermark
                sampler.unsaved = 0
        new = s.execute(
            select(
                Observation.id,
                Observation.number,
                Observation.resource,
                Observation.score,
                Trial.params,
            )
            .join(Trial, Trial.id == Observation.trial_id)
            .where(Observation.study_id == study.id, Observation.id > sampler.watermark)
            .order_by(Observation.id)
        ).all()
        if new:
            sampler.observe(
                [SamplerObservation(n, params, r, score) for _, n, r, score, params in new]
            )
            sampler.watermark = new[-1][0]
            sampler.unsaved += len(new)
        return True

    @staticmethod
    def _model_suggest(
        s: Session,
        study: Study,
        sampler: ModelSampler,
        number: int,
        pending: Sequence[dict[str, Any]] = (),
    ) -> dict[str, Any]:
        running = [
            *s.scalars(
                select(Trial.params).where(
                    Trial.study_id == study.id, Trial.state == TrialState.RUNNING
                )
            ),
            *pending,
        ]
        # One BLAS thread: the models' matrices are small, and handing them to a second thread
        # costs more than it saves (a GP fit at 500 observations: 11 ms instead of 50 ms).
        with _blas().limit(limits=1):
            return sampler.suggest(number, running)

    def _save_sampler(
        self, s: Session, ctx: StudyContext, study: Study, row: SamplerState | None = None
    ) -> None:
        """Save the sampler's state (study lock held) when suggesting changed it, and
        otherwise once SAVE_EVERY observations (or 1/SAVE_FRACTION of the history, when that
        is more) have come in since the last save: a process that loads an older state reads
        the observations after its watermark, so a lagging save loses nothing, and the common
        next call neither reads nor rewrites the whole history. A copy that another process
        moved past meanwhile is not saved: the stored state is as good, and this process
        loads it next time."""
        sampler = ctx.sampler
        assert isinstance(sampler, ModelSampler)
        if not (
            sampler.changes_on_suggest
            or sampler.unsaved >= _save_after(sampler)
            or sampler.revision < 0
        ):
            return
        if row is None:  # not the row this call created
            row = s.scalar(
                select(SamplerState)
                .where(SamplerState.study_id == study.id)
                .options(defer(SamplerState.state))
            )
        if row is None or (sampler.revision >= 0 and row.revision != sampler.revision):
            return
        row.state = sampler.get_state()
        row.watermark = sampler.watermark
        row.revision += 1
        row.updated_at = self.kit.clock()
        sampler.revision = row.revision
        sampler.unsaved = 0

    def _observe(
        self, s: Session, ctx: StudyContext, trial: Trial, resource: float, score: float
    ) -> None:
        """Record a result for model-based samplers (once per trial and resource)."""
        if not isinstance(ctx.sampler, ModelSampler) or not math.isfinite(score):
            return
        # A trial that stops or completes at a rung is observed there twice in one call.
        done: set[tuple[int, float]] = s.info.setdefault(_OBSERVED, set())
        if (trial.id, resource) in done:
            return
        done.add((trial.id, resource))
        insert_new(
            s.connection(),
            Observation,
            {
                "study_id": trial.study_id,
                "trial_id": trial.id,
                "number": trial.number,
                "resource": resource,
                "score": score,
                "created_at": self.kit.clock(),
            },
            key=(Observation.trial_id, Observation.resource),
        )
