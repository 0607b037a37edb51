"""tuneyard: a distributed hyperparameter-tuning service."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


# The Python API (tuneyard.notebook), loaded on first use.
_NOTEBOOK = frozenset({"connect", "local", "Study", "Connection", "Local", "Job"})


def __getattr__(name: str) -> Any:
    # ``tuneyard.trial_from_env()`` for command-line objectives and ``tuneyard.connect`` and
    # friends for notebooks, without importing the worker runtime (and httpx) whenever the
    # package is imported.
    if name == "trial_from_env":
        from tuneyard.worker.trial import trial_from_env

        return trial_from_env
    if name in _NOTEBOOK:
        from tuneyard import notebook

        return getattr(notebook, name)
    raise AttributeError(name)
