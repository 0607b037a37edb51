"""The allowed trial state transitions, in one table, applied as compare-and-set updates."""

from __future__ import annotations

from typing import Final

TRIAL_STATES: Final = ("queued", "running", "paused", "completed", "stopped", "failed")
FINAL_STATES: Final = frozenset({"completed", "stopped", "failed"})
ACTIVE_STATES: Final = frozenset({"queued", "running"})

TRIAL_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    # queued: handed to a queue, not yet started by a worker (used by the dispatcher).
    "queued": frozenset({"running", "stopped", "failed"}),
    # running -> queued: the attempt died and the trial is retried.
    "running": frozenset({"queued", "paused", "completed", "stopped", "failed"}),
    # paused -> running: promoted and resumed; paused -> stopped: never promoted.
    "paused": frozenset({"running", "stopped", "failed"}),
    "completed": frozenset(),
    "stopped": frozenset(),
    "failed": frozenset(),
}

STUDY_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "running": frozenset({"paused", "stopped", "completed"}),
    "paused": frozenset({"running", "stopped"}),
    "stopped": frozenset(),
    "completed": frozenset(),
}


def can_transition(current: str, target: str) -> bool:
    return target in TRIAL_TRANSITIONS.get(current, frozenset())


def can_transition_study(current: str, target: str) -> bool:
    return target in STUDY_TRANSITIONS.get(current, frozenset())
