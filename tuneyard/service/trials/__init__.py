"""The ask/tell use cases: next job, report, pause, complete, fail, heartbeat.

Each public method is one transaction. Anything that changes which trials run or rank (a new
trial, a promotion, a rung record, the end of a job) holds the study's row lock, so two API
processes serving one study never double-promote, duplicate a trial number or exceed
``max_trials``. A report that reaches no rung locks only its trial row: it is one indexed write.

The service is built in layers, one module each: ``base`` (locks, the attempt fence, the end
of a job), ``suggestions`` (new configurations, ahead of the lock), ``reports``, ``lifecycle``
(the ends a worker tells, heartbeats, reaping) and ``assignment`` (``next``).
"""

from tuneyard.service.trials.assignment import AssignmentResult, TrialService
from tuneyard.service.trials.lifecycle import error_summary
from tuneyard.service.trials.suggestions import SAVE_EVERY, SAVE_FRACTION, Suggestion

__all__ = [
    "SAVE_EVERY",
    "SAVE_FRACTION",
    "AssignmentResult",
    "Suggestion",
    "TrialService",
    "error_summary",
]
