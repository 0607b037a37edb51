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
from tuneyard.service.trials.assignment import NextCall
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
    """A stand-in for TrialService: each presuggest makes a suggestion; next_jobs records what
    was held when it ran and the calls of its turn, waits for ``release`` when it is set,
    and answers each call with (worker, suggestion), or raises ``fail`` once when set."""

    def __init__(self, ahead: SuggestAhead) -> None:
        self.ahead = ahead
        self.model = StudySampler(_sampler())
        self.made: list[Suggestion] = []
        self.seen: list[list[Suggestion]] = []
        self.turns: list[list[str | None]] = []
        self.release: threading.Event | None = None
        self.fail: Exception | None = None
        # How many calls each turn answers, first to last (then all): the rest wait.
        self.answer: list[int] = []
        self.started = threading.Event()

    def presuggest(self, study_id: int) -> Suggestion:
        early = _suggestion(self.model, len(self.made))
        self.made.append(early)
        return early

    def next_jobs(
        self, study_id: int, calls: list[NextCall], seconds: float | None = None
    ) -> list[Any]:
        self.seen.append(self.ahead.held(study_id))
        self.turns.append([c.worker for c in calls])
        self.started.set()
        if self.release is not None:
            assert self.release.wait(10)
        if self.answer:
            calls = calls[: self.answer.pop(0)]
        for c in calls:
            if c.early is not None:
                self.ahead.forget(study_id, c.early)
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        return [(c.worker, c.early) for c in calls]


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


async def _queue_behind_the_first(ahead: SuggestAhead, trials: _Trials, n: int) -> list[Any]:
    """Call ``w0``; once its turn holds the lock, calls ``w1``..``w{n}`` that suggest and
    wait; then let the first turn go on, and return every call's answer (or error)."""
    first = asyncio.create_task(ahead.next(trials, 1, "w0"))  # type: ignore[arg-type]
    await asyncio.to_thread(trials.started.wait, 10)
    rest = [
        asyncio.create_task(ahead.next(trials, 1, f"w{i}"))  # type: ignore[arg-type]
        for i in range(1, n + 1)
    ]
    while len(ahead.held(1)) < n + 1:  # all of them suggested and wait for the first turn
        await asyncio.sleep(0.01)
    assert trials.release is not None
    trials.release.set()
    return list(await asyncio.gather(first, *rest, return_exceptions=True))


def test_calls_that_queue_while_a_turn_holds_the_lock_are_served_in_the_next_one() -> None:
    ahead = SuggestAhead()
    trials = _Trials(ahead)
    trials.release = threading.Event()

    results = asyncio.run(_queue_behind_the_first(ahead, trials, 4))
    assert trials.turns == [["w0"], ["w1", "w2", "w3", "w4"]]
    assert results == [(f"w{i}", trials.made[i]) for i in range(5)]
    assert ahead.held(1) == [] and ahead._turns[1].idle()


def test_calls_a_turn_had_no_time_for_go_first_in_the_next_one() -> None:
    ahead = SuggestAhead()
    trials = _Trials(ahead)
    trials.release = threading.Event()
    trials.answer = [1, 2]  # the first turn answers its one call, the second two of four

    results = asyncio.run(_queue_behind_the_first(ahead, trials, 4))
    assert trials.turns == [["w0"], ["w1", "w2", "w3", "w4"], ["w3", "w4"]]
    # The calls left over kept their suggestions until their own turn.
    assert trials.seen[2] == trials.made[3:]
    assert results == [(f"w{i}", trials.made[i]) for i in range(5)]
    assert ahead.held(1) == []


def test_a_failed_turn_answers_its_calls_with_the_error_and_the_next_turn_is_served() -> None:
    ahead = SuggestAhead()
    trials = _Trials(ahead)
    trials.release = threading.Event()
    trials.fail = RuntimeError("database went away")

    first, second = asyncio.run(_queue_behind_the_first(ahead, trials, 1))
    assert isinstance(first, RuntimeError) and str(first) == "database went away"
    assert second == ("w1", trials.made[1])
    assert ahead.held(1) == []


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
