"""The trial runtime: the ``trial`` handle objectives receive, checkpoints, local workers."""

from __future__ import annotations

from tuneyard.worker.trial import Trial, TrialStopped, trial_from_env

__all__ = ["Trial", "TrialStopped", "trial_from_env"]
