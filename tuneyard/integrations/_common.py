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
