"""PBT's exploit rule: at an interval boundary, keep training or clone a better member.

Jaderberg et al., "Population Based Training of Neural Networks", 2017,
https://arxiv.org/abs/1711.09846 (section 3.1, "truncation selection"): a member whose score
is in the bottom ``quantile`` of the population copies the weights and parameters of a member
drawn uniformly from the top ``quantile``, then explores (:mod:`.explore`, or PB2's
:mod:`.pb2`). Every other member keeps its own checkpoint and parameters.

**Asynchronous.** Members are not held in generations: a member at a boundary is ranked
against each other member's *latest* score at or before that boundary (the caller passes
them; a score past the boundary is refused, as the donor's checkpoint at that point must
exist), and the members that have not reported yet are simply absent. The population ranked
is thus the members known, the deciding one included: with ``n`` of them the bottom and the
top are ``ceil(quantile * n)`` members each, at most ``n // 2`` so none is in both. A member
that ran ahead of a slower one is compared with that one's earlier score; this favours the
faster members a little, the price of never waiting (Ray Tune's PBT makes the same trade).

**Ranking.** Lower is better, as everywhere in :mod:`tuneyard.scheduler`; a non-finite score
ranks last (a diverged member is the first to be replaced and never a donor); ties are broken
by member id, so the ranking is a function of its inputs.

**Fixed parameters.** A parameter that is not mutable (an architecture, say) must not change
over a member's life, and a checkpoint only fits a model of its own architecture. So the
population splits by its fixed parameters: a member is ranked among the members that share
them (its group), and exploits the top of its group. Ranked against the whole population
instead, a member of a small group would find its donors mostly in other groups, which it
cannot clone (in a run with 8 members and a fixed width of three choices, 21 of 24 bottom
members kept for that reason alone).

**Randomness.** The donor and the explore draws come from a generator seeded by (seed,
member, boundary), so a decision is the same whenever and wherever it is computed.

The clone continues the donor's curve: it resumes from the donor's checkpoint at the
boundary, which the decision carries as ``resource_from``. Donors are therefore the
top-quantile members whose score is at the boundary itself (a member behind ranks with its
earlier score but has no checkpoint there yet); a member's resource never moves backward,
so the steps it reports stay its own.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tuneyard.scheduler.decisions import fmt
from tuneyard.scheduler.pbt.explore import Change, ParamMover, check_mutable, perturb_explore
from tuneyard.scheduler.pbt.pb2 import Interval, pb2_explore
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec.pbt import PBTSpec

Kind = Literal["keep", "exploit"]


@dataclass(frozen=True)
class MemberScore:
    """A member's latest known score (lower is better) at ``resource``, with the parameters
    it trained with up to there."""

    member: int
    resource: float
    score: float
    params: Mapping[str, Any]


@dataclass(frozen=True)
class PopulationDecision:
    """What a member at a boundary does: ``keep`` its own checkpoint and parameters, or
    ``exploit``: resume from ``donor``'s checkpoint at ``resource_from`` with ``params``.

    ``old_params`` are the member's parameters before the decision; ``changes`` what explore
    changed relative to the donor's parameters."""

    kind: Kind
    member: int
    resource: float
    resource_from: float
    params: Mapping[str, Any]
    old_params: Mapping[str, Any]
    reason: str
    donor: int | None = None
    donor_score: float | None = None
    changes: tuple[Change, ...] = ()


def _resource_key(resource: float) -> int:
    """The boundary as seed material: the float's bits, so 40 and 40.0 seed alike."""
    return int.from_bytes(struct.pack("<d", float(resource)), "little")


def _rank_key(m: MemberScore) -> tuple[bool, float, int]:
    finite = math.isfinite(m.score)
    return (not finite, m.score if finite else 0.0, m.member)


def fmt_value(v: Any) -> str:
    """A parameter value as a reason shows it: 3.1e-3 style for small or large floats."""
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            mantissa, exp = f"{v:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
        return fmt(v)
    return repr(v) if isinstance(v, str) else str(v)


def describe(changes: Sequence[Change]) -> str:
    """What explore changed, for a reason: ``perturbed lr 3.1e-3 → 3.7e-3, resampled momentum
    0.9 → 0.5``."""
    parts = []
    for c in changes:
        if c.how == "activated":
            if c.new is None:
                parts.append(f"dropped {c.name} (inactive)")
            else:
                parts.append(f"drew {c.name} {fmt_value(c.new)} (now active)")
        elif c.how == "chosen":
            parts.append(f"set {c.name} {fmt_value(c.old)} → {fmt_value(c.new)} by GP-UCB")
        else:
            parts.append(f"{c.how} {c.name} {fmt_value(c.old)} → {fmt_value(c.new)}")
    return ", ".join(parts)


@dataclass
class PopulationRule:
    """The exploit-and-explore rule of one population, for PBT or PB2 (``spec.type``).

    ``mutable``: the parameters explore may change (all of the space's when None)."""

    space: SearchSpace
    spec: PBTSpec
    seed: int
    mutable: Collection[str] | None = None
    # +1 when the study minimises, -1 when it maximises: reasons show values in its units.
    sign: float = 1.0
    _mutable: frozenset[str] = field(init=False, repr=False)
    _mover: ParamMover = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._mutable = check_mutable(self.space, self.mutable)
        self._mover = ParamMover(self.space)

    def rng(self, member: int, resource: float) -> np.random.Generator:
        return np.random.default_rng([self.seed, member, _resource_key(resource)])

    def decide(
        self,
        member: MemberScore,
        population: Sequence[MemberScore],
        intervals: Sequence[Interval] = (),
        can_donate: Callable[[MemberScore], bool] | None = None,
    ) -> PopulationDecision:
        """The decision for ``member`` at its boundary ``member.resource``.

        ``population``: the other members' latest scores at or before that boundary (an entry
        for ``member`` itself is replaced by ``member``). ``intervals``: the population's
        finished intervals, read by PB2 only. ``can_donate``: whether a member's checkpoint at
        its score is still there to clone (None: all are).

        A donor is a top-quantile member whose score is *at* the boundary: the clone resumes
        from the donor's checkpoint there, so the member's resource never moves (a member
        behind has no checkpoint at the boundary yet; its earlier score still ranks)."""
        at = fmt(member.resource)
        known: dict[int, MemberScore] = {}
        for m in population:
            if m.resource > member.resource:
                raise ValueError(
                    f"population: trial {m.member}'s score at {fmt(m.resource)} is past the "
                    f"boundary {at}; give its latest score at or before {at}"
                )
            known[m.member] = m
        known[member.member] = member
        fixed = {name: v for name, v in member.params.items() if name not in self._mutable}
        group = ""
        if fixed:
            known = {
                i: m
                for i, m in known.items()
                if all(name in m.params and _same(m.params[name], v) for name, v in fixed.items())
            }
            group = " with " + ", ".join(f"{name}={fmt_value(v)}" for name, v in fixed.items())
        ranked = sorted(known.values(), key=_rank_key)
        n = len(ranked)
        k = min(math.ceil(self.spec.quantile * n), n // 2)
        rank = next(i for i, m in enumerate(ranked) if m.member == member.member)
        score = fmt(self.sign * member.score)

        def keep(why: str) -> PopulationDecision:
            return PopulationDecision(
                "keep",
                member.member,
                member.resource,
                member.resource,
                dict(member.params),
                dict(member.params),
                f"keep at {at}: {why}",
            )

        if k == 0:
            return keep(f"{score}, only {n} member(s){group} known, too few to compare")
        if rank < n - k:
            return keep(f"{score}, rank {rank + 1} of {n}{group}, not in the bottom {k}")
        # Ties are ranked by member id, as everywhere: a member tied with a better-ranked one
        # still clones it (two mirrored members, as in the PBT paper's toy, score alike).
        top = [m for m in ranked[:k] if math.isfinite(m.score)]
        level = [m for m in top if abs(m.resource - member.resource) <= 1e-9]
        donors = [m for m in level if can_donate is None or can_donate(m)]
        if not donors:
            if not top:
                why = f"no member of the top {k} has a finite score"
            elif not level:
                why = f"no member of the top {k} has reached {at} yet"
            else:
                why = f"the checkpoints of the top {k} at {at} are no longer stored"
            return keep(f"{score} in the bottom {k} of {n}{group}, but {why}")
        rng = self.rng(member.member, member.resource)
        donor = donors[int(rng.integers(len(donors)))]
        if self.spec.type == "pb2":
            pending = [m.params for m in known.values() if m.member != member.member]
            params, changes = pb2_explore(
                self.space,
                self._mover,
                donor.params,
                self._mutable,
                self.spec.explore,
                intervals,
                pending,
                donor.resource,
                self.spec.interval,
                rng,
            )
        else:
            params, changes = perturb_explore(
                self.space, self._mover, donor.params, self._mutable, self.spec.explore, rng
            )
        what = describe(changes) or "kept its parameters"
        reason = (
            f"exploit at {at}: {score} in the bottom {k} of {n}{group}; cloned trial "
            f"{donor.member} ({fmt(self.sign * donor.score)}) and {what}"
        )
        return PopulationDecision(
            "exploit",
            member.member,
            member.resource,
            donor.resource,
            params,
            dict(member.params),
            reason,
            donor=donor.member,
            donor_score=donor.score,
            changes=tuple(changes),
        )


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
