"""The study definition's space, read from an Optuna objective's ``suggest_*`` calls.

The objective is run against a recording trial that answers every suggest call with a value
it picks and ends the run at the first ``report`` (or at the return), so at most the work
before the first report is done. One run is not enough: a parameter suggested only after
``if trial.suggest_categorical("solver", ...) == "sgd"`` shows up only for some values. So the
recorder runs the objective again, once for each other value of every parameter (each
categorical choice; the high end of a number), in the context where the parameter first
appeared, then a few times more with every parameter drawn at random (so a parameter behind
two parents that must agree shows up too), and compares the names each run suggested:

- a name seen in every run is an unconditional parameter;
- a name seen exactly when one categorical parameter before it takes some values gets
  ``when: {parent: values}``;
- anything else (a name that depends on a number, as in ``for i in range(n_layers)``, or a
  range that depends on an earlier value) is refused with an error naming the parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuneyard.optuna_compat.suggest import (
    AnyParam,
    describe,
    same_param,
)
from tuneyard.optuna_compat.trial import OptunaObjective, SuggestCalls, is_pruned
from tuneyard.spec import CategoricalParam, FloatParam, IntParam, Scalar, StudySpec

# Runs of the objective the recorder allows itself before giving up.
MAX_RUNS = 200
# Runs after the one-at-a-time ones where every parameter takes a drawn value (the first of
# them: its last value), so a parameter that needs two parents to agree shows up too.
MIXED_RUNS = 8


class ConditionalSpaceError(ValueError):
    """The objective's suggest calls depend on earlier values in a way a definition's
    ``when`` conditions cannot express."""


class _Recorded(BaseException):
    """Raised by the recording trial at the first report: the rest is training. A
    BaseException, so an objective's own ``except Exception`` does not swallow it."""


# A probe: which value each named parameter takes in a run (an index into its alternatives;
# a parameter not named takes its first).
Probe = tuple[tuple[str, int], ...]


def _alternatives(p: AnyParam) -> list[Any]:
    """The values a recording run tries for a parameter: each choice, or both ends."""
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    if p.low == p.high:
        return [p.low]
    if isinstance(p, IntParam):
        top = p.low + (p.high - p.low) // p.step * p.step
        return [p.low, top]
    if p.step is not None:
        last = p.low + int((p.high - p.low) / p.step + 1e-9) * p.step
        return [p.low, min(last, p.high)]
    return [p.low, p.high]


@dataclass
class _Run:
    probe: Probe
    # The alternative a parameter the probe does not name takes: its first, unless a mixed
    # run draws it.
    pick: Callable[[str, int], int] = field(default=lambda name, n: 0)
    order: list[str] = field(default_factory=list)
    specs: dict[str, AnyParam] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


class RecordingTrial(SuggestCalls):
    """A trial that answers suggest calls from a probe and records what was asked.

    It offers what :class:`~tuneyard.optuna_compat.trial.CompatTrial` offers; ``report``
    ends the run, ``should_prune`` is False. It is no replicate: ``fold``, ``seed`` and the
    rest are None, as in a study without ``evaluation``."""

    number = 0
    fold: int | None = None
    folds: int | None = None
    seed: int | None = None
    replicate: int | None = None
    replicates: int | None = None
    parent_id: int | None = None

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._choose = dict(run.probe)
        self.user_attrs: dict[str, Any] = {}

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._run.values)

    def report(self, value: float, step: int) -> None:
        raise _Recorded

    def should_prune(self) -> bool:
        return False

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value

    def set_system_attr(self, key: str, value: Any) -> None:
        pass

    def _suggest(self, name: str, p: AnyParam) -> Any:
        run = self._run
        if name in run.specs:
            if not same_param(run.specs[name], p):
                raise ConditionalSpaceError(
                    f"{name}: suggested twice in one run, as {describe(run.specs[name])} and "
                    f"as {describe(p)}"
                )
            return run.values[name]
        options = _alternatives(p)
        index = self._choose.get(name)
        if index is None:
            index = run.pick(name, len(options))
        value = options[min(index, len(options) - 1)]
        if isinstance(p, IntParam):
            value = int(value)
        elif isinstance(p, FloatParam):
            value = float(value)
        run.order.append(name)
        run.specs[name] = p
        run.values[name] = value
        return value


def _record(
    fn: OptunaObjective, probe: Probe, pick: Callable[[str, int], int] | None = None
) -> _Run:
    run = _Run(probe) if pick is None else _Run(probe, pick)
    try:
        fn(RecordingTrial(run))
    except _Recorded:
        pass
    except ConditionalSpaceError:
        raise
    except Exception as exc:
        if not is_pruned(exc):
            shown = ", ".join(f"{k}={v!r}" for k, v in run.values.items())
            raise RuntimeError(
                f"space_from: the objective raised {type(exc).__name__}: {exc} while its "
                f"suggest calls were recorded (with {shown or 'no parameters yet'})"
            ) from exc
    return run


def _explore(fn: OptunaObjective, max_runs: int) -> list[_Run]:
    """Run the objective once per alternative value of every parameter, each in the run
    where the parameter first appeared (so a parameter behind a condition is varied too),
    then :data:`MIXED_RUNS` times with values drawn for all of them."""
    runs: list[_Run] = []
    pending: list[tuple[Probe, set[str]]] = [((), set())]  # a probe, and the names already seen
    tried: set[Probe] = set()
    while pending:
        probe, known = pending.pop(0)
        if probe in tried:
            continue
        if len(runs) >= max_runs:
            raise ConditionalSpaceError(
                f"space_from: the objective's space needs more than {max_runs} recording runs "
                "to explore; write the space by hand"
            )
        tried.add(probe)
        run = _record(fn, probe)
        runs.append(run)
        named = dict(probe)
        for name in run.order:
            if name in known or name in named:
                continue
            for i in range(1, len(_alternatives(run.specs[name]))):
                pending.append(((*probe, (name, i)), known | set(run.order)))
    rng = np.random.default_rng(0)  # the same runs every time: a derived space is stable
    for k in range(min(MIXED_RUNS, max(0, max_runs - len(runs)))):
        draws: dict[str, int] = {}

        def pick(name: str, n: int, last: bool = k == 0, draws: dict[str, int] = draws) -> int:
            return draws.setdefault(name, n - 1 if last else int(rng.integers(n)))

        runs.append(_record(fn, (), pick))
    return runs


def _key(v: Scalar) -> tuple[type, Scalar]:
    return (type(v), v)


def _condition(name: str, runs: list[_Run], order: list[str]) -> dict[str, Any]:
    """The ``when`` of a parameter seen in some runs only: one categorical parent, earlier
    in the objective, whose values alone say whether the parameter is suggested. A parent
    that admits some of its choices is preferred to one that admits all (``momentum`` behind
    ``solver == "sgd"`` is also present exactly when ``nesterov``, behind the same test, is)."""
    present = [name in r.specs for r in runs]
    fallback: dict[str, Any] | None = None
    for parent in reversed(order[: order.index(name)]):
        spec = next(r.specs[parent] for r in runs if parent in r.specs)
        if not isinstance(spec, CategoricalParam):
            continue
        admits = {_key(r.values[parent]) for r, p in zip(runs, present, strict=True) if p}
        if all(
            p == (parent in r.specs and _key(r.values[parent]) in admits)
            for r, p in zip(runs, present, strict=True)
        ):
            values = [c for c in spec.choices if _key(c) in admits]
            when = {parent: values[0] if len(values) == 1 else values}
            if len(values) < len(spec.choices):
                return when
            fallback = fallback or when
    if fallback is not None:
        return fallback
    # Name what made it appear: the parameter varied in the first run that suggested it.
    first = next(r for r in runs if name in r.specs)
    cause = first.probe[-1][0] if first.probe else None
    because = ""
    if cause is not None:
        kind = first.specs[cause].type
        took = first.values[cause]
        because = f" (it appeared when the {kind} parameter {cause!r} took {took!r})"
    raise ConditionalSpaceError(
        f"{name}: suggested only for some values of earlier parameters{because}, and not as "
        "a function of one categorical parameter's value, which is all a definition's `when` "
        "condition can say. Make the suggest call unconditional, make its parent a "
        "suggest_categorical, or write the study's space by hand"
    )


def space_from(fn: OptunaObjective, *, max_runs: int = MAX_RUNS) -> dict[str, dict[str, Any]]:
    """The ``space`` of a study definition, derived from ``fn``'s suggest calls.

    ``fn`` runs several times up to its first ``trial.report`` (or its return): code before
    that runs each time, so keep data loading cached or cheap. A parameter suggested only for
    some values of one categorical parameter gets a ``when`` condition; any other dependence
    on earlier values raises :class:`ConditionalSpaceError` naming the parameter."""
    runs = _explore(fn, max_runs)
    order: list[str] = []
    specs: dict[str, AnyParam] = {}
    for run in runs:
        after = -1  # where in ``order`` the run's previous name stands
        for name in run.order:
            p = run.specs[name]
            if name not in specs:
                # In the objective's own order: right after the name suggested before it.
                order.insert(after + 1, name)
                specs[name] = p
            elif not same_param(specs[name], p):
                raise ConditionalSpaceError(
                    f"{name}: its range depends on earlier suggestions (suggested as "
                    f"{describe(specs[name])} and as {describe(p)}); a definition's space "
                    "gives each parameter one range"
                )
            after = order.index(name)
    if not order:
        raise ConditionalSpaceError("space_from: the objective suggested no parameter")
    space: dict[str, dict[str, Any]] = {}
    for name in order:
        entry = specs[name].model_dump(exclude_defaults=True)
        entry["type"] = specs[name].type
        if not all(name in r.specs for r in runs):
            entry["when"] = _condition(name, runs, order)
        space[name] = entry
    return space


def definition_from(
    fn: OptunaObjective,
    *,
    name: str,
    metric: str = "value",
    direction: str = "minimize",
    max_resource: float = 27,
    min_resource: float = 1,
    reduction_factor: int = 3,
    entrypoint: str | None = None,
    scheduler: Mapping[str, Any] | None = None,
    max_runs: int = MAX_RUNS,
    **fields: Any,
) -> StudySpec:
    """A validated study definition whose space comes from ``fn``'s suggest calls.

    The scheduler is ASHA in stopping mode unless ``scheduler`` says otherwise: an Optuna
    objective keeps no checkpoint, so in promotion mode every promoted trial would train
    again from its first epoch. ``max_resource`` is the last step the objective reports
    (as tuneyard counts: one epoch done is step 1). Other fields (``sampler``, ``limits``,
    ``description``...) are passed through to :class:`~tuneyard.spec.StudySpec`."""
    sched: dict[str, Any] = {
        "type": "asha",
        "mode": "stopping",
        "min_resource": min_resource,
        "max_resource": max_resource,
        "reduction_factor": reduction_factor,
    }
    if scheduler is not None:
        sched = dict(scheduler)
    data: dict[str, Any] = {
        "name": name,
        "metric": metric,
        "direction": direction,
        "space": space_from(fn, max_runs=max_runs),
        "scheduler": sched,
        **fields,
    }
    if entrypoint is not None:
        data["execution"] = {**data.get("execution", {}), "entrypoint": entrypoint}
    return StudySpec.model_validate(data)
