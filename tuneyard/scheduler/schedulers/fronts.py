"""A rung ranked by non-dominated sorting, as the halving schedulers see it in a study with
several objectives or with constraints (MO-ASHA, Schmucker et al. 2021,
https://arxiv.org/abs/2106.12639).

The rung's entries are put in one total order, (front under constraint-dominance, tie-break
inside the front, arrival), by :func:`tuneyard.scheduler.multi.rank`; the quota tests of the
single-objective schedulers then read places in that order where they compared scores with a
cut-off. With one objective and no constraint the order is the sort by (score, arrival) of
the single-objective board, so every decision is the one the single-objective code makes.

Cost: the order depends only on what never changes in an entry (its vector and arrival), so
it is computed once per rung and state of the rung (:class:`RungVectors` memoises it, and the
store keeps those between calls, extended as entries arrive): O(n log n) numpy work for two
objectives when an entry arrives, nothing more until the next. Which entries may be promoted
(waiting, unpromoted) is a small indexed lookup. Nothing reads the study's other rungs.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from tuneyard.scheduler.board import Board, RungVectors
from tuneyard.scheduler.multi import Method, Ranking, rank


@dataclass(frozen=True)
class RankedRung:
    """A rung's vectors and their order by fronts."""

    vectors: RungVectors
    ranking: Ranking
    # Index of each trial's entry in ``vectors``.
    index: dict[int, int]

    @property
    def size(self) -> int:
        return len(self.vectors)

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

    def best_of(self, trials: Collection[int]) -> int | None:
        """The best-placed of ``trials`` (trial ids with an entry here), None when empty."""
        placed = [self.position(t) for t in trials if t in self.index]
        if not placed:
            return None
        return self.vectors.trial_ids[self.ranking.order[min(placed)]]


def rank_vectors(vectors: RungVectors, method: Method, upto: int | None = None) -> RankedRung:
    """The order of ``vectors``, memoised on them; ``upto``: only places below it are asked
    about (a quota test), so only they need be exact (see :func:`tuneyard.scheduler.multi.rank`).
    """
    key = (method, upto)
    ranking = vectors.rankings.get(key)
    if not isinstance(ranking, Ranking):
        points = np.asarray(vectors.scores, dtype=float) if len(vectors) else np.zeros((0, 1))
        ranking = rank(points, np.asarray(vectors.violations), method, vectors.seqs, upto)
        vectors.rankings[key] = ranking
    return RankedRung(vectors, ranking, {t: i for i, t in enumerate(vectors.trial_ids)})


def rank_rung(
    board: Board, bracket: int, rung: int, method: Method, upto: int | None = None
) -> RankedRung:
    return rank_vectors(board.vectors(bracket, rung), method, upto)
