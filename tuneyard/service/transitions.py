"""The states of trials and studies and the transitions allowed between them.

``STUDY_TRANSITIONS`` guards a change of a study's state (``PATCH /studies/{id}``).
``TRIAL_TRANSITIONS`` is the trial's state machine as designed; the service's updates of a
trial's state do not consult it yet.
"""

from __future__ import annotations

from typing import Final

TRIAL_STATES: Final = ("queued", "running", "paused", "completed", "stopped", "failed")
FINAL_STATES: Final = frozenset({"completed", "stopped", "failed"})

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
