"""Decisions are values: the scheduler returns them, the service persists and applies them."""

from __future__ import annotations

from dataclasses import dataclass

from tuneyard.scheduler.board import Vector
from tuneyard.states import DecisionKind

__all__ = ["Decision", "DecisionKind", "Placement", "Promotion", "RungRecord", "fmt"]


@dataclass(frozen=True)
class Decision:
    """What a running trial does after a report.

    ``continue``: go on to ``resource_to`` (larger than before when promoted on the spot);
    ``pause``: wait at ``rung`` for a promotion; ``stop``: stopped early; ``complete``: reached
    the maximum resource.
    """

    kind: DecisionKind
    reason: str
    resource_to: float | None = None
    rung: int | None = None
    # Set when a continue is an on-the-spot promotion out of this rung.
    promoted_from: int | None = None

    @classmethod
    def go_on(cls, reason: str = "continue", resource_to: float | None = None) -> Decision:
        return cls(DecisionKind.CONTINUE, reason, resource_to=resource_to)


@dataclass(frozen=True)
class RungRecord:
    """A trial's score at a rung, to be written by the caller."""

    bracket: int
    rung: int
    score: float
    # Several objectives or constraints: the vector the rung ranks by fronts.
    vector: Vector | None = None


@dataclass(frozen=True)
class Placement:
    """Where a new trial starts: its bracket and its first job's range."""

    bracket: int
    resource_from: float
    resource_to: float
    reason: str


@dataclass(frozen=True)
class Promotion:
    """Resume a paused trial from ``from_rung`` up to the next rung's resource."""

    trial_id: int
    bracket: int
    from_rung: int
    to_rung: int
    resource_from: float
    resource_to: float
    reason: str
    # A promotion at the end of a study (:meth:`HalvingScheduler.final_promotion`), made
    # outside the rung's quota so that one trial reaches max_resource.
    final: bool = False


def fmt(x: float) -> str:
    """Resources and scores as people write them: 9 rather than 9.0, 0.2312 rather than 0.23117."""
    if float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"
