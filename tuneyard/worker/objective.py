"""The user's objective: found from a study's ``execution``, and what it returns or raises
turned into what a trial records."""

from __future__ import annotations

import importlib
import numbers
import sys
import traceback
from collections.abc import Callable
from typing import Any

from tuneyard.spec import ExecutionSpec
from tuneyard.worker.command import CommandObjective
from tuneyard.worker.trial import Trial

Objective = Callable[[Trial], Any]
# How much of a traceback a failed trial keeps (the API accepts up to 20,000 characters).
ERROR_TAIL = 8000


def load_objective(entrypoint: str) -> Objective:
    """``package.module:function`` → the function, with an error that says what is missing."""
    module_name, _, attr = entrypoint.partition(":")
    if not module_name or not attr:
        raise ValueError(f"entrypoint must look like 'package.module:function', got {entrypoint!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"cannot import {module_name!r} for entrypoint {entrypoint!r}: {exc} "
            f"(sys.path starts with {sys.path[:3]})"
        ) from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r} ({entrypoint!r})")
    if not callable(fn):
        raise AttributeError(f"{entrypoint!r} is a {type(fn).__name__}, not a function")
    return fn


def make_objective(
    execution: ExecutionSpec | None, api_url: str, token: str | None = None
) -> Objective | CommandObjective:
    """The objective a study's ``execution`` names; ValueError when it names none."""
    if execution is not None and execution.command:
        return CommandObjective(execution.command, api_url, token, ranks=execution.ranks)
    if execution is None or not execution.entrypoint:
        raise ValueError("the study names no execution.entrypoint or execution.command to run")
    return load_objective(execution.entrypoint)


def error_text(exc: BaseException) -> str:
    """Exception type, message and the tail of its traceback, as a failed trial records it."""
    text = "".join(traceback.format_exception(exc))
    if len(text) <= ERROR_TAIL:
        return text
    head = f"{type(exc).__name__}: {exc}"[:500]
    return f"{head}\n…\n{text[-(ERROR_TAIL - len(head) - 3) :]}"


def final_value(result: Any) -> float | None:
    """A number the objective returned (a Python or numpy float, a one-element tensor)."""
    if isinstance(result, bool | str | bytes) or result is None:
        return None
    if isinstance(result, numbers.Real):
        return float(result)
    if hasattr(result, "__float__"):
        try:
            return float(result)
        except (TypeError, ValueError):
            return None
    return None
