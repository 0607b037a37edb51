"""Suggesting ahead of the study's lock, as one API process does it.

``next`` holds the study's row lock, so the database serves a study's calls one at a time
anyway; a model-based suggestion, the one costly step, is therefore made before that lock
is taken (``TrialService.presuggest``). Two objects keep what this takes:

- :class:`StudySampler`: a study's model-based sampler as this process holds it: the lock its
  overlapping calls take, and where this copy stands against the state stored in the database
  (the revision it loaded or saved, the watermark of the observations it took in, how many it
  took in since the last save). The sampler itself (``scheduler/``) is the algorithm and its
  JSON state only.
- :class:`SuggestAhead`: the process's registry of suggestions made ahead and held until they
  are trials, and of the turns its ``next`` calls take per study: one at a time suggests, and
  the calls that suggested while a transaction held the study's lock are served together by
  the next one, so one call's suggestion overlaps the previous calls' transaction and the
  lock is taken once per batch of calls, not once per call.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.samplers.base import Observation as SamplerObservation
from tuneyard.store.models import Observation, SamplerState, Trial

if TYPE_CHECKING:
    from tuneyard.service.trials import AssignmentResult, Suggestion, TrialService
    from tuneyard.service.trials.assignment import NextCall


# A model-based sampler's state is saved at least once per this many new observations.
SAVE_EVERY = 32

# ... or once per this fraction of the history's size, when that is more: a save writes the
# whole history, so saving every SAVE_EVERY observations would cost O(n) per observation.
SAVE_FRACTION = 8


@dataclass(eq=False)
class StudySampler:
    """A study's model-based sampler as this process holds it, and where it stands against
    the stored state (kept here, not on the sampler: what is stored is the service's
    business)."""

    sampler: ModelSampler
    # Held while this copy is brought up to date, suggests or is saved: the calls of one API
    # process may overlap.
    guard: threading.Lock = field(default_factory=threading.Lock)
    # The stored revision this copy matches (-1: none yet), the last observation it took in,
    # and how many it took in since the state was last saved.
    revision: int = -1
    watermark: int = 0
    unsaved: int = 0

    def save_due(self) -> bool:
        """Whether the stored state should be written now: suggesting changed it, or at least
        SAVE_EVERY observations (or 1/SAVE_FRACTION of the history, when that is more) came in
        since the last save, or nothing was saved yet."""
        lag = max(SAVE_EVERY, len(self.sampler.history) // SAVE_FRACTION)
        return self.sampler.changes_on_suggest or self.unsaved >= lag or self.revision < 0

    def restart(self) -> None:
        """Start from scratch (no state stored yet), whatever this copy took in during a call
        that was rolled back."""
        sampler = self.sampler
        sampler.set_state(type(sampler)(sampler.space, sampler.seed, sampler.spec).get_state())
        self.revision, self.watermark, self.unsaved = -1, 0, 0

    def refresh(self, s: Session, study_id: int, load: bool = True) -> bool:
        """Bring this copy up to date: the stored state when another process moved it on,
        then the observations after its watermark. False when the study has no stored state
        yet (with ``load``).

        The stored state is read only when this copy is not the latest: it holds the whole
        history, and reading it on every call would grow with the study."""
        if load:
            row = s.execute(
                select(SamplerState.revision).where(SamplerState.study_id == study_id)
            ).first()
            if row is None:
                return False
            if self.revision != row.revision:
                # Another API process moved it on (or this one's last save was rolled back).
                stored = s.execute(
                    select(SamplerState.state, SamplerState.revision, SamplerState.watermark).where(
                        SamplerState.study_id == study_id
                    )
                ).one()
                self.sampler.set_state(stored.state)
                self.revision, self.watermark = stored.revision, stored.watermark
                self.unsaved = 0
        new = s.execute(
            select(
                Observation.id,
                Observation.number,
                Observation.resource,
                Observation.score,
                Trial.params,
                Observation.scores,
                Observation.violation,
                Observation.noise,
            )
            .join(Trial, Trial.id == Observation.trial_id)
            .where(Observation.study_id == study_id, Observation.id > self.watermark)
            .order_by(Observation.id)
        ).all()
        if new:
            self.sampler.observe(
                [
                    SamplerObservation(
                        n, params, r, score, None if v is None else tuple(v), violation, noise
                    )
                    for _, n, r, score, params, v, violation, noise in new
                ]
            )
            self.watermark = new[-1][0]
            self.unsaved += len(new)
        return True

    def save(
        self, s: Session, study_id: int, now: datetime, row: SamplerState | None = None
    ) -> None:
        """Save the state (study lock held) when due (:meth:`save_due`): a process that loads
        an older state reads the observations after its watermark, so a lagging save loses
        nothing, and the common next call neither reads nor rewrites the whole history. A copy
        that another process moved past meanwhile is not saved: the stored state is as good,
        and this process loads it next time. ``row``: the one this call created."""
        if not self.save_due():
            return
        if row is None:
            row = s.scalar(
                select(SamplerState)
                .where(SamplerState.study_id == study_id)
                .options(defer(SamplerState.state))
            )
        if row is None or (self.revision >= 0 and row.revision != self.revision):
            return
        row.state = self.sampler.get_state()
        row.watermark = self.watermark
        row.revision += 1
        row.updated_at = now
        self.revision = row.revision
        self.unsaved = 0


@dataclass(eq=False)
class _Waiting:
    """A ``next`` call waiting for its study's turn: what it asks, and where its answer goes."""

    call: NextCall
    answer: asyncio.Future[AssignmentResult | None]


@dataclass
class _Turns:
    """This process's turns for the ``next`` calls of one study: one call at a time suggests,
    and the calls that have suggested wait in ``waiting`` until the task that serves them
    (``serving``) takes them, as many as queued, into one transaction."""

    suggest: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: deque[_Waiting] = field(default_factory=deque)
    serving: asyncio.Task[None] | None = None

    def idle(self) -> bool:
        return not (self.suggest.locked() or self.waiting or self.serving)


class SuggestAhead:
    """This process's suggestions made ahead of the study's lock and held until they are
    trials, and the turns its ``next`` calls take per study."""

    # Past this many studies, the turns nobody holds or waits for are forgotten.
    MAX_TURNS = 4096
    # The most calls one transaction serves, and how long it may take calls in: the study's
    # lock is held meanwhile, for every other process's calls and the study's completions.
    MAX_BATCH = 32
    TURN_SECONDS = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[int, list[Suggestion]] = {}
        self._turns: dict[int, _Turns] = {}

    async def next(
        self,
        trials: TrialService,
        study_id: int,
        worker: str | None,
        gpus: Sequence[dict[str, Any]] = (),
    ) -> AssignmentResult | None:
        """The study's next piece of work (``TrialService.next_jobs``), its suggestion made
        ahead of the study's lock while earlier calls of this process hold it. The calls
        wait here, holding neither a thread nor a database connection that the study's
        reports need meanwhile, and the ones that queued while a transaction held the lock
        are served together by the next one: at many workers per study, the lock is taken
        once per batch instead of once per call. The suggestion is held until ``next_jobs``
        has it, and let go of even when the call is cancelled on the way."""
        turns = self._study_turns(study_id)
        async with turns.suggest:
            early = await anyio.to_thread.run_sync(trials.presuggest, study_id)
            if early is not None:  # the next call suggests after this one
                self.hold(study_id, early)
        from tuneyard.service.trials.assignment import NextCall  # which imports this module

        me = _Waiting(
            NextCall(worker, early, tuple(gpus)), asyncio.get_running_loop().create_future()
        )
        turns.waiting.append(me)
        if turns.serving is None:
            turns.serving = asyncio.create_task(self._serve(trials, study_id, turns))
        try:
            return await me.answer
        except BaseException:
            # Cancelled on the way: taken into no transaction yet, the call leaves the queue
            # (one that a transaction took lets go of its suggestion there).
            if me in turns.waiting:
                turns.waiting.remove(me)
                if early is not None:
                    self.forget(study_id, early)
            raise

    async def _serve(self, trials: TrialService, study_id: int, turns: _Turns) -> None:
        """Serve the study's waiting calls, in turns of up to ``MAX_BATCH``, until none
        waits. A task of its own, so that no caller's cancellation stops it."""
        batch: list[_Waiting] = []
        try:
            while turns.waiting:
                batch = []
                while turns.waiting and len(batch) < self.MAX_BATCH:
                    w = turns.waiting.popleft()
                    if not w.answer.done():
                        batch.append(w)
                    elif w.call.early is not None:  # its caller went away meanwhile
                        self.forget(study_id, w.call.early)
                if not batch:
                    continue
                try:
                    outcomes: list[Any] = await anyio.to_thread.run_sync(
                        trials.next_jobs, study_id, [w.call for w in batch], self.TURN_SECONDS
                    )
                except Exception as e:  # each call of the turn gets the error
                    outcomes = [e] * len(batch)
                # The calls the turn had no time for go first in the next one.
                turns.waiting.extendleft(reversed(batch[len(outcomes) :]))
                batch = batch[: len(outcomes)]
                for w, outcome in zip(batch, outcomes, strict=True):
                    if w.answer.done():  # its caller went away
                        continue
                    if isinstance(outcome, Exception):
                        w.answer.set_exception(outcome)
                    else:
                        w.answer.set_result(outcome)
                batch = []
        except BaseException:
            # The process is stopping: the calls this task took or would have taken are
            # cancelled, and the suggestions of those no transaction took let go of.
            for w in batch:
                w.answer.cancel()
            while turns.waiting:
                w = turns.waiting.popleft()
                if w.call.early is not None:
                    self.forget(study_id, w.call.early)
                w.answer.cancel()
            raise
        finally:
            turns.serving = None

    def held(self, study_id: int) -> list[Suggestion]:
        """The study's suggestions held until they become trials (a copy)."""
        with self._lock:
            return list(self._held.get(study_id, ()))

    def hold(self, study_id: int, suggestion: Suggestion) -> None:
        with self._lock:
            self._held.setdefault(study_id, []).append(suggestion)

    def forget(self, study_id: int, suggestion: Suggestion) -> None:
        with self._lock:
            pending = self._held.get(study_id, [])
            if suggestion in pending:
                pending.remove(suggestion)
            if not pending:
                self._held.pop(study_id, None)

    def _study_turns(self, study_id: int) -> _Turns:
        # Only the event loop's thread calls this: no lock needed.
        turns = self._turns.get(study_id)
        if turns is None:
            if len(self._turns) >= self.MAX_TURNS:
                for key in [k for k, t in self._turns.items() if t.idle()]:
                    del self._turns[key]
            turns = self._turns[study_id] = _Turns()
        return turns
