"""An Optuna-style trial over a tuneyard trial, and the wrapper that makes an Optuna objective
a tuneyard entrypoint.

The objective keeps its code: ``trial.suggest_*`` returns the value the study chose for this
trial, ``trial.report(value, step)`` is a tuneyard report of the study's metric, and
``trial.should_prune()`` turns true once the service's answer ends the trial there (stop, a
pause in ASHA's promotion mode, or the last step of the budget).
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

from tuneyard.optuna_compat.suggest import (
    AnyParam,
    as_param,
    categorical_param,
    check_against_space,
    float_param,
    int_param,
    value_for,
)
from tuneyard.spec import StudySpec
from tuneyard.worker.trial import Trial

log = logging.getLogger("tuneyard.optuna_compat")

OptunaObjective = Callable[[Any], Any]
# The names of Trial.report's own arguments: a user attribute so named is not sent as a metric.
_REPORT_ARGUMENTS = frozenset({"step", "value"})


class TrialPruned(Exception):
    """Raised by an objective to end its trial early, as Optuna's ``TrialPruned`` is.

    ``from tuneyard.optuna_compat import TrialPruned`` replaces ``optuna.TrialPruned`` where
    Optuna is not installed; when it is, raising Optuna's own class works the same."""


def is_pruned(exc: BaseException) -> bool:
    """Whether ``exc`` is tuneyard's :class:`TrialPruned` or Optuna's.

    Optuna is never imported here: an objective that raised ``optuna.TrialPruned`` has already
    imported it, so its class is looked up among the loaded modules."""
    if isinstance(exc, TrialPruned):
        return True
    optuna_exceptions = sys.modules.get("optuna.exceptions")
    pruned = getattr(optuna_exceptions, "TrialPruned", None)
    return isinstance(pruned, type) and isinstance(exc, pruned)


def _space_of(space: StudySpec | Mapping[str, Any] | None) -> dict[str, AnyParam] | None:
    if space is None:
        return None
    items = space.space if isinstance(space, StudySpec) else space
    return {name: as_param(name, p) for name, p in items.items()}


class SuggestCalls:
    """Optuna's ``suggest_*`` methods, each turned into one spec parameter handed to
    ``_suggest``, which answers with a value: the study's (:class:`CompatTrial`) or one a
    recording run picks (:class:`~tuneyard.optuna_compat.space.RecordingTrial`)."""

    def _suggest(self, name: str, suggested: AnyParam) -> Any:
        raise NotImplementedError

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return self._suggest(name, float_param(name, low, high, step, log))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._suggest(name, int_param(name, low, high, step, log))

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._suggest(name, categorical_param(name, choices))

    # The spellings Optuna deprecated in 3.0, for older objectives.
    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        return self.suggest_float(name, low, high, step=q)


class CompatTrial(SuggestCalls):
    """What an Optuna objective sees as ``trial``, backed by a tuneyard :class:`Trial`.

    ``space`` (the study's definition or its space), when given, is compared with every
    suggest call, so a range edited on one side only is an error that names both ranges.
    ``step_offset`` is added to every reported step; None (the default) adds one when the
    objective's first report is at step 0, since Optuna objectives often count epochs from 0
    while a tuneyard step is the resource used so far (one epoch done: step 1).

    In a study with ``evaluation``, ``fold``, ``folds``, ``seed``, ``replicate``,
    ``replicates`` and ``parent_id`` say which replicate of its configuration this run is, as
    the tuneyard trial's do (None when not replicated). The fold, seed and replicate index that
    are set are in ``user_attrs`` from the start too, for objectives that read them there; they
    are not sent as metrics, since they say which evaluation a report is, not how it went."""

    def __init__(
        self,
        trial: Trial,
        space: StudySpec | Mapping[str, Any] | None = None,
        step_offset: int | None = None,
    ) -> None:
        self._trial = trial
        self._space = _space_of(space)
        self._step_offset = step_offset
        self._params: dict[str, Any] = {}
        self._suggested: dict[str, AnyParam] = {}
        given = {"fold": trial.fold, "seed": trial.seed, "replicate": trial.replicate}
        self.user_attrs: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        # The attributes filled in above and not set by the objective since: never metrics.
        self._given = set(self.user_attrs)
        self.last_step: float | None = None

    # -- what Optuna's trial offers ------------------------------------------------------------
    @property
    def number(self) -> int:
        return self._trial.number

    @property
    def params(self) -> dict[str, Any]:
        """The parameters suggested so far, as Optuna's ``trial.params``."""
        return dict(self._params)

    @property
    def fold(self) -> int | None:
        """The cross-validation fold to hold out (from 0); None without folds."""
        return self._trial.fold

    @property
    def folds(self) -> int | None:
        """How many folds the study's data is split into; None without folds."""
        return self._trial.folds

    @property
    def seed(self) -> int | None:
        """The seed number (from 0) to derive this run's random state from; None without
        seeds."""
        return self._trial.seed

    @property
    def replicate(self) -> int | None:
        """This replicate's index among its configuration's; None when not replicated."""
        return self._trial.replicate

    @property
    def replicates(self) -> int | None:
        """How many replicates each configuration has (folds x seeds)."""
        return self._trial.replicates

    @property
    def parent_id(self) -> int | None:
        """The tuneyard trial id of the configuration this replicate evaluates."""
        return self._trial.parent_id

    @property
    def tuneyard(self) -> Trial:
        """The tuneyard trial underneath: ``trial.tuneyard.save(model)`` and ``.load()`` let
        an objective resume from a checkpoint instead of starting again after a pause."""
        return self._trial

    def report(self, value: float, step: int) -> None:
        """A tuneyard report of the study's metric at ``step`` (plus the offset).

        A resumed trial runs the objective from the start again (Optuna objectives keep no
        checkpoint): the steps the trial already reported before its pause are not sent
        again, since the service would answer them with the decisions stored then."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise TypeError(f"report: step must be a non-negative int, got {step!r}")
        if self._step_offset is None:
            self._step_offset = 1 if step == 0 else 0
        at = float(step + self._step_offset)
        trial = self._trial
        if trial.resource_from > 0 and at <= trial.resource_from + 1e-9:
            return
        metrics = {
            k: float(v)
            for k, v in self.user_attrs.items()
            if _is_number(v) and k not in _REPORT_ARGUMENTS and k not in self._given
        }
        trial.report(at, float(value), **metrics)
        self.last_step = at

    def should_prune(self) -> bool:
        """True once the service said the trial ends at the last report: stop, pause (in
        ASHA's promotion mode) or complete (the budget's last step)."""
        return self._trial.should_stop

    def set_user_attr(self, key: str, value: Any) -> None:
        """Kept in ``user_attrs``; a number is also sent as a metric named ``key`` with every
        later report (one set after the last report reaches no report, so it is not sent;
        nor is one named ``step`` or ``value``)."""
        self.user_attrs[key] = value
        self._given.discard(key)

    def set_system_attr(self, key: str, value: Any) -> None:
        """Accepted and ignored, as Optuna itself deprecated it."""

    # -- helpers -------------------------------------------------------------------------------
    def _suggest(self, name: str, suggested: AnyParam) -> Any:
        earlier = self._suggested.get(name)
        if earlier is not None and earlier != suggested:
            raise ValueError(f"{name}: suggested twice with different ranges in one trial")
        if self._space is not None:
            check_against_space(name, suggested, self._space)
        value = value_for(name, suggested, self._trial.params)
        self._suggested[name] = suggested
        self._params[name] = value
        return value

    def __repr__(self) -> str:
        which = self._trial.describe_replicate()
        of = "" if which is None else f", {which} of trial {self.parent_id}"
        return f"CompatTrial(number={self.number}{of}, params={self._params!r})"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


Entrypoint = Callable[[Trial], Any]


@overload
def objective(
    fn: OptunaObjective,
    *,
    space: StudySpec | Mapping[str, Any] | None = None,
    step_offset: int | None = None,
) -> Entrypoint: ...


@overload
def objective(
    fn: None = None,
    *,
    space: StudySpec | Mapping[str, Any] | None = None,
    step_offset: int | None = None,
) -> Callable[[OptunaObjective], Entrypoint]: ...


def objective(
    fn: OptunaObjective | None = None,
    *,
    space: StudySpec | Mapping[str, Any] | None = None,
    step_offset: int | None = None,
) -> Entrypoint | Callable[[OptunaObjective], Entrypoint]:
    """Wrap an Optuna-style ``fn(trial) -> float`` into a tuneyard entrypoint.

    Usable as ``train = objective(fn)`` or as a decorator (``@objective`` or
    ``@objective(space=definition)``). The entrypoint returns ``fn``'s value, which completes
    the trial. A ``TrialPruned`` (tuneyard's or Optuna's) after ``should_prune()`` ends the
    trial as the service decided. One raised while the service still said continue cannot
    stop the trial from the worker's side: the trial completes with its latest report's
    value, and a warning says so."""
    if fn is None:
        return functools.partial(objective, space=space, step_offset=step_offset)

    @functools.wraps(fn)
    def entrypoint(trial: Trial) -> Any:
        compat = CompatTrial(trial, space, step_offset)
        try:
            return fn(compat)
        except Exception as exc:
            if not is_pruned(exc):
                raise
            return _pruned(trial, compat, exc)

    return entrypoint


def _pruned(trial: Trial, compat: CompatTrial, exc: BaseException) -> None:
    """What a ``TrialPruned`` ends the trial as: the service's decision, when it gave one."""
    if trial.should_stop:
        return None  # the worker ends the trial as the decision says (stop, pause, complete)
    if compat.last_step is None and trial.resource_from == 0:
        raise RuntimeError(
            "the objective raised TrialPruned before reporting anything: report a value "
            "before pruning, or let the study's scheduler decide (should_prune())"
        ) from exc
    log.warning(
        "trial %s: the objective raised TrialPruned at step %s while the service said "
        "continue; a worker cannot stop a trial, so it completes with its latest report",
        trial.number,
        compat.last_step if compat.last_step is not None else trial.last_step,
    )
    return None
