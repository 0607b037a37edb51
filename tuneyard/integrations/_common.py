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


class ResumeMismatch(TuneyardError):
    """A resumed job found no framework checkpoint, or one that holds another epoch than the
    one the job resumes from (``trial.resource_from``): training on from it would report
    epochs twice or skip some, so the trial fails with where each count came from."""

    title = "Checkpoint does not match the resume"


def epoch_range(trial: Any, where: str) -> tuple[int, int]:
    """The job's ``resource_from`` and ``resource_to`` as whole epochs. A framework counts
    epochs in whole numbers, so a study whose rungs fall between two (``min_resource: 0.5``)
    cannot drive it; the error says which end and how to fix the study."""
    ends = []
    for name in ("resource_from", "resource_to"):
        value = float(getattr(trial, name))
        if abs(value - round(value)) > 1e-9:
            raise ValueError(
                f"{where} trains whole epochs, but the trial's {name} is {value:g}: give the "
                "study's scheduler whole min_resource and max_resource"
            )
        ends.append(round(value))
    return ends[0], ends[1]


def report_epoch(
    trial: Any, epoch: int, logged: Mapping[str, Any], monitor: str, metric: str | None, where: str
) -> tuple[str, float | None]:
    """Report ``logged[monitor]`` at ``epoch`` under the study's ``metric`` name (``monitor``
    when None), with the other scalar numbers the framework logged beside it for the
    dashboard; returns the decision and the value reported. The monitored value goes as it
    is, NaN included, since the service fails the trial with the reason; the others are
    left out when they are not finite numbers, as they decide nothing."""
    value = pick_metric(logged, monitor, where)
    metrics: dict[str, float | None] = {}
    for name, raw in logged.items():
        if name == monitor:
            continue
        if hasattr(raw, "numel") and raw.numel() != 1:
            continue  # a tensor that is not a scalar
        if hasattr(raw, "item"):
            raw = raw.item()
        if isinstance(raw, int | float) and not isinstance(raw, bool) and _finite(raw):
            metrics[str(name)] = float(raw)
    metrics[metric or monitor] = value
    decision: str = trial.report(epoch, **metrics)
    return decision, value


def _finite(x: float) -> bool:
    return float("-inf") < x < float("inf")  # False for NaN too
