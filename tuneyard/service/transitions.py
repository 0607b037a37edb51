"""The moves allowed between the states of a trial and of a study, and the one guard every
change of a trial's state goes through.

The tables list exactly the moves the service makes; :func:`move` is how the service changes a
trial's state, and :func:`check_study` guards a change of a study's. The rows are locked where
they change (the study's row lock, the trial's ``SELECT … FOR UPDATE``), so the state read is the
row's current state and the check is the compare half of a compare-and-set: a move the table
does not allow raises :class:`~tuneyard.errors.InvalidTransition` before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from tuneyard.errors import InvalidTransition
from tuneyard.states import StudyState, TrialState
from tuneyard.store.models import Study, Trial

Q, R, P = TrialState.QUEUED, TrialState.RUNNING, TrialState.PAUSED
C, S, F = TrialState.COMPLETED, TrialState.STOPPED, TrialState.FAILED

# A new trial starts running (it is created with its first attempt), so no move leads to it.
TRIAL_TRANSITIONS: Final[Mapping[TrialState, frozenset[TrialState]]] = {
    # queued (a retry or a trial handed back): a worker takes it, or the study ends first.
    Q: frozenset({R, S}),
    # running -> queued: the attempt failed with retries left, or was handed back;
    # running -> paused: it saved its checkpoint at a rung, waiting for a promotion.
    R: frozenset({Q, P, C, S, F}),
    # paused -> running: promoted and resumed; paused -> stopped: the study ended first.
    # A replicate (a fold, a seed) of a paused trial is queued again when the trial is
    # promoted; a paused trial fails when one of its replicates does.
    P: frozenset({R, S, Q, F}),
    C: frozenset(),
    S: frozenset(),
    F: frozenset(),
}

STUDY_TRANSITIONS: Final[Mapping[StudyState, frozenset[StudyState]]] = {
    # running -> failing: its first trials failed with the same error (limits.fail_fast);
    # running -> completed, failed, exhausted: it ended by itself, with a completed trial,
    # with every trial failed, or with its budget spent and no trial completed.
    StudyState.RUNNING: frozenset(
        {
            StudyState.PAUSED,
            StudyState.FAILING,
            StudyState.STOPPED,
            StudyState.COMPLETED,
            StudyState.FAILED,
            StudyState.EXHAUSTED,
        }
    ),
    StudyState.PAUSED: frozenset({StudyState.RUNNING, StudyState.STOPPED}),
    # failing -> running: resumed (the code was fixed); failing -> stopped: given up.
    StudyState.FAILING: frozenset({StudyState.RUNNING, StudyState.STOPPED}),
    StudyState.STOPPED: frozenset(),
    StudyState.COMPLETED: frozenset(),
    StudyState.FAILED: frozenset(),
    StudyState.EXHAUSTED: frozenset(),
}


def trial_may(from_: str, to: str) -> bool:
    """Whether the table allows a trial that is ``from_`` to become ``to``."""
    known = from_ in TrialState._value2member_map_
    return known and to in TRIAL_TRANSITIONS[TrialState(from_)]


def study_may(from_: str, to: str) -> bool:
    """Whether the table allows a study that is ``from_`` to become ``to``."""
    known = from_ in StudyState._value2member_map_
    return known and to in STUDY_TRANSITIONS[StudyState(from_)]


def check_trial(trial_id: int, from_: str, to: str) -> None:
    """Refuse (:class:`InvalidTransition`) a move of a trial the table does not allow."""
    if not trial_may(from_, to):
        raise InvalidTransition(f"trial {trial_id} is {from_} and cannot become {to}")


def check_study(study_id: int, from_: str, to: str) -> None:
    """Refuse (:class:`InvalidTransition`) a move of a study the table does not allow."""
    if not study_may(from_, to):
        raise InvalidTransition(
            f"state: study {study_id} is {from_} and cannot become {to}", field="state"
        )


def move(trial: Trial, to: TrialState) -> None:
    """Set the state of ``trial``, its row locked by the caller, to ``to`` when the table
    allows the move from its current state; else :class:`InvalidTransition`, nothing set."""
    check_trial(trial.id, trial.state, to)
    trial.state = to


def move_study(study: Study, to: StudyState) -> None:
    """The same for a study, its row locked by the caller."""
    check_study(study.id, study.state, to)
    study.state = to
