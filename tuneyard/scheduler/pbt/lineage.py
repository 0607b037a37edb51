"""A member's lineage: the parameters it trained with over its life, and where they came from.

Each entry is (resource, params, donor, reason): from ``resource`` on, the member trained with
``params``; ``donor`` is the member whose checkpoint it cloned there (None for its own start and
for a keep that changed nothing, which is not recorded at all). An exploit resumes from the
donor's checkpoint, so the member's curve before that point *is* the donor's: the entry keeps
the donor's schedule up to the clone (``inherited``), and :meth:`Lineage.schedule` gives the
member's whole replayable schedule, a list of (resource, params) that trains the member's final
model from scratch.

Pure values: the caller stores them (as versioned JSON, not pickles).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuneyard.scheduler.pbt.population import PopulationDecision

Schedule = tuple[tuple[float, Mapping[str, Any]], ...]


@dataclass(frozen=True)
class LineageEntry:
    resource: float
    params: Mapping[str, Any]
    donor: int | None
    reason: str
    # An exploit: the donor's schedule up to ``resource``, which this member's curve continues.
    inherited: Schedule = ()


@dataclass(frozen=True)
class Lineage:
    """One member's entries, oldest first."""

    member: int
    entries: tuple[LineageEntry, ...] = field(default_factory=tuple)

    @classmethod
    def start(cls, member: int, params: Mapping[str, Any], resource: float = 0.0) -> Lineage:
        return cls(member, (LineageEntry(resource, dict(params), None, "started"),))

    @property
    def params(self) -> Mapping[str, Any]:
        """The parameters the member trains with now."""
        if not self.entries:
            raise ValueError(f"trial {self.member}: the lineage has no entry yet")
        return self.entries[-1].params

    def record(self, decision: PopulationDecision, donor: Lineage | None = None) -> Lineage:
        """The lineage after ``decision``: unchanged by a keep; an exploit appends an entry at
        the clone's resource with the donor's schedule up to there (``donor`` is its lineage,
        required for an exploit)."""
        if decision.member != self.member:
            raise ValueError(
                f"decision: it is trial {decision.member}'s, not trial {self.member}'s"
            )
        if decision.kind == "keep":
            return self
        if donor is None or donor.member != decision.donor:
            raise ValueError(
                f"donor: an exploit of trial {decision.donor} needs that trial's lineage"
            )
        inherited = donor.schedule(upto=decision.resource_from)
        entry = LineageEntry(
            decision.resource_from,
            dict(decision.params),
            decision.donor,
            decision.reason,
            inherited,
        )
        return Lineage(self.member, (*self.entries, entry))

    def schedule(self, upto: float | None = None) -> Schedule:
        """(resource, params) from the member's first resource on, each change once: the
        donors' schedules before the last exploit, then this member's own changes. ``upto``
        leaves out the changes after that resource."""
        out: list[tuple[float, Mapping[str, Any]]] = []
        for e in self.entries:
            if e.donor is not None:
                out = list(e.inherited)
            if out and out[-1][0] >= e.resource:
                # A change at the resource of the last one replaces it.
                out = [s for s in out if s[0] < e.resource]
            if not out or out[-1][1] != e.params:
                out.append((e.resource, e.params))
        if upto is not None:
            out = [s for s in out if s[0] <= upto]
        return tuple(out)

    def params_at(self, resource: float) -> Mapping[str, Any]:
        """The parameters the member's (replayed) schedule trains with at ``resource``."""
        sched = self.schedule()
        current = sched[0][1]
        for r, p in sched:
            if r > resource:
                break
            current = p
        return current
