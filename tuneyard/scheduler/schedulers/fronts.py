"""A rung ranked by non-dominated sorting, as the halving schedulers see it in a study with
several objectives or with constraints (MO-ASHA, Schmucker et al. 2021,
https://arxiv.org/abs/2106.12639).

The rung's entries are put in one total order, (front under constraint-dominance, tie-break
inside the front, arrival), by :func:`tuneyard.scheduler.multi.rank`; the quota tests of the
single-objective schedulers then read positions in that order where they compared scores with
a cut-off. With one objective and no constraint the order is the sort by (score, arrival) of
the single-objective board, so every decision is the one the single-objective code makes.

Cost: ranking reads the rung (one indexed query of its entries) and sorts it, O(n log n) for
two objectives; the schedulers rank a rung only when it has an entry that could be promoted,
and once per decision. It grows with the rung, not with the study's other rungs or trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tuneyard.scheduler.board import Board, Entry
from tuneyard.scheduler.multi import Method, Ranking, rank


@dataclass(frozen=True)
class RankedRung:
    """The entries of one rung and their order by fronts."""

    entries: Sequence[Entry]
    ranking: Ranking
    # Index of each trial's entry in ``entries``.
    index: dict[int, int]

    @property
    def size(self) -> int:
        return len(self.entries)

    def position(self, trial_id: int) -> int:
        """0-based place of the trial's entry in the order, best first."""
        return self.ranking.positions[self.index[trial_id]]

    def within(self, trial_id: int, quota: int, keep_ties: bool = False) -> bool:
        """Whether the trial's entry is among the first ``quota`` (``keep_ties``: or ties
        the last of them exactly, as a stopping rule's ``score <= cut-off`` does)."""
        return self.ranking.within_top(self.index[trial_id], quota, keep_ties)

    def label(self, trial_id: int, failed: Sequence[str] = ()) -> str:
        """``front 4 of 6``; for an entry that breaks a constraint ``front 6 of 6
        (infeasible: gpu_mem_gb 18.2 > 16)``, naming the ``failed`` constraints when known."""
        i = self.index[trial_id]
        text = self.ranking.front_label(i)
        if self.ranking.feasible[i]:
            return text
        return f"{text} (infeasible: {', '.join(failed)})" if failed else f"{text} (infeasible)"

    def best_waiting(self, include: int | None) -> Entry | None:
        """The best-placed unpromoted entry that waits (or is trial ``include``'s)."""
        for i in self.ranking.order:
            e = self.entries[i]
            if not e.promoted and (e.waiting or e.trial_id == include):
                return e
        return None


def points(entries: Sequence[Entry]) -> tuple[np.ndarray, np.ndarray]:
    """The minimised objective vectors and total violations of entries (an entry without a
    vector is its one score)."""
    vectors = [e.scores if e.scores is not None else (e.score,) for e in entries]
    return np.asarray(vectors, dtype=float), np.asarray([e.violation for e in entries], dtype=float)


def rank_rung(
    board: Board, bracket: int, rung: int, method: Method, upto: int | None = None
) -> RankedRung:
    """The rung ranked; ``upto``: only places below it are asked about (a quota test), so
    only they need be exact (see :func:`tuneyard.scheduler.multi.rank`)."""
    entries = board.entries(bracket, rung)
    return rank_entries(entries, method, upto)


def rank_entries(entries: Sequence[Entry], method: Method, upto: int | None = None) -> RankedRung:
    p, v = points(entries)
    if not entries:
        p = p.reshape(0, 1)
    ranking = rank(p, v, method, keys=[e.seq for e in entries], upto=upto)
    return RankedRung(entries, ranking, {e.trial_id: i for i, e in enumerate(entries)})
