"""The states of trials, studies, attempts and workers, the kinds of decisions and of the
entries of the decision log, and the kinds of a job: each defined once, here.

They are ``StrEnum``s whose values are the strings stored in the database and sent over the
wire, so a member compares equal to its string and nothing stored or sent changes. This module
imports nothing of tuneyard: the scheduling core, the store, the wire schemas, the service, the
CLI and the worker all share it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class TrialState(StrEnum):
    """Where a trial is in its life; the moves between them are in
    :mod:`tuneyard.service.transitions`."""

    QUEUED = "queued"  # waiting to run (again): a retry or a trial handed back
    RUNNING = "running"  # an attempt of it holds a lease
    PAUSED = "paused"  # waiting at a rung for a promotion, its checkpoint saved
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


FINAL_TRIAL_STATES: Final = frozenset({TrialState.COMPLETED, TrialState.STOPPED, TrialState.FAILED})


class StudyState(StrEnum):
    """Where a study is in its life; the moves between them are in
    :mod:`tuneyard.service.transitions`."""

    RUNNING = "running"
    PAUSED = "paused"
    # Its first trials failed with the same error (``limits.fail_fast``): it starts nothing
    # until it is resumed; the trials already running finish.
    FAILING = "failing"
    STOPPED = "stopped"
    # Ended by itself: with at least one completed trial, ...
    COMPLETED = "completed"
    # ... with none, every trial having failed, ...
    FAILED = "failed"
    # ... or with none, its budget spent on trials that stopped early (and failed).
    EXHAUSTED = "exhausted"


FINAL_STUDY_STATES: Final = frozenset(
    {StudyState.STOPPED, StudyState.COMPLETED, StudyState.FAILED, StudyState.EXHAUSTED}
)


class SettableStudyState(StrEnum):
    """The states a user may ask a study to take (``PATCH /studies/{id}``): a study ends
    (completed, failed, exhausted) or starts failing only by itself; running resumes a paused
    or a failing one. Its members equal :class:`StudyState`'s of the same name."""

    RUNNING = StudyState.RUNNING.value
    PAUSED = StudyState.PAUSED.value
    STOPPED = StudyState.STOPPED.value


class DecisionKind(StrEnum):
    """What the answer to a report tells the worker to do."""

    CONTINUE = "continue"  # go on (to a larger resource when promoted on the spot)
    PAUSE = "pause"  # save a checkpoint and wait at the rung for a promotion
    STOP = "stop"  # stopped early
    COMPLETE = "complete"  # reached the maximum resource


class LogKind(StrEnum):
    """The kinds of the entries of the decision log (table ``decisions``)."""

    START = "start"  # a new trial placed in a bracket
    PROMOTE = "promote"  # promoted out of a rung (resumed, or on the spot)
    PAUSE = "pause"  # told to pause at a rung
    STOP = "stop"  # stopped early, by request or because the study ended
    COMPLETE = "complete"
    FAIL = "fail"
    RETRY = "retry"  # an attempt failed and the trial is queued to run again
    RELEASE = "release"  # handed back unfinished by its worker
    KEEP = "keep"  # population-based training: kept its checkpoint and parameters at a boundary
    EXPLOIT = "exploit"  # population-based training: cloned a better member and explored


class AttemptState(StrEnum):
    """How an attempt (one run of a trial's job, table ``attempts``) stands or ended."""

    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    RELEASED = "released"  # handed back unfinished


class WorkerState(StrEnum):
    ACTIVE = "active"
    LOST = "lost"  # silent for longer than a lease (shown so; stored once given up)
    STOPPED = "stopped"


class JobKind(StrEnum):
    """What ``next`` hands a worker: a new job, or one that resumes from a checkpoint."""

    NEW = "new"
    RESUME = "resume"
