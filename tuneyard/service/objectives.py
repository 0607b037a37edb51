"""What a report's metrics say in a study's terms: the value shown for the trial, every
objective's value, the score the scalar rules see, and for a study with several objectives or
with constraints the vector that rungs rank by fronts.

One objective without constraints is read as it always was: the report's ``value`` or its
``metrics[metric]``, and a missing value fails the trial. A study with several objectives or
constraints needs every objective's and every bounded metric in each report: one that is
missing is the caller's mistake (a 422 naming it), not the trial's. A NaN or an infinite value
of any of them fails the trial, as a NaN of the one metric does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuneyard.errors import InvalidRequest
from tuneyard.scheduler.board import Vector
from tuneyard.scheduler.decisions import fmt
from tuneyard.scheduler.multi import Constraint, check_constraints, parse_constraints
from tuneyard.spec import StudySpec


@dataclass(frozen=True)
class Measure:
    """A report's result. ``value``: the first objective, the user's units (the trial's
    ``value``); ``values``: every objective, the user's units; ``score``: what the scalar
    rules (median, a trial's best) see, minimised; ``vector``: what rungs rank by fronts."""

    value: float
    values: list[float] | None = None
    score: float = 0.0
    vector: Vector | None = None

    @property
    def infeasible(self) -> str | None:
        """The failed constraints (``gpu_mem_gb 18.2 > 16``), None when feasible."""
        if self.vector is None or not self.vector.failed:
            return None
        return ", ".join(self.vector.failed)


class Objectives:
    """A study's objectives and constraints, reading reports."""

    def __init__(self, spec: StudySpec) -> None:
        self.objectives = spec.objective_list
        self.metrics = [o.metric for o in self.objectives]
        self.signs = [o.sign for o in self.objectives]
        self.constraints: list[Constraint] = parse_constraints(
            [c.as_mapping() for c in spec.constraints]
        )
        self.by_fronts = spec.ranked_by_fronts
        sched = spec.scheduler
        self.weights = sched.scalarization.weights if sched.scalarization else None

    @property
    def needed(self) -> list[str]:
        """Every metric a report of a study ranked by fronts must carry."""
        return [*self.metrics, *(c.metric for c in self.constraints)]

    def measure(
        self, value: float | None, metrics: Mapping[str, Any], step: float
    ) -> Measure | str:
        """The report's result, or why it fails the trial (a NaN, an infinity, a missing
        value of a single-objective study). Raises :class:`InvalidRequest` for a metric a
        study ranked by fronts needs and the report lacks."""
        if not self.by_fronts:
            if value is None:
                value = _number(metrics.get(self.metrics[0]))
            bad = bad_value(self.metrics[0], value, step)
            if bad is not None:
                return bad
            assert value is not None
            return Measure(value, None, self.signs[0] * value)
        found = {m: _number(metrics.get(m)) for m in self.needed}
        if value is not None:
            found[self.metrics[0]] = value
        missing = [m for m, v in found.items() if v is None]
        if missing:
            bounded = [c.metric for c in self.constraints]
            also = f" and every constrained metric ({', '.join(bounded)})" if bounded else ""
            raise InvalidRequest(
                f"metrics.{missing[0]}: missing from the report at step {fmt(step)}; a report "
                f"of this study carries every objective ({', '.join(self.metrics)}){also}",
                field=f"metrics.{missing[0]}",
            )
        for m in self.needed:
            bad = bad_value(m, found[m], step)
            if bad is not None:
                return bad
        values = [float(found[m]) for m in self.metrics]  # type: ignore[arg-type]
        return self.of_values(values, {m: float(found[m]) for m in self.needed})  # type: ignore[arg-type]

    def of_values(self, values: Sequence[float], metrics: Mapping[str, float]) -> Measure:
        """The result of every objective's ``values`` (user units) and the constrained
        ``metrics`` (those given; constraints whose metric is absent are not checked)."""
        scores = tuple(sign * v for sign, v in zip(self.signs, values, strict=True))
        present = [c for c in self.constraints if c.metric in metrics]
        feas = check_constraints(metrics, present)
        vector = Vector(scores, feas.total, feas.failed)
        if self.weights is not None:
            score = float(sum(w * x for w, x in zip(self.weights, scores, strict=True)))
        else:
            score = scores[0]
        return Measure(values[0], list(values), score, vector)


def _number(v: Any) -> float | None:
    """A metric as a float (NaN for a value that is not a number), None when absent."""
    if v is None:
        return None
    if isinstance(v, bool):
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def bad_value(metric: str, value: float | None, step: float) -> str | None:
    """Why a value fails the trial (missing, NaN, infinite), None when it is a number."""
    if value is None:
        return f"metric {metric!r} missing from the report at step {fmt(step)}"
    if math.isnan(value):
        return f"metric {metric!r} is NaN at step {fmt(step)}"
    if math.isinf(value):
        return f"metric {metric!r} is infinite ({value}) at step {fmt(step)}"
    return None
