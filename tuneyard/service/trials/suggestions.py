"""New trials' configurations: a model-based sampler fed incrementally with the observations
recorded since its watermark, its state saved in the database (``service.ahead.StudySampler``
keeps where this process's copy stands), and a suggestion made ahead of the study's lock
(``presuggest``) so that the costly step never holds it."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from threadpoolctl import ThreadpoolController

from tuneyard.scheduler.board import Vector
from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.service import metrics as meter
from tuneyard.service.ahead import SAVE_EVERY, SAVE_FRACTION, StudySampler
from tuneyard.service.context import StudyContext
from tuneyard.service.trials.base import TrialCore
from tuneyard.service.warm_start import priors
from tuneyard.states import StudyState, TrialState
from tuneyard.store import counters, observations
from tuneyard.store.models import (
    SamplerState,
    Study,
    Trial,
)


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


__all__ = ["SAVE_EVERY", "SAVE_FRACTION", "Suggestion", "Suggestions"]

# Observations recorded in a session, by (trial id, resource): each is written once.
_OBSERVED = "tuneyard.trials.observed"


@dataclass(frozen=True, eq=False)
class Suggestion:
    """A new trial's configuration made before the study's lock was taken (``presuggest``)."""

    number: int  # the trial number it was suggested for
    base: int  # the study's trials_started when it was suggested
    params: dict[str, Any]
    model: StudySampler  # the copy that made it (a study's context may be rebuilt)


class Suggestions(TrialCore):
    def presuggest(self, study_id: int) -> Suggestion | None:
        """The next new trial's configuration, made without the study's lock, or None when
        the next call may not make a new trial, or its sampler is not model-based. A caller
        whose calls overlap holds it (``SuggestAhead.hold``) until it hands it to
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
            model = ctx.model
            if (
                model is None
                or model.sampler.changes_on_suggest
                or counters.read(s, study.id).active >= ctx.spec.limits.max_concurrent
                or not self._may_start_new(s, study, ctx)
            ):
                return None
            if ctx.scheduler.pauses and ctx.scheduler.next_promotion(ctx.board(s, study_id)):
                return None  # the next call resumes a paused trial
            with model.guard:
                if not model.refresh(s, study.id):
                    return None  # nothing stored yet: the first one is made under the lock
                made = self.kit.ahead.held(study_id)
                number = study.trials_started + len(made)
                params = meter.timed_suggest(
                    self.kit,
                    ctx,
                    lambda: self._model_suggest(
                        s, study, model.sampler, number, [m.params for m in made]
                    ),
                )
            return Suggestion(number, study.trials_started, params, model)

    @staticmethod
    def _still_new(
        s: Session, study: Study, early: Suggestion, number: int, ctx: StudyContext
    ) -> bool:
        """Whether a suggestion made before the lock may be the new trial ``number``: no trial
        was made since it was suggested, or those made since hold other configurations. (Its
        random stream may then be that of another number: the order in which parallel
        workers arrive decides which trial gets which configuration anyway.)"""
        if early.model is not ctx.model:
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
        ``StudySampler.save``)."""
        model = ctx.model
        if model is None:
            return ctx.sampler.suggest(number)
        with model.guard:
            created = None
            if not model.refresh(s, study.id):
                created = SamplerState(
                    study_id=study.id,
                    kind=model.sampler.kind,
                    version=model.sampler.version,
                    watermark=0,
                    revision=0,
                    state={},
                )
                s.add(created)
                model.restart()
                if ctx.spec.warm_start is not None:
                    # Earlier studies' observations first, saved with the state from here on.
                    found = priors(s, ctx.space, ctx.spec.warm_start.studies, ctx.sign)
                    if found:
                        model.sampler.observe(found)
                model.refresh(s, study.id, load=False)
            params = self._model_suggest(s, study, model.sampler, number)
            model.save(s, study.id, self.kit.clock(), created)
            return params

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
                    Trial.study_id == study.id,
                    Trial.state == TrialState.RUNNING,
                    Trial.parent_id.is_(None),
                )
            ),
            *pending,
        ]
        # One BLAS thread: the models' matrices are small, and handing them to a second thread
        # costs more than it saves (a GP fit at 500 observations: 11 ms instead of 50 ms).
        with _blas().limit(limits=1):
            return sampler.suggest(number, running)

    def _observe(
        self,
        s: Session,
        ctx: StudyContext,
        trial: Trial,
        resource: float,
        score: float,
        vector: Vector | None = None,
        noise: float = 0.0,
    ) -> None:
        """Record a result for model-based samplers (once per trial and resource); a
        replicate's is not one: its trial's aggregate is, with its squared standard error as
        ``noise``."""
        if ctx.model is None or not math.isfinite(score) or trial.parent_id is not None:
            return
        # A trial that stops or completes at a rung is observed there twice in one call.
        done: set[tuple[int, float]] = s.info.setdefault(_OBSERVED, set())
        if (trial.id, resource) in done:
            return
        done.add((trial.id, resource))
        observations.add(
            s,
            study_id=trial.study_id,
            trial_id=trial.id,
            number=trial.number,
            resource=resource,
            score=score,
            scores=None if vector is None else list(vector.scores),
            violation=0.0 if vector is None else vector.violation,
            noise=noise,
            created_at=self.kit.clock(),
        )
