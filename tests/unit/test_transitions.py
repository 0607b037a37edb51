"""The state machines of trials and studies, walked pair by pair: ``move`` and the checks
accept exactly the moves their tables list, and refuse every other one without changing
anything."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from tuneyard.errors import InvalidTransition
from tuneyard.service.transitions import (
    STUDY_TRANSITIONS,
    TRIAL_TRANSITIONS,
    check_study,
    check_trial,
    move,
    move_study,
)
from tuneyard.states import FINAL_STUDY_STATES, FINAL_TRIAL_STATES, StudyState, TrialState

TRIAL_PAIRS = list(itertools.product(TrialState, TrialState))
STUDY_PAIRS = list(itertools.product(StudyState, StudyState))

# The moves the service makes, each with where: the tables must hold these and no others.
SERVICE_TRIAL_MOVES = {
    (TrialState.QUEUED, TrialState.RUNNING),  # next: a retry or a trial handed back runs
    (TrialState.QUEUED, TrialState.STOPPED),  # the study ends with the trial still queued
    (TrialState.RUNNING, TrialState.QUEUED),  # a failure with retries left, or a release
    (TrialState.RUNNING, TrialState.PAUSED),  # pause: the checkpoint is saved at a rung
    (TrialState.RUNNING, TrialState.COMPLETED),
    (TrialState.RUNNING, TrialState.STOPPED),
    (TrialState.RUNNING, TrialState.FAILED),
    (TrialState.PAUSED, TrialState.RUNNING),  # next: promoted and resumed
    (TrialState.PAUSED, TrialState.STOPPED),  # the study ends before its promotion
    (TrialState.PAUSED, TrialState.QUEUED),  # a replicate queued again: its trial promoted
    (TrialState.PAUSED, TrialState.FAILED),  # a trial of replicates paused, one of them failed
}
SERVICE_STUDY_MOVES = {
    (StudyState.RUNNING, StudyState.PAUSED),
    (StudyState.RUNNING, StudyState.STOPPED),
    (StudyState.RUNNING, StudyState.COMPLETED),  # the study finishes by itself ...
    (StudyState.RUNNING, StudyState.FAILED),  # ... with every trial failed
    (StudyState.RUNNING, StudyState.EXHAUSTED),  # ... with its budget spent, none completed
    (StudyState.RUNNING, StudyState.FAILING),  # its first trials failed with the same error
    (StudyState.PAUSED, StudyState.RUNNING),
    (StudyState.PAUSED, StudyState.STOPPED),
    (StudyState.FAILING, StudyState.RUNNING),  # resumed
    (StudyState.FAILING, StudyState.STOPPED),
}


@dataclass
class Row:
    id: int
    state: str


def test_the_tables_cover_every_state_and_name_only_states() -> None:
    assert set(TRIAL_TRANSITIONS) == set(TrialState)
    assert set(STUDY_TRANSITIONS) == set(StudyState)
    assert all(to <= set(TrialState) for to in TRIAL_TRANSITIONS.values())
    assert all(to <= set(StudyState) for to in STUDY_TRANSITIONS.values())


def test_the_tables_hold_the_moves_the_service_makes_and_no_others() -> None:
    trial = {(a, b) for a, to in TRIAL_TRANSITIONS.items() for b in to}
    study = {(a, b) for a, to in STUDY_TRANSITIONS.items() for b in to}
    assert trial == SERVICE_TRIAL_MOVES
    assert study == SERVICE_STUDY_MOVES


def test_final_states_lead_nowhere_and_every_other_state_leads_somewhere() -> None:
    for state, to in TRIAL_TRANSITIONS.items():
        assert (not to) == (state in FINAL_TRIAL_STATES), state
    for state, to in STUDY_TRANSITIONS.items():
        assert (not to) == (state in FINAL_STUDY_STATES), state


@pytest.mark.parametrize(("from_", "to"), TRIAL_PAIRS, ids=lambda s: str(s))
def test_move_accepts_exactly_the_trial_tables_pairs(from_: TrialState, to: TrialState) -> None:
    allowed = to in TRIAL_TRANSITIONS[from_]
    # Stored states come back from the database as plain strings.
    row = Row(7, from_.value)
    if allowed:
        check_trial(7, from_.value, to)
        move(row, to)  # type: ignore[arg-type]  # any object with id and state
        assert row.state == to
    else:
        with pytest.raises(InvalidTransition, match=f"trial 7 is {from_} and cannot become {to}"):
            check_trial(7, from_.value, to)
        with pytest.raises(InvalidTransition):
            move(row, to)  # type: ignore[arg-type]
        assert row.state == from_, "a refused move changed the state"


@pytest.mark.parametrize(("from_", "to"), STUDY_PAIRS, ids=lambda s: str(s))
def test_checks_accept_exactly_the_study_tables_pairs(from_: StudyState, to: StudyState) -> None:
    allowed = to in STUDY_TRANSITIONS[from_]
    row = Row(3, from_.value)
    if allowed:
        check_study(3, from_.value, to)
        move_study(row, to)  # type: ignore[arg-type]
        assert row.state == to
    else:
        with pytest.raises(InvalidTransition) as refused:
            check_study(3, from_.value, to)
        assert str(refused.value) == f"state: study 3 is {from_} and cannot become {to}"
        assert refused.value.extra == {"field": "state"}
        with pytest.raises(InvalidTransition):
            move_study(row, to)  # type: ignore[arg-type]
        assert row.state == from_


def test_an_unknown_state_moves_nowhere() -> None:
    with pytest.raises(InvalidTransition):
        check_trial(1, "lost", TrialState.RUNNING)
    with pytest.raises(InvalidTransition):
        check_study(1, "archived", StudyState.RUNNING)


def test_states_are_the_strings_stored_and_sent() -> None:
    assert [s.value for s in TrialState] == [
        "queued",
        "running",
        "paused",
        "completed",
        "stopped",
        "failed",
    ]
    assert TrialState.RUNNING == "running" and f"{TrialState.RUNNING}" == "running"
    assert {TrialState.QUEUED: 1}["queued"] == 1


def test_every_enum_holds_todays_strings() -> None:
    from tuneyard.states import (
        AttemptState,
        DecisionKind,
        JobKind,
        LogKind,
        SettableStudyState,
        WorkerState,
    )

    assert [*StudyState] == [
        "running",
        "paused",
        "failing",
        "stopped",
        "completed",
        "failed",
        "exhausted",
    ]
    assert [*SettableStudyState] == ["running", "paused", "stopped"]
    assert [*DecisionKind] == ["continue", "pause", "stop", "complete"]
    assert [*LogKind] == [
        "start",
        "promote",
        "pause",
        "stop",
        "complete",
        "fail",
        "retry",
        "release",
        "keep",
        "exploit",
    ]
    assert set(AttemptState) == {*FINAL_TRIAL_STATES, "running", "paused", "released"}
    assert [*WorkerState] == ["active", "lost", "stopped"]
    assert [*JobKind] == ["new", "resume"]
