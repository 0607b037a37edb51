"""tuneyard: a distributed hyperparameter-tuning service."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``tuneyard.trial_from_env()`` for command-line objectives, without importing the worker
    # runtime (and httpx) whenever the package is imported.
    if name == "trial_from_env":
        from tuneyard.worker.trial import trial_from_env

        return trial_from_env
    raise AttributeError(name)
