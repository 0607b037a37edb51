"""The scheduler's read-only view of rung results.

Schedulers decide from a ``Board``; they never see the whole study. The store implements it
with indexed queries, the simulator and the unit tests with :class:`MemoryBoard`. Scores are
always "lower is better": the caller negates maximised metrics.

Each rung keeps a *cut-off*: the entry at rank ``cutoff_rank(n)`` among its ``n`` entries in
(score, arrival) order, e.g. the ``floor(n/eta)``-th best for ASHA. Whether an entry ranks in
the top is then one comparison with the cut-off, and the store keeps the cut-off up to date
with one neighbour lookup per new entry (the rank target moves by at most one per entry), so no
decision ever counts or scans a rung.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol


@dataclass(frozen=True)
class Vector:
    """A result of a study with several objectives or with constraints: every objective,
    minimised (maximised ones negated, as scores are), the total constraint violation (0:
    feasible) and the constraints that failed, as reasons (``gpu_mem_gb 18.2 > 16``)."""

    scores: tuple[float, ...]
    violation: float = 0.0
    failed: tuple[str, ...] = ()

    @property
    def feasible(self) -> bool:
        return self.violation == 0


@dataclass(frozen=True)
class Entry:
    trial_id: int
    score: float
    promoted: bool
    # The trial sits paused at this rung, its checkpoint saved, ready to be resumed.
    waiting: bool
    # Arrival order within the study; breaks ties between equal scores.
    seq: int = 0
    # Several objectives or constraints: the minimised objective vector and total violation
    # (None: the entry's one objective is ``score``).
    scores: tuple[float, ...] | None = None
    violation: float = 0.0

    @property
    def key(self) -> tuple[float, int]:
        return (self.score, self.seq)


CutoffRank = Callable[[int], int]


@dataclass(eq=False)
class RungVectors:
    """The part of a rung's entries that never changes once written (trial, arrival, vector,
    violation), in arrival order: what ranking by fronts reads. Promotions and pauses change
    only flags, so a store may keep one of these per rung and extend it as entries arrive;
    ``rankings`` memoises the orders computed on it."""

    trial_ids: tuple[int, ...] = ()
    seqs: tuple[int, ...] = ()
    # Minimised objective vectors (an entry without one is its score alone).
    scores: tuple[tuple[float, ...], ...] = ()
    violations: tuple[float, ...] = ()
    rankings: dict[object, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.trial_ids)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def extended(self, entries: Sequence[Entry]) -> RungVectors:
        """These and ``entries`` (later arrivals) after them."""
        if not entries:
            return self
        return RungVectors(
            self.trial_ids + tuple(e.trial_id for e in entries),
            self.seqs + tuple(e.seq for e in entries),
            self.scores + tuple(e.scores if e.scores is not None else (e.score,) for e in entries),
            self.violations + tuple(e.violation for e in entries),
        )


@dataclass(frozen=True)
class RungStats:
    entries: int = 0
    # Trials sent towards this rung that failed or were stopped before reaching it.
    dropped: int = 0
    promoted: int = 0


@dataclass(frozen=True)
class BracketInfo:
    index: int
    # Rung index at which the bracket's trials start.
    base: int
    # Configurations the bracket admits (None: unbounded, as in ASHA).
    size: int | None
    admitted: int
    # No more trials will be admitted (full, or the study reached max_trials).
    closed: bool


class Board(Protocol):
    def brackets(self) -> Sequence[BracketInfo]:
        """Brackets that may still produce promotions."""
        ...

    def stats(self, bracket: int, rung: int) -> RungStats: ...

    def cutoff(self, bracket: int, rung: int) -> Entry | None:
        """The entry at rank ``cutoff_rank(entries)`` of the rung, None when that is < 0."""
        ...

    def best_candidate(self, bracket: int, rung: int, include: int | None) -> Entry | None:
        """Best unpromoted entry that is waiting (or belongs to trial ``include``)."""
        ...

    def lowest_waiting(self, bracket: int) -> tuple[int, Entry] | None:
        """The lowest rung of the bracket with a waiting unpromoted entry, and its best entry
        there (one lookup, whatever the number of rungs)."""
        ...

    def vectors(self, bracket: int, rung: int) -> RungVectors:
        """What a study with several objectives ranks a rung by: every entry's vector, in
        arrival order (a rung's size, never the study's other rungs)."""
        ...

    def candidates(self, bracket: int, rung: int, include: int | None) -> frozenset[int]:
        """Trials whose entry in the rung is unpromoted and waits (or is ``include``'s)."""
        ...


class MemoryBoard:
    """A Board kept in memory: sorted lists per rung. Used by the simulator and tests."""

    def __init__(self, cutoff_rank: CutoffRank) -> None:
        self.cutoff_rank = cutoff_rank
        self._brackets: dict[int, BracketInfo] = {}
        self._rungs: dict[tuple[int, int], list[tuple[float, int, int]]] = {}
        self._entries: dict[tuple[int, int, int], Entry] = {}
        self._stats: dict[tuple[int, int], RungStats] = {}
        self._vectors: dict[tuple[int, int], RungVectors] = {}
        self._seq = 0

    # -- writes (what the service would persist) ------------------------------------------
    def open_bracket(self, info: BracketInfo) -> None:
        self._brackets[info.index] = info

    def update_bracket(self, index: int, **changes: object) -> None:
        self._brackets[index] = replace(self._brackets[index], **changes)  # type: ignore[arg-type]

    def close_bracket(self, index: int) -> None:
        self.update_bracket(index, closed=True)

    def close_all(self) -> None:
        for index in self._brackets:
            self.close_bracket(index)

    def admit(self, index: int) -> BracketInfo:
        info = self._brackets[index]
        admitted = info.admitted + 1
        full = info.size is not None and admitted >= info.size
        self.update_bracket(index, admitted=admitted, closed=info.closed or full)
        return self._brackets[index]

    def mark_done(self, indexes: Sequence[int]) -> None:
        """Brackets that can promote nothing more: no longer listed."""
        for index in indexes:
            self._brackets.pop(index, None)

    def record(
        self, bracket: int, rung: int, trial_id: int, score: float, vector: Vector | None = None
    ) -> None:
        key = (bracket, rung, trial_id)
        if key in self._entries:
            return
        self._seq += 1
        bisect.insort(self._rungs.setdefault((bracket, rung), []), (score, self._seq, trial_id))
        self._entries[key] = Entry(
            trial_id,
            score,
            promoted=False,
            waiting=False,
            seq=self._seq,
            scores=None if vector is None else vector.scores,
            violation=0.0 if vector is None else vector.violation,
        )
        s = self._stats.get((bracket, rung), RungStats())
        self._stats[(bracket, rung)] = replace(s, entries=s.entries + 1)

    def set_waiting(self, bracket: int, rung: int, trial_id: int, waiting: bool) -> None:
        key = (bracket, rung, trial_id)
        self._entries[key] = replace(self._entries[key], waiting=waiting)

    def mark_promoted(self, bracket: int, rung: int, trial_id: int) -> None:
        key = (bracket, rung, trial_id)
        self._entries[key] = replace(self._entries[key], promoted=True, waiting=False)
        s = self._stats.get((bracket, rung), RungStats())
        self._stats[(bracket, rung)] = replace(s, promoted=s.promoted + 1)

    def mark_dropped(self, bracket: int, rung: int) -> None:
        s = self._stats.get((bracket, rung), RungStats())
        self._stats[(bracket, rung)] = replace(s, dropped=s.dropped + 1)

    def entry(self, bracket: int, rung: int, trial_id: int) -> Entry | None:
        return self._entries.get((bracket, rung, trial_id))

    # -- Board ---------------------------------------------------------------------------
    def brackets(self) -> Sequence[BracketInfo]:
        return [self._brackets[i] for i in sorted(self._brackets)]

    def stats(self, bracket: int, rung: int) -> RungStats:
        return self._stats.get((bracket, rung), RungStats())

    def top(self, bracket: int, rung: int, k: int) -> Sequence[Entry]:
        rows = self._rungs.get((bracket, rung), [])[: max(0, k)]
        return [self._entries[(bracket, rung, tid)] for _, _, tid in rows]

    def cutoff(self, bracket: int, rung: int) -> Entry | None:
        rows = self._rungs.get((bracket, rung), [])
        rank = self.cutoff_rank(len(rows))
        if not 0 <= rank < len(rows):
            return None
        return self._entries[(bracket, rung, rows[rank][2])]

    def _rung_entries(self, bracket: int, rung: int) -> list[Entry]:
        return [
            self._entries[(bracket, rung, tid)]
            for _, _, tid in self._rungs.get((bracket, rung), [])
        ]

    def vectors(self, bracket: int, rung: int) -> RungVectors:
        key = (bracket, rung)
        kept = self._vectors.get(key, RungVectors())
        if len(kept) < self.stats(bracket, rung).entries:
            found = self._rung_entries(bracket, rung)
            new = sorted((e for e in found if e.seq > kept.last_seq), key=lambda e: e.seq)
            kept = self._vectors[key] = kept.extended(new)
        return kept

    def candidates(self, bracket: int, rung: int, include: int | None) -> frozenset[int]:
        return frozenset(
            e.trial_id
            for e in self._rung_entries(bracket, rung)
            if not e.promoted and (e.waiting or e.trial_id == include)
        )

    def lowest_waiting(self, bracket: int) -> tuple[int, Entry] | None:
        for b, k in sorted(self._rungs):
            if b != bracket:
                continue
            e = self.best_candidate(b, k, None)
            if e is not None:
                return k, e
        return None

    def best_candidate(self, bracket: int, rung: int, include: int | None) -> Entry | None:
        for _, _, tid in self._rungs.get((bracket, rung), []):
            e = self._entries[(bracket, rung, tid)]
            if not e.promoted and (e.waiting or tid == include):
                return e
        return None
