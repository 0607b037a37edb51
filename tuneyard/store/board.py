"""The scheduler's Board over SQL: every read is one indexed query bounded by its answer."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tuneyard.scheduler.board import BracketInfo, Entry, RungStats
from tuneyard.store.models import Bracket, Rung, RungEntry


class SqlBoard:
    """Rung results of one study, read and written inside the caller's transaction."""

    def __init__(self, session: Session, study_id: int, resources: Sequence[float]) -> None:
        self.s = session
        self.study_id = study_id
        self.resources = resources
        self._brackets: dict[int, Bracket] | None = None
        self._rungs: dict[tuple[int, int], Rung] = {}

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

    def _rung(self, bracket: int, rung: int) -> Rung | None:
        key = (bracket, rung)
        row = self._rungs.get(key)
        if row is None:
            row = self.s.get(Rung, (self.study_id, bracket, rung))
            if row is not None:
                self._rungs[key] = row
        return row

    def _rung_for_write(self, bracket: int, rung: int) -> Rung:
        row = self._rung(bracket, rung)
        if row is None:
            row = Rung(
                study_id=self.study_id,
                bracket=bracket,
                rung=rung,
                resource=self.resources[rung],
                entries=0,
                dropped=0,
                promoted=0,
            )
            self.s.add(row)
            self._rungs[(bracket, rung)] = row
        return row

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

    def top(self, bracket: int, rung: int, k: int) -> Sequence[Entry]:
        rows = self.s.execute(
            select(RungEntry.trial_id, RungEntry.score, RungEntry.promoted, RungEntry.waiting)
            .where(*self._in_rung(bracket, rung))
            .order_by(RungEntry.score, RungEntry.id)
            .limit(max(0, k))
        ).all()
        return [Entry(r[0], r[1], r[2], r[3]) for r in rows]

    def count_better(self, bracket: int, rung: int, score: float, limit: int) -> int:
        inner = (
            select(RungEntry.id)
            .where(*self._in_rung(bracket, rung), RungEntry.score < score)
            .limit(max(0, limit))
            .subquery()
        )
        return int(self.s.scalar(select(func.count()).select_from(inner)) or 0)

    def score_at_rank(self, bracket: int, rung: int, rank: int) -> float | None:
        if rank < 0:
            return None
        return self.s.scalar(
            select(RungEntry.score)
            .where(*self._in_rung(bracket, rung))
            .order_by(RungEntry.score, RungEntry.id)
            .offset(rank)
            .limit(1)
        )

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
                RungEntry.promoted.is_(False),
                RungEntry.waiting.is_(True),
            )
            .order_by(RungEntry.score, RungEntry.id)
            .limit(1)
        ).first()
        best = waiting
        if include is not None:
            own = self.s.execute(
                select(*cols).where(
                    *self._in_rung(bracket, rung),
                    RungEntry.trial_id == include,
                    RungEntry.promoted.is_(False),
                )
            ).first()
            if own is not None and (best is None or (own[1], own[4]) < (best[1], best[4])):
                best = own
        return None if best is None else Entry(best[0], best[1], best[2], best[3])

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

    def record(self, bracket: int, rung: int, trial_id: int, score: float) -> bool:
        exists = self.s.scalar(
            select(RungEntry.id).where(
                RungEntry.trial_id == trial_id,
                RungEntry.bracket == bracket,
                RungEntry.rung == rung,
            )
        )
        if exists is not None:
            return False
        self.s.add(
            RungEntry(
                study_id=self.study_id,
                bracket=bracket,
                rung=rung,
                trial_id=trial_id,
                score=score,
                promoted=False,
                waiting=False,
            )
        )
        row = self._rung_for_write(bracket, rung)
        row.entries += 1
        self.s.flush()
        return True

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
        if self._set_entry(bracket, rung, trial_id, promoted=True, waiting=False):
            row = self._rung_for_write(bracket, rung)
            row.promoted += 1

    def mark_dropped(self, bracket: int, rung: int) -> None:
        row = self._rung_for_write(bracket, rung)
        row.dropped += 1
