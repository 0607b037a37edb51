"""What the framework callbacks share: finding the study's metric among a framework's logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuneyard.errors import TuneyardError


class MissingMetric(TuneyardError):
    """The metric a callback was told to report is not among the ones the framework logged:
    a typo in ``monitor`` or an evaluation that never ran. Raised in the objective, so the
    trial fails with this message rather than reporting nothing."""

    title = "Metric not logged"


def pick_metric(logged: Mapping[str, Any], name: str, where: str) -> float | None:
    """``logged[name]`` as a float (a tensor or numpy scalar included). A NaN or infinite
    value comes back as is: the service records it and decides, as for any objective.
    ``where`` says which framework's logs these are, for the error."""
    if name not in logged:
        have = ", ".join(sorted(map(str, logged))) or "none"
        raise MissingMetric(f"{where} logged no {name!r} (it logged: {have})")
    value = logged[name]
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return float(value)


_INF = float("inf")  # a NaN is neither below nor above it


class CheckpointMismatch(TuneyardError):
    """A job's checkpoint does not hold the training its resource range starts from: the
    framework's own count (epochs, boosted rounds) in it is not ``resource_from``, or a
    resumed job found no checkpoint at all. Going on would report units twice or skip some,
    so the trial fails with this message instead."""

    title = "Checkpoint does not match the job"


def whole_units(trial: Any, where: str) -> tuple[int, int]:
    """The job's resource range, ``resource_from`` and ``resource_to``, as whole units: a
    framework counts epochs and boosting rounds in whole numbers, so a study whose rungs fall
    between two (``min_resource: 0.5``) cannot drive it."""
    ends = []
    for name in ("resource_from", "resource_to"):
        value = float(getattr(trial, name))
        if abs(value - round(value)) > 1e-9:
            raise ValueError(
                f"{where} trains whole units, but the trial's {name} is {value:g}: give the "
                "study's scheduler whole min_resource and max_resource"
            )
        ends.append(round(value))
    return ends[0], ends[1]


def report_logged(
    trial: Any, step: int, logged: Mapping[str, Any], monitor: str, metric: str | None, where: str
) -> tuple[str, float | None]:
    """Report ``logged[monitor]`` at ``step`` as the study's ``metric`` (``monitor``'s own
    name when None), with the other finite numbers of ``logged`` beside it under their names,
    for the dashboard; returns the service's decision and the value reported. The monitored
    value goes as is, NaN included (the service fails the trial with the reason); another
    metric that is not a finite number is left out, since it decides nothing."""
    value = pick_metric(logged, monitor, where)
    metrics: dict[str, float | None] = {}
    for name, raw in logged.items():
        # ``step`` and ``value`` are report()'s own arguments: a logged "step" would clash.
        if name == monitor or name in _REPORT_ARGUMENTS:
            continue
        raw = _one_number(raw)
        if isinstance(raw, int | float) and not isinstance(raw, bool) and _INF > raw > -_INF:
            metrics[str(name)] = float(raw)
    metrics[metric or monitor] = value
    decision: str = trial.report(step, **metrics)
    return decision, value


_REPORT_ARGUMENTS = frozenset({"step", "value"})


def _one_number(raw: Any) -> Any:
    """A one-element numpy array or torch tensor as its Python number; anything else as is.
    (A tensor's ``size`` is a method, its element count ``numel()``.)"""
    if not hasattr(raw, "item"):
        return raw
    size = raw.numel() if hasattr(raw, "numel") else getattr(raw, "size", 1)
    return raw.item() if size == 1 else raw


def check_restored(found: int, expected: int, what: str, path: Any) -> None:
    """Raise :class:`CheckpointMismatch` unless the checkpoint at ``path`` holds ``expected``
    units (``what``: "boosting rounds", "epochs"), as the job's ``resource_from`` says."""
    if found != expected:
        raise CheckpointMismatch(
            f"the checkpoint {path} holds {found} {what}, but the job resumes from {expected}"
        )


def check_rounds_per_unit(rounds_per_unit: int) -> None:
    """A boosting callback's ``rounds_per_unit``: a whole number of rounds, at least one."""
    if isinstance(rounds_per_unit, bool) or not isinstance(rounds_per_unit, int):
        raise TypeError(f"rounds_per_unit must be a whole number, got {rounds_per_unit!r}")
    if rounds_per_unit < 1:
        raise ValueError(f"rounds_per_unit must be at least 1, got {rounds_per_unit}")
