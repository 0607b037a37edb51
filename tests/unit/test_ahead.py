"""Suggesting ahead of the study's lock (tuneyard.service.ahead), without a database: when a
study's sampler is saved, the held suggestions, and the turns that make one call's suggestion
overlap the previous call's transaction and always let go of it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tuneyard.scheduler.samplers.base import ModelSampler, Observation, make_sampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.service.ahead import SAVE_EVERY, SAVE_FRACTION, StudySampler, SuggestAhead
from tuneyard.service.trials import Suggestion
from tuneyard.spec import SamplerSpec, StudySpec

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def _sampler(kind: str = "tpe") -> ModelSampler:
    spec = StudySpec.model_validate({"name": "a", "space": SPACE, "sampler": {"type": kind}})
    sampler = make_sampler(SamplerSpec(type=kind), SearchSpace(spec.space), 3)  # type: ignore[arg-type]
    assert isinstance(sampler, ModelSampler)
    return sampler


def _observe(sampler: ModelSampler, n: int) -> None:
    sampler.observe([Observation(i, {"x": i / (n + 1)}, 1.0, float(i)) for i in range(n)])


def _suggestion(model: StudySampler, number: int = 0) -> Suggestion:
    return Suggestion(number, number, {"x": 0.5}, model)


def test_a_copy_never_saved_is_due_and_a_saved_one_waits_for_new_observations() -> None:
    model = StudySampler(_sampler())
    assert model.save_due()
    model.revision = 0
    assert not model.save_due()
    model.unsaved = SAVE_EVERY - 1
    assert not model.save_due()
    model.unsaved = SAVE_EVERY
    assert model.save_due()


def test_a_long_history_is_saved_once_per_fraction_of_its_size() -> None:
    model = StudySampler(_sampler())
    n = SAVE_EVERY * SAVE_FRACTION * 2
    _observe(model.sampler, n)
    model.revision, model.unsaved = 3, SAVE_EVERY
    assert not model.save_due()
    model.unsaved = n // SAVE_FRACTION
    assert model.save_due()


def test_a_sampler_that_changes_when_it_suggests_is_always_due() -> None:
    model = StudySampler(_sampler("cmaes"))
    model.revision = 5
    assert model.sampler.changes_on_suggest and model.save_due()


def test_restart_forgets_what_the_copy_took_in() -> None:
    model = StudySampler(_sampler())
    fresh = model.sampler.get_state()
    _observe(model.sampler, 5)
    model.revision, model.watermark, model.unsaved = 4, 17, 5
    model.restart()
    assert (model.revision, model.watermark, model.unsaved) == (-1, 0, 0)
    assert model.sampler.get_state() == fresh


def test_held_suggestions_are_kept_per_study_until_let_go_of() -> None:
    ahead, model = SuggestAhead(), StudySampler(_sampler())
    first, second = _suggestion(model, 0), _suggestion(model, 1)
    ahead.hold(1, first)
    ahead.hold(1, second)
    ahead.hold(2, first)
    held = ahead.held(1)
    assert held == [first, second]
    held.clear()  # a copy
    assert ahead.held(1) == [first, second]
    ahead.forget(1, first)
    ahead.forget(1, first)  # twice: nothing more happens
    assert ahead.held(1) == [second] and ahead.held(2) == [first]
    ahead.forget(1, second)
    ahead.forget(3, second)  # a study that holds none
    assert ahead.held(1) == [] and ahead.held(3) == []


class _Trials:
    """A stand-in for TrialService: each presuggest makes a suggestion; next_job records what
    was held when it ran, and waits for ``release`` when it is set."""

    def __init__(self, ahead: SuggestAhead) -> None:
        self.ahead = ahead
        self.model = StudySampler(_sampler())
        self.made: list[Suggestion] = []
        self.seen: list[list[Suggestion]] = []
        self.release: threading.Event | None = None
        self.started = threading.Event()

    def presuggest(self, study_id: int) -> Suggestion:
        early = _suggestion(self.model, len(self.made))
        self.made.append(early)
        return early

    def next_job(
        self,
        study_id: int,
        worker: str | None,
        early: Suggestion | None,
        presuggested: bool,
        gpus: Any = (),
    ) -> Any:
        assert presuggested
        self.seen.append(self.ahead.held(study_id))
        self.started.set()
        if self.release is not None:
            assert self.release.wait(10)
        if early is not None:
            self.ahead.forget(study_id, early)
        return (worker, early)


def test_a_call_suggests_while_the_previous_one_holds_the_lock() -> None:
    ahead = SuggestAhead()
    trials = _Trials(ahead)
    trials.release = threading.Event()

    async def go() -> list[Any]:
        first = asyncio.create_task(ahead.next(trials, 1, "w1"))  # type: ignore[arg-type]
        await asyncio.to_thread(trials.started.wait, 10)
        second = asyncio.create_task(ahead.next(trials, 1, "w2"))  # type: ignore[arg-type]
        while len(trials.made) < 2:  # the second suggests while the first holds the lock
            await asyncio.sleep(0.01)
        assert trials.seen == [trials.made[:1]]
        assert trials.release is not None
        trials.release.set()
        return list(await asyncio.gather(first, second))

    results = asyncio.run(go())
    assert results == [("w1", trials.made[0]), ("w2", trials.made[1])]
    # The second call's next_job saw its own suggestion held, the first one's let go of.
    assert trials.seen[1] == [trials.made[1]]
    assert ahead.held(1) == []


def test_a_call_cancelled_before_its_turn_lets_go_of_its_suggestion() -> None:
    ahead = SuggestAhead()
    trials = _Trials(ahead)
    trials.release = threading.Event()

    async def go() -> None:
        first = asyncio.create_task(ahead.next(trials, 1, "w1"))  # type: ignore[arg-type]
        await asyncio.to_thread(trials.started.wait, 10)
        second = asyncio.create_task(ahead.next(trials, 1, "w2"))  # type: ignore[arg-type]
        while len(ahead.held(1)) < 2:  # held, waiting for the first to finish
            await asyncio.sleep(0.01)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert ahead.held(1) == trials.made[:1]
        assert trials.release is not None
        trials.release.set()
        await first

    asyncio.run(go())
    assert len(trials.seen) == 1 and ahead.held(1) == []


def test_turns_nobody_holds_are_forgotten_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SuggestAhead, "MAX_TURNS", 4)
    ahead = SuggestAhead()
    trials = _Trials(ahead)

    async def go() -> None:
        for study in range(10):
            await ahead.next(trials, study, None)  # type: ignore[arg-type]

    asyncio.run(go())
    assert len(ahead._turns) <= 4
    assert all(ahead.held(study) == [] for study in range(10))
