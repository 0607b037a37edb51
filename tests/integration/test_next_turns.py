"""Several ``next`` calls of one study served in one transaction (TrialService.next_jobs), on
SQLite and PostgreSQL: each call gets what it would have had in its place in a row of single
calls, a turn stops at the study's slot limit and at its end, and a turn that fails is served
call by call, so no call gets another's error."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from tests.helpers import study_spec
from tests.integration.test_presuggest import _finish, _kit, _warm
from tuneyard.errors import Conflict, StudyFinished
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import AssignmentResult, Suggestion, TrialService
from tuneyard.service.trials.assignment import NextCall
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState, TrialState
from tuneyard.store import counters
from tuneyard.store.models import Attempt, Study, Trial


def _spec(trials: int = 40, concurrent: int = 8) -> StudySpec:
    return StudySpec.model_validate(
        study_spec(
            sampler={"type": "tpe", "seed": 11, "n_startup": 3},
            scheduler={"mode": "stopping"},
            limits={"max_trials": trials, "max_concurrent": concurrent},
        )
    )


def _jobs(outcomes: list[object]) -> list[AssignmentResult]:
    assert all(isinstance(o, AssignmentResult) for o in outcomes), outcomes
    return outcomes  # type: ignore[return-value]


def _warm_and_held(
    database_url: str, tmp_path: Path, n: int
) -> tuple[Toolkit, TrialService, int, list[Suggestion]]:
    """A study past its sampler's start-up (5 trials done) and ``n`` suggestions made ahead
    for it, each held until its call is served, as the API does."""
    kit = _kit(database_url, tmp_path)
    trials = TrialService(kit)
    sid = StudyService(kit).create(_spec()).study.id
    _warm(trials, sid, 5)
    early = []
    for _ in range(n):
        made = trials.presuggest(sid)
        assert made is not None
        kit.ahead.hold(sid, made)
        early.append(made)
    return kit, trials, sid, early


def test_a_turn_gives_each_call_its_own_trial_and_suggestion(
    database_url: str, tmp_path: Path
) -> None:
    kit, trials, sid, early = _warm_and_held(database_url, tmp_path, 3)
    calls = [NextCall(f"w{i}", e, [{"index": i}]) for i, e in enumerate(early)]
    jobs = _jobs(trials.next_jobs(sid, calls))
    assert [j.trial.number for j in jobs] == [5, 6, 7]
    assert [j.trial.params for j in jobs] == [e.params for e in early]
    assert [j.trial.worker for j in jobs] == ["w0", "w1", "w2"]
    assert kit.ahead.held(sid) == []
    with kit.transaction() as s:
        assert counters.read(s, sid).active == 3
        gpus = dict(
            s.execute(
                select(Attempt.trial_id, Attempt.gpus).where(
                    Attempt.trial_id.in_([j.trial.id for j in jobs])
                )
            ).all()
        )
    assert [gpus[j.trial.id] for j in jobs] == [[{"index": i}] for i in range(3)]


def test_a_turn_out_of_time_answers_the_calls_it_served_and_keeps_the_rest_waiting(
    database_url: str, tmp_path: Path
) -> None:
    kit, trials, sid, early = _warm_and_held(database_url, tmp_path, 3)
    calls = [NextCall(f"w{i}", e) for i, e in enumerate(early)]
    # No time at all: the first call is served, the others wait with their suggestions.
    [first] = _jobs(trials.next_jobs(sid, calls, seconds=0.0))
    assert (first.trial.number, first.trial.params) == (5, early[0].params)
    assert kit.ahead.held(sid) == early[1:]
    jobs = _jobs(trials.next_jobs(sid, calls[1:], seconds=60.0))
    assert [(j.trial.number, j.trial.params) for j in jobs] == [
        (6, early[1].params),
        (7, early[2].params),
    ]
    assert kit.ahead.held(sid) == []


def test_a_turn_stops_at_the_slot_limit(database_url: str, tmp_path: Path) -> None:
    kit = _kit(database_url, tmp_path)
    trials = TrialService(kit)
    sid = StudyService(kit).create(_spec(concurrent=3)).study.id
    outcomes = trials.next_jobs(sid, [NextCall(f"w{i}") for i in range(5)])
    assert [o.trial.number if isinstance(o, AssignmentResult) else o for o in outcomes] == [
        0,
        1,
        2,
        None,
        None,
    ]
    with kit.transaction() as s:
        assert counters.read(s, sid).active == 3
        running = s.scalars(
            select(Trial.number).where(Trial.study_id == sid, Trial.state == TrialState.RUNNING)
        ).all()
    assert sorted(running) == [0, 1, 2]


def test_the_calls_of_a_turn_that_finds_the_study_over_are_told_so(
    database_url: str, tmp_path: Path
) -> None:
    kit = _kit(database_url, tmp_path)
    trials = TrialService(kit)
    sid = StudyService(kit).create(_spec(trials=2)).study.id
    jobs = _jobs(trials.next_jobs(sid, [NextCall("w0"), NextCall("w1"), NextCall("w2")])[:2])
    for job in jobs:
        _finish(trials, job.trial)
    outcomes = trials.next_jobs(sid, [NextCall("w0"), NextCall("w1")])
    assert all(isinstance(o, StudyFinished) for o in outcomes), outcomes
    with kit.transaction() as s:
        study = s.get(Study, sid)
        assert study is not None and study.state == StudyState.COMPLETED


def test_a_failed_turn_is_served_call_by_call(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = _kit(database_url, tmp_path)
    trials = TrialService(kit)
    sid = StudyService(kit).create(_spec()).study.id
    alone = TrialService._next_jobs
    turns: list[int] = []

    def fails_together(
        self: TrialService, study_id: int, calls: list[NextCall], seconds: float | None = None
    ) -> object:
        turns.append(len(calls))
        if len(calls) > 1:
            # Half-done when it fails: a trial made, then the conflict.
            with kit.transaction() as s:
                s.add(Trial(study_id=study_id, number=99, state=TrialState.QUEUED, params={}))
                raise Conflict("trial 7 was chosen for promotion but is running")
        return alone(self, study_id, calls, seconds)

    monkeypatch.setattr(TrialService, "_next_jobs", fails_together)
    jobs = _jobs(trials.next_jobs(sid, [NextCall("w0"), NextCall("w1")]))
    assert turns == [2, 1, 1]
    assert [(j.trial.number, j.trial.worker) for j in jobs] == [(0, "w0"), (1, "w1")]
    with kit.transaction() as s:
        numbers = s.scalars(select(Trial.number).where(Trial.study_id == sid)).all()
        assert sorted(numbers) == [0, 1]  # nothing of the failed turn kept
        assert counters.read(s, sid).active == 2
