"""Synchronous successive halving and Hyperband.

Successive halving (Jamieson & Talwalkar 2016, https://arxiv.org/abs/1502.07943): a bracket of
n configurations all train to the first rung; once every one has arrived, the best
``floor(n/eta)`` are promoted to the next rung, and so on up to ``max_resource``.

Hyperband (Li et al. 2017, https://arxiv.org/abs/1603.06560) loops over brackets
``s = s_max .. 0``: bracket s starts ``ceil((s_max + 1) / (s + 1) * eta^s)`` configurations at
rung ``s_max - s``, trading how many configurations are tried against how long each trains.

Brackets open one after another as new trials are requested; a new bracket opens as soon as the
previous one admitted all its configurations, so free workers start it while the older bracket
waits for its rungs to fill.
"""

from __future__ import annotations

import math

from tuneyard.scheduler.board import Board, BracketInfo
from tuneyard.scheduler.decisions import Placement
from tuneyard.scheduler.schedulers.halving import HalvingScheduler


class SuccessiveHalving(HalvingScheduler):
    name = "sha"
    synchronous = True

    def initial_brackets(self) -> list[BracketInfo]:
        return [self.bracket_plan(0)]

    def bracket_plan(self, index: int) -> BracketInfo:
        size = self.spec.bracket_size or self.eta**self.ladder.top
        return BracketInfo(index=index, base=0, size=size, admitted=0, closed=False)

    def place(
        self, number: int, board: Board, next_index: int
    ) -> tuple[Placement, BracketInfo | None]:
        for b in board.brackets():
            if not b.closed and (b.size is None or b.admitted < b.size):
                return self._first_job(b), None
        new = self.bracket_plan(next_index)
        return self._first_job(new), new


class Hyperband(SuccessiveHalving):
    name = "hyperband"

    def bracket_plan(self, index: int) -> BracketInfo:
        s_max = self.ladder.top
        s = s_max - index % (s_max + 1)
        n = math.ceil((s_max + 1) / (s + 1) * self.eta**s)
        return BracketInfo(index=index, base=s_max - s, size=n, admitted=0, closed=False)
