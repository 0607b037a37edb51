"""Constraints on reported metrics, as violations and reasons.

A constraint bounds one metric, ``{metric: gpu_mem_gb, max: 16}`` or ``{metric: accuracy,
min: 0.8}`` (or both bounds). Its violation is how far the value lies beyond the bound, 0 when
it holds; a point is feasible when every violation is 0. Violations of different constraints are
summed as given (each in its metric's units) when constraint-dominance compares two infeasible
points, as NSGA-II does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tuneyard.scheduler.decisions import fmt


@dataclass(frozen=True)
class Constraint:
    metric: str
    # The bounds, named after the definition's ``max`` and ``min``; at least one is set.
    upper: float | None = None
    lower: float | None = None

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("a constraint needs a metric")
        if self.upper is None and self.lower is None:
            raise ValueError(f"the constraint on {self.metric} needs 'max' or 'min'")
        for name, bound in (("max", self.upper), ("min", self.lower)):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"the constraint on {self.metric}: '{name}' must be finite")
        if self.upper is not None and self.lower is not None and self.lower > self.upper:
            raise ValueError(f"the constraint on {self.metric}: 'min' is above 'max'")

    @classmethod
    def parse(cls, raw: Constraint | Mapping[str, object]) -> Constraint:
        """From the definition's form ``{metric, max}``, ``{metric, min}`` or both."""
        if isinstance(raw, Constraint):
            return raw
        unknown = set(raw) - {"metric", "max", "min"}
        if unknown:
            raise ValueError(f"unknown constraint fields: {', '.join(sorted(unknown))}")
        metric = raw.get("metric")
        if not isinstance(metric, str):
            raise ValueError("a constraint needs a metric name")
        bounds: dict[str, float | None] = {}
        for name in ("max", "min"):
            value = raw.get(name)
            if value is None:
                bounds[name] = None
            elif isinstance(value, int | float) and not isinstance(value, bool):
                bounds[name] = float(value)
            else:
                raise ValueError(f"the constraint on {metric}: '{name}' must be a number")
        return cls(metric, upper=bounds["max"], lower=bounds["min"])

    def violation(self, value: float) -> float:
        """How far ``value`` lies beyond the bounds, 0 when it is within them."""
        if math.isnan(value):
            raise ValueError(f"{self.metric} is NaN")
        if self.upper is not None and value > self.upper:
            return value - self.upper
        if self.lower is not None and value < self.lower:
            return self.lower - value
        return 0.0

    def failure(self, value: float) -> str | None:
        """Why ``value`` breaks the constraint (``gpu_mem_gb 18.2 > 16``), None when it holds."""
        if self.violation(value) == 0:
            return None
        if self.upper is not None and value > self.upper:
            return f"{self.metric} {fmt(value)} > {fmt(self.upper)}"
        return f"{self.metric} {fmt(value)} < {fmt(self.lower)}"  # type: ignore[arg-type]


@dataclass(frozen=True)
class Feasibility:
    # One violation per constraint, in the constraints' order.
    violations: tuple[float, ...]
    # The failed constraints, as reasons.
    failed: tuple[str, ...]

    @property
    def total(self) -> float:
        return float(sum(self.violations))

    @property
    def feasible(self) -> bool:
        return not self.failed

    def reason(self) -> str:
        """``infeasible: gpu_mem_gb 18.2 > 16`` (every failed constraint), or ``feasible``."""
        return f"infeasible: {', '.join(self.failed)}" if self.failed else "feasible"


def parse_constraints(raw: Sequence[Constraint | Mapping[str, object]]) -> list[Constraint]:
    """Constraints from the definition's list; errors name the constraint's position."""
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(Constraint.parse(item))
        except ValueError as exc:
            raise ValueError(f"constraints[{i}]: {exc}") from None
    return out


def check_constraints(
    values: Mapping[str, float], constraints: Sequence[Constraint | Mapping[str, object]]
) -> Feasibility:
    """Violations of ``constraints`` by one report's ``{metric: value}``, and the failures.

    A metric the report lacks, or a NaN, is an error naming it: the caller rejects the report.
    """
    violations: list[float] = []
    failed: list[str] = []
    for c in parse_constraints(constraints):
        if c.metric not in values:
            raise ValueError(f"the report has no value for {c.metric}, which a constraint bounds")
        value = float(values[c.metric])
        violations.append(c.violation(value))
        why = c.failure(value)
        if why is not None:
            failed.append(why)
    return Feasibility(tuple(violations), tuple(failed))
