"""The search space of a study definition: its parameters, their conditions and their checks.

A parameter is a float, an int or a categorical; any of them may be active only when named
categorical parents take given values (``when``). See :mod:`tuneyard.spec`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scalar = str | int | float | bool | None
# A categorical value as conditions match it: by type and value, since ``True == 1``.
ChoiceKey = tuple[type, Scalar]

# A grid larger than this is refused: enumerating it would never finish in practice.
MAX_GRID_POINTS = 1_000_000
MAX_PARAMS = 64
MAX_CHOICES = 1_000


class StrictModel(BaseModel):
    # Every number of a definition is finite (Python's JSON parser would accept Infinity).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _ParamBase(StrictModel):
    # Activate this parameter only when every named categorical parent takes one of the given
    # values, e.g. ``nesterov`` only ``when: {solver: sgd}``.
    when: dict[str, Scalar | Annotated[list[Scalar], Field(max_length=MAX_CHOICES)]] | None = Field(
        default=None, max_length=MAX_PARAMS
    )
    # Population-based training (scheduler pbt or pb2): whether explore may change the value
    # over a member's life; false keeps it fixed (an architecture, whose checkpoints only fit
    # a model of their own shape).
    mutable: bool = True

    def when_values(self) -> dict[str, list[Scalar]]:
        """Each condition parent with the values it admits (the lists themselves: read only)."""
        if not self.when:
            return {}
        return {k: (v if isinstance(v, list) else [v]) for k, v in self.when.items()}


class FloatParam(_ParamBase):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    # Number of evenly spaced points a grid search uses when the parameter has no step.
    grid_points: int | None = Field(default=None, ge=1, le=MAX_GRID_POINTS)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        width = self.high - self.low
        if not math.isfinite(width):
            raise ValueError("high - low must be a finite number")
        if self.step is not None and width > 0:
            # A relative tolerance: -1.0..-0.9 with step 0.1 is one step, despite float noise.
            if self.step > width * (1 + 1e-9):
                raise ValueError(f"step ({self.step}) is larger than the range high - low")
            if width / self.step > 1e15:
                raise ValueError(f"step ({self.step}) is too small for the range high - low")
        return self

    def grid_size(self) -> int | None:
        if self.step is not None:
            q = (self.high - self.low) / self.step
            return math.floor(q + max(1e-9, q * 1e-12)) + 1
        if self.low == self.high:
            return 1
        return self.grid_points


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be combined")
        return self

    def grid_size(self) -> int:
        return (self.high - self.low) // self.step + 1


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(max_length=MAX_CHOICES)

    @field_validator("choices")
    @classmethod
    def _check_choices(cls, v: list[Scalar]) -> list[Scalar]:
        if not v:
            raise ValueError("choices must not be empty")
        if any(isinstance(c, float) and not math.isfinite(c) for c in v):
            raise ValueError("choices must be finite")
        if any(isinstance(c, str) and len(c) > 200 for c in v):
            raise ValueError("a choice string must be at most 200 characters")
        # ``True == 1`` in Python, so the key is type and value; one set, not a scan per choice.
        if len({(type(c), c) for c in v}) != len(v):
            seen: set[ChoiceKey] = set()
            for c in v:
                if (type(c), c) in seen:
                    raise ValueError(f"choices must be unique, {c!r} appears twice")
                seen.add((type(c), c))
        return v

    def choice_index(self) -> dict[ChoiceKey, int]:
        """Each choice's position, keyed by (type, value): a set lookup, not a scan."""
        return {(type(c), c): k for k, c in enumerate(self.choices)}

    def grid_size(self) -> int:
        return len(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def topological_order(space: dict[str, Any]) -> list[str]:
    """Parameter names with every condition's parents before the parameters they gate."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = " -> ".join((*path, n))
            raise ValueError(f"space: conditions form a cycle: {cycle}")
        state[n] = 1
        for parent in space[n].when or ():
            visit(parent, (*path, n))
        state[n] = 2
        order.append(n)

    for n in space:
        visit(n, ())
    return order
