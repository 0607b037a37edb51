"""The scheduler's Board over SQL: every read and write is a bounded, indexed query."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from tuneyard.errors import Conflict
from tuneyard.lru import LRU
from tuneyard.scheduler.board import BracketInfo, CutoffRank, Entry, RungStats, RungVectors, Vector
from tuneyard.store.models import Bracket, Rung, RungEntry, Trial
from tuneyard.store.sql import insert_new


class RungCache:
    """A process's committed :class:`RungVectors` per (study, bracket, rung), so ranking a rung
    by fronts reads only the entries that arrived since (by id, the rung's index) and reuses
    the order it computed while nothing arrived. An entry's vector never changes once written,
    and a rung's entries are written under its rung's row lock, so ids grow in commit order; the
    rung's count (read in the caller's transaction) checks each use, and a copy that does not
    match it is read again whole."""

    def __init__(self, size: int = 256) -> None:
        self._kept: LRU[tuple[int, int, int], RungVectors] = LRU(size)
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int, int]) -> RungVectors | None:
        with self._lock:
            return self._kept.get(key)

    def put(self, key: tuple[int, int, int], vectors: RungVectors) -> None:
        with self._lock:
            self._kept.put(key, vectors)


class SqlBoard:
    """Rung results of one study, read and written inside the caller's transaction.

    Reads take no lock: a decision made on a rung a moment old is the decision an
    asynchronous scheduler would have made a moment earlier. Every write to a rung's row
    (its entries, cut-off, promoted and dropped counts) first locks that row
    (``SELECT ... FOR UPDATE``, the rung lock; :meth:`_rung_for_write`), and a promotion
    first locks the promoted trial's row, so the lock order is the one every path keeps
    (tuneyard/service/trials/base.py): study, trial, rungs by (bracket, rung)."""

    def __init__(
        self,
        session: Session,
        study_id: int,
        resources: Sequence[float],
        cutoff_rank: CutoffRank,
        rung_cache: RungCache | None = None,
    ) -> None:
        self.s = session
        self.study_id = study_id
        self.resources = resources
        self.cutoff_rank = cutoff_rank
        self.rung_cache = rung_cache if rung_cache is not None else RungCache(64)
        # Entries this transaction recorded, by rung: not committed yet, so never cached.
        self._own: dict[tuple[int, int], list[Entry]] = {}
        self._combined: dict[tuple[int, int], tuple[RungVectors, RungVectors]] = {}
        self._brackets: dict[int, Bracket] | None = None
        self._rungs: dict[tuple[int, int], Rung] = {}
        # Whether every rung of the study's open brackets is in _rungs (read_rungs).
        self._all_rungs = False
        # Rungs whose row this transaction holds locked (read again under the lock).
        self._locked: set[tuple[int, int]] = set()
        # Entries read along with a rung or as its new cut-off, by id: the session's identity
        # map holds its objects weakly, and cutoff() would read them again.
        self._entries: dict[int, RungEntry] = {}

    # -- reads ---------------------------------------------------------------------------
    def _bracket_rows(self) -> dict[int, Bracket]:
        if self._brackets is None:
            rows = self.s.scalars(
                select(Bracket)
                .where(Bracket.study_id == self.study_id, Bracket.done.is_(False))
                .order_by(Bracket.index)
            ).all()
            self._brackets = {b.index: b for b in rows}
        return self._brackets

    def brackets(self) -> Sequence[BracketInfo]:
        return [
            BracketInfo(b.index, b.base, b.size, b.admitted, b.closed)
            for b in self._bracket_rows().values()
        ]

    def read_rungs(self) -> None:
        """Read every rung of the study's open brackets, with their cut-off entries, in one
        statement: ``next`` looks at all of them (a promotion is looked for from the highest
        rung down, and a new trial's bracket is chosen from their counts), which read one by
        one was a round trip per rung, with the study's lock held. Bounded by the open
        brackets' rungs, whatever the study's size. Rungs this transaction read already are
        kept as they are."""
        if self._all_rungs:
            return
        rows = self.s.execute(
            select(Rung, RungEntry)
            .join(Bracket, (Bracket.study_id == Rung.study_id) & (Bracket.index == Rung.bracket))
            .outerjoin(RungEntry, RungEntry.id == Rung.cut_entry)
            .where(Rung.study_id == self.study_id, Bracket.done.is_(False))
        ).all()
        for row, cut in rows:
            key = (row.bracket, row.rung)
            if key in self._rungs:
                continue
            self._rungs[key] = row
            if cut is not None:
                self._entries[cut.id] = cut
        self._all_rungs = True

    def _rung(self, bracket: int, rung: int) -> Rung | None:
        key = (bracket, rung)
        row = self._rungs.get(key)
        if row is None and self._all_rungs and bracket in self._bracket_rows():
            return None  # read_rungs found no row: the rung has no entry yet
        if row is None:
            # With its cut-off entry, in one statement: cutoff() then finds that entry in the
            # session instead of reading it.
            found = self.s.execute(
                select(Rung, RungEntry)
                .outerjoin(RungEntry, RungEntry.id == Rung.cut_entry)
                .where(Rung.study_id == self.study_id, Rung.bracket == bracket, Rung.rung == rung)
            ).first()
            if found is not None:
                row = found[0]
                self._rungs[key] = row
                if found[1] is not None:
                    self._entries[found[1].id] = found[1]
        return row

    def _rung_for_write(self, bracket: int, rung: int) -> Rung:
        """The rung's row, locked until the transaction ends (created first when the rung has
        none yet), read again under the lock: its counts and cut-off may have moved since an
        unlocked read of this transaction."""
        key = (bracket, rung)
        if key in self._locked:
            return self._rungs[key]
        found = self._lock_rung(bracket, rung)
        if found is None:
            # Its first entry: two writers may both insert the row, the second does nothing.
            insert_new(
                self.s.connection(),
                Rung,
                {
                    "study_id": self.study_id,
                    "bracket": bracket,
                    "rung": rung,
                    "resource": self.resources[rung],
                    "entries": 0,
                    "dropped": 0,
                    "promoted": 0,
                },
                key=(Rung.study_id, Rung.bracket, Rung.rung),
            )
            found = self._lock_rung(bracket, rung)
            assert found is not None
        row, cut = found
        if cut is not None:
            self._entries[cut.id] = cut
        self._rungs[key] = row
        self._locked.add(key)
        return row

    def _lock_rung(self, bracket: int, rung: int) -> tuple[Rung, RungEntry | None] | None:
        found = self.s.execute(
            select(Rung, RungEntry)
            .outerjoin(RungEntry, RungEntry.id == Rung.cut_entry)
            .where(Rung.study_id == self.study_id, Rung.bracket == bracket, Rung.rung == rung)
            .with_for_update(of=Rung)
            .execution_options(populate_existing=True)
        ).first()
        return None if found is None else (found[0], found[1])

    def stats(self, bracket: int, rung: int) -> RungStats:
        row = self._rung(bracket, rung)
        if row is None:
            return RungStats()
        return RungStats(row.entries, row.dropped, row.promoted)

    def _in_rung(self, bracket: int, rung: int):  # type: ignore[no-untyped-def]
        return (
            RungEntry.study_id == self.study_id,
            RungEntry.bracket == bracket,
            RungEntry.rung == rung,
        )

    def cutoff(self, bracket: int, rung: int) -> Entry | None:
        row = self._rung(bracket, rung)
        if row is None or row.cut_entry is None or row.cut_score is None:
            return None
        e = self._entries.get(row.cut_entry) or self.s.get(RungEntry, row.cut_entry)
        if e is None:
            return None
        return Entry(e.trial_id, e.score, e.promoted, e.waiting, e.id)

    def best_candidate(self, bracket: int, rung: int, include: int | None) -> Entry | None:
        cols = (
            RungEntry.trial_id,
            RungEntry.score,
            RungEntry.promoted,
            RungEntry.waiting,
            RungEntry.id,
        )
        waiting = self.s.execute(
            select(*cols)
            .where(
                *self._in_rung(bracket, rung),
                # Spelled as the partial index's predicate, so the planner can use it.
                RungEntry.waiting,
                ~RungEntry.promoted,
            )
            .order_by(RungEntry.score, RungEntry.id)
            .limit(1)
        ).first()
        best = waiting
        if include is not None:
            # By the unique (trial, bracket, rung) key: one row, whatever the rung's size.
            own = self.s.execute(
                select(*cols).where(
                    RungEntry.trial_id == include,
                    RungEntry.bracket == bracket,
                    RungEntry.rung == rung,
                    RungEntry.promoted.is_(False),
                )
            ).first()
            if own is not None and (best is None or (own[1], own[4]) < (best[1], best[4])):
                best = own
        return None if best is None else Entry(best[0], best[1], best[2], best[3], best[4])

    def lowest_waiting(self, bracket: int) -> tuple[int, Entry] | None:
        row = self.s.execute(
            select(
                RungEntry.rung,
                RungEntry.trial_id,
                RungEntry.score,
                RungEntry.promoted,
                RungEntry.waiting,
                RungEntry.id,
            )
            .where(
                RungEntry.study_id == self.study_id,
                RungEntry.bracket == bracket,
                # Spelled as the partial index's predicate, so the planner can use it.
                RungEntry.waiting,
                ~RungEntry.promoted,
            )
            .order_by(RungEntry.rung, RungEntry.score, RungEntry.id)
            .limit(1)
        ).first()
        if row is None:
            return None
        return row[0], Entry(row[1], row[2], row[3], row[4], row[5])

    def vectors(self, bracket: int, rung: int) -> RungVectors:
        own = self._own.get((bracket, rung), [])
        n = self.stats(bracket, rung).entries - len(own)
        key = (self.study_id, bracket, rung)
        kept = self.rung_cache.get(key) or RungVectors()
        if len(kept) > n:
            kept = RungVectors()  # read in a transaction that was rolled back
        if len(kept) < n:
            kept = kept.extended(self._read_entries(bracket, rung, after=kept.last_seq))
            if len(kept) != n:
                kept = RungVectors().extended(self._read_entries(bracket, rung, after=0))
            self.rung_cache.put(key, kept)
        if not own:
            return kept
        # The same object while nothing changes, so its memoised order serves this call.
        combined = self._combined.get((bracket, rung))
        if combined is None or combined[0] is not kept or len(combined[1]) != len(kept) + len(own):
            combined = (kept, kept.extended(own))
            self._combined[(bracket, rung)] = combined
        return combined[1]

    def _read_entries(self, bracket: int, rung: int, after: int) -> list[Entry]:
        """The rung's committed entries after id ``after``, by the rung's index."""
        own = {e.seq for e in self._own.get((bracket, rung), [])}
        rows = self.s.execute(
            select(
                RungEntry.trial_id,
                RungEntry.score,
                RungEntry.id,
                RungEntry.scores,
                RungEntry.violation,
            )
            .where(*self._in_rung(bracket, rung), RungEntry.id > after)
            .order_by(RungEntry.id)
        ).all()
        return [
            Entry(t, score, False, False, i, None if v is None else tuple(v), viol)
            for t, score, i, v, viol in rows
            if i not in own
        ]

    def candidates(self, bracket: int, rung: int, include: int | None) -> frozenset[int]:
        waiting = self.s.scalars(
            select(RungEntry.trial_id).where(
                *self._in_rung(bracket, rung),
                # Spelled as the partial index's predicate, so the planner can use it.
                RungEntry.waiting,
                ~RungEntry.promoted,
            )
        ).all()
        found = set(waiting)
        if include is not None and include not in found:
            own = self.s.scalar(
                select(RungEntry.id).where(
                    RungEntry.trial_id == include,
                    RungEntry.bracket == bracket,
                    RungEntry.rung == rung,
                    RungEntry.promoted.is_(False),
                )
            )
            if own is not None:
                found.add(include)
        return frozenset(found)

    # -- writes --------------------------------------------------------------------------
    def open_bracket(self, info: BracketInfo) -> Bracket:
        row = Bracket(
            study_id=self.study_id,
            index=info.index,
            base=info.base,
            size=info.size,
            admitted=info.admitted,
            closed=info.closed,
            done=False,
        )
        self.s.add(row)
        self._bracket_rows()[info.index] = row
        return row

    def bracket_row(self, index: int) -> Bracket | None:
        return self._bracket_rows().get(index) or self.s.get(Bracket, (self.study_id, index))

    def admit(self, index: int) -> BracketInfo:
        row = self.bracket_row(index)
        if row is None:
            raise Conflict(f"bracket {index} of study {self.study_id} is missing")
        row.admitted += 1
        if row.size is not None and row.admitted >= row.size:
            row.closed = True
        return BracketInfo(row.index, row.base, row.size, row.admitted, row.closed)

    def close_all(self) -> None:
        self.s.execute(
            update(Bracket)
            .where(Bracket.study_id == self.study_id, Bracket.closed.is_(False))
            .values(closed=True)
        )
        for b in self._bracket_rows().values():
            b.closed = True

    def mark_done(self, indexes: Sequence[int]) -> None:
        for i in indexes:
            row = self.bracket_row(i)
            if row is not None:
                row.done = True
                self._bracket_rows().pop(i, None)

    def record(
        self, bracket: int, rung: int, trial_id: int, score: float, vector: Vector | None = None
    ) -> bool:
        # The rung's lock first: its entries' ids then grow in the order they commit.
        row = self._rung_for_write(bracket, rung)
        # Once per (trial, bracket, rung), by the unique key: one statement.
        entry_id = insert_new(
            self.s.connection(),
            RungEntry,
            {
                "study_id": self.study_id,
                "bracket": bracket,
                "rung": rung,
                "trial_id": trial_id,
                "score": score,
                "scores": None if vector is None else list(vector.scores),
                "violation": 0.0 if vector is None else vector.violation,
                "promoted": False,
                "waiting": False,
            },
            key=(RungEntry.trial_id, RungEntry.bracket, RungEntry.rung),
            returning=RungEntry.id,
        )
        if entry_id is None:
            return False
        self._own.setdefault((bracket, rung), []).append(
            Entry(
                trial_id,
                score,
                False,
                False,
                entry_id,
                None if vector is None else vector.scores,
                0.0 if vector is None else vector.violation,
            )
        )
        self._move_cutoff(row, (score, entry_id))
        row.entries += 1
        return True

    def _move_cutoff(self, row: Rung, new: tuple[float, int]) -> None:
        """Keep ``row.cut_*`` at rank ``cutoff_rank(n)`` as the rung grows from n-1 to n.

        The target rank moves by 0 or 1; the new entry shifts the old cut-off down one rank
        when it sorts before it. Either way the new cut-off is the old one or a neighbour.
        """
        before = self.cutoff_rank(row.entries)
        after = self.cutoff_rank(row.entries + 1)
        if after < 0:
            row.cut_score = row.cut_entry = None
            return
        if row.cut_entry is None or row.cut_score is None or before < 0:
            self._set_cut(row, self._neighbour(row, None, forward=True))
            return
        cut = (row.cut_score, row.cut_entry)
        if new < cut and after == before:
            self._set_cut(row, self._neighbour(row, cut, forward=False))
        elif new > cut and after == before + 1:
            self._set_cut(row, self._neighbour(row, cut, forward=True))

    def _neighbour(
        self, row: Rung, of: tuple[float, int] | None, forward: bool
    ) -> tuple[float, int] | None:
        key = tuple_(RungEntry.score, RungEntry.id)
        # The whole entry: it is the new cut-off, which cutoff() then finds in the session.
        q = select(RungEntry).where(*self._in_rung(row.bracket, row.rung))
        if forward:
            if of is not None:
                q = q.where(key > tuple_(*of))
            q = q.order_by(RungEntry.score, RungEntry.id)
        elif of is None:
            return None
        else:
            q = q.where(key < tuple_(*of)).order_by(RungEntry.score.desc(), RungEntry.id.desc())
        found = self.s.scalars(q.limit(1)).first()
        if found is None:
            return None
        self._entries[found.id] = found
        return (found.score, found.id)

    @staticmethod
    def _set_cut(row: Rung, key: tuple[float, int] | None) -> None:
        row.cut_score, row.cut_entry = (None, None) if key is None else key

    def _set_entry(self, bracket: int, rung: int, trial_id: int, **values: object) -> int:
        res = self.s.execute(
            update(RungEntry)
            .where(
                RungEntry.trial_id == trial_id,
                RungEntry.bracket == bracket,
                RungEntry.rung == rung,
            )
            .values(**values)
        )
        return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def set_waiting(self, bracket: int, rung: int, trial_id: int, waiting: bool) -> None:
        self._set_entry(bracket, rung, trial_id, waiting=waiting)

    def mark_promoted(self, bracket: int, rung: int, trial_id: int) -> None:
        # The trial's row before its rung's (the lock order); a no-op for a trial whose
        # report promotes it, which holds its row already.
        self.s.execute(select(Trial.id).where(Trial.id == trial_id).with_for_update())
        row = self._rung_for_write(bracket, rung)
        if self._set_entry(bracket, rung, trial_id, promoted=True, waiting=False):
            row.promoted += 1

    def mark_dropped(self, bracket: int, rung: int) -> None:
        row = self._rung_for_write(bracket, rung)
        row.dropped += 1
