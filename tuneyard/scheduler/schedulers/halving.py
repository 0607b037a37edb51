"""The promotion rule shared by ASHA, synchronous successive halving and Hyperband.

A trial that reaches rung k pauses there; it is promoted to rung k+1 while it ranks in the top
``floor(n_k / eta)`` of the ``n_k`` trials recorded at rung k (Li et al. 2020, Algorithm 2,
``get_job``). Promotions are looked for from the highest rung down, so work that is furthest
along is finished first. The synchronous variants add one gate: a rung promotes only once every
trial sent to it has arrived (or dropped out).

Cost: per rung, one ``best_candidate`` lookup and one comparison with the rung's cut-off (the
``floor(n/eta)``-th best entry, kept up to date by the store); nothing counts or reads a rung.
"""

from __future__ import annotations

from tuneyard.scheduler.board import Board, BracketInfo, Entry, RungVectors
from tuneyard.scheduler.decisions import Decision, DecisionKind, Promotion, RungRecord, fmt
from tuneyard.scheduler.rungs import Ladder, geometric_rungs
from tuneyard.scheduler.schedulers.base import Scheduler, TrialView
from tuneyard.scheduler.schedulers.fronts import rank_rung, rank_vectors


class HalvingScheduler(Scheduler):
    pauses = True
    synchronous = False

    def _ladder(self) -> Ladder:
        s = self.spec
        return Ladder(geometric_rungs(s.min_resource, s.max_resource, self.eta))

    def cutoff_rank(self, n: int) -> int:
        return n // self.eta - 1

    # -- the synchronous gate -----------------------------------------------------------
    def _expected(self, b: BracketInfo, k: int, board: Board) -> int | None:
        """Trials that will arrive at rung k of bracket b, None while still unknown."""
        if k == b.base:
            return b.admitted if b.closed else None
        return board.stats(b.index, k - 1).promoted

    def rung_complete(self, b: BracketInfo, k: int, board: Board) -> bool:
        if not self.synchronous:
            return True
        expected = self._expected(b, k, board)
        if expected is None:
            return False
        st = board.stats(b.index, k)
        return st.entries + st.dropped >= expected

    # -- promotions ----------------------------------------------------------------------
    def _rungs_high_first(self, board: Board) -> list[tuple[BracketInfo, int]]:
        top = self.ladder.top
        pairs = [(b, k) for b in board.brackets() for k in range(b.base, top)]
        pairs.sort(key=lambda p: (-self.resources[p[1]], p[0].index))
        return pairs

    def _candidate(
        self, b: BracketInfo, k: int, board: Board, include: int | None
    ) -> tuple[int, str] | None:
        """The trial the rung promotes now, and why; None when it promotes none."""
        if not self.rung_complete(b, k, board):
            return None
        if self.fronts:
            return self._front_candidate(b, k, board, include)
        cut = board.cutoff(b.index, k)
        if cut is None:
            return None
        e = board.best_candidate(b.index, k, include)
        if e is None or e.key > cut.key:
            return None
        n = board.stats(b.index, k).entries
        reason = (
            f"promoted from {self.rung_name(k)} to {fmt(self.resources[k + 1])}: "
            f"{self.value(e.score)} is within the top {n // self.eta} of {n} "
            f"(1/{self.eta}, cut-off {self.value(cut.score)})"
        )
        return e.trial_id, reason

    def _front_candidate(
        self, b: BracketInfo, k: int, board: Board, include: int | None
    ) -> tuple[int, str] | None:
        """The rung's best-ranked waiting entry (or ``include``'s) when it is within the top
        ``floor(n/eta)`` by fronts. The rung is ranked only when it has such an entry."""
        n = board.stats(b.index, k).entries
        quota = self.cutoff_rank(n) + 1
        if quota <= 0:
            return None
        candidates = board.candidates(b.index, k, include)
        if not candidates:
            return None
        ranked = rank_rung(board, b.index, k, self.spec.ranking, upto=quota)
        best = ranked.best_of(candidates)
        if best is None or ranked.position(best) >= quota:
            return None
        reason = (
            f"promoted from {self.rung_name(k)} to {fmt(self.resources[k + 1])}: "
            f"{ranked.label(best)}, within the top {quota} of {n} (1/{self.eta})"
        )
        return best, reason

    def _find(self, board: Board, include: int | None) -> Promotion | None:
        for b, k in self._rungs_high_first(board):
            found = self._candidate(b, k, board, include)
            if found is None:
                continue
            trial_id, reason = found
            return Promotion(
                trial_id=trial_id,
                bracket=b.index,
                from_rung=k,
                to_rung=k + 1,
                resource_from=self.resources[k],
                resource_to=self.resources[k + 1],
                reason=reason,
            )
        return None

    def next_promotion(self, board: Board) -> Promotion | None:
        return self._find(board, include=None)

    def final_promotion(self, board: Board) -> Promotion | None:
        """Near the end of a budget a rung holds too few trials for its quota (fewer than
        ``eta`` entries promote nobody), and an asynchronous study could end with every
        trial paused short of ``max_resource``. So, once no new trial can start and nothing
        runs, and while no trial has reached the top, the best paused trial of the highest
        rung that has one is promoted, outside the quota; repeated, that trains one trial to
        ``max_resource``. The cost is at most one trial's remaining resource, run after the
        rest of the study. Synchronous brackets are sized to fill their rungs instead."""
        if self.synchronous:
            return None
        top = self.ladder.top
        brackets = board.brackets()
        if any(board.stats(b.index, top).entries for b in brackets):
            return None
        for k in range(top - 1, -1, -1):
            here = [b.index for b in brackets if b.base <= k]
            found = self._best_paused(here, board, k)
            if found is None:
                continue
            trial_id, index, what = found
            reason = (
                f"promoted from {self.rung_name(k)} to {fmt(self.resources[k + 1])} as the "
                f"study ends: no new trial can start and none has reached "
                f"{fmt(self.ladder.max_resource)}; {what} is the best paused "
                f"trial of the highest rung that has one"
            )
            return Promotion(
                trial_id=trial_id,
                bracket=index,
                from_rung=k,
                to_rung=k + 1,
                resource_from=self.resources[k],
                resource_to=self.resources[k + 1],
                reason=reason,
                final=True,
            )
        return None

    def _best_paused(
        self, brackets: list[int], board: Board, k: int
    ) -> tuple[int, int, str] | None:
        """The best paused trial of rung k over ``brackets``: its id, its bracket, and what
        the reason says of it (its score; by fronts, its front). By fronts, each bracket's
        best-ranked paused entry, then the best of those ranked among themselves."""
        if not self.fronts:
            scored = [
                (e, index)
                for index in brackets
                if (e := board.best_candidate(index, k, None)) is not None
            ]
            if not scored:
                return None
            e, index = min(scored, key=lambda f: f[0].key)
            return e.trial_id, index, self.value(e.score)
        best: list[tuple[int, int, str]] = []
        picked: list[Entry] = []
        for index in brackets:
            candidates = board.candidates(index, k, None)
            if not candidates:
                continue
            ranked = rank_rung(board, index, k, self.spec.ranking)
            trial = ranked.best_of(candidates)
            if trial is None:
                continue
            best.append((trial, index, f"the trial in {ranked.label(trial)}"))
            v, i = ranked.vectors, ranked.index[trial]
            picked.append(
                Entry(trial, v.scores[i][0], False, True, v.seqs[i], v.scores[i], v.violations[i])
            )
        if not best:
            return None
        among = rank_vectors(RungVectors().extended(picked), self.spec.ranking)
        return best[among.ranking.order[0]]

    # -- reports -------------------------------------------------------------------------
    def decide(
        self, trial: TrialView, step: float, score: float, records: list[RungRecord], board: Board
    ) -> Decision:
        if not records:
            return Decision.go_on(resource_to=trial.resource_to)
        k = records[-1].rung
        if k >= self.ladder.top:
            return self._complete(step)
        if step < trial.resource_to - 1e-9:
            # A rung passed in the middle of a job (the job range spans several rungs).
            return Decision.go_on(resource_to=trial.resource_to)
        promo = self._find(board, include=trial.trial_id)
        if promo is not None and promo.trial_id == trial.trial_id:
            return Decision(
                DecisionKind.CONTINUE,
                promo.reason + " (on the spot)",
                resource_to=promo.resource_to,
                rung=k,
                promoted_from=k,
            )
        if promo is not None:
            why = f"a trial in {self.rung_name(promo.from_rung)} is promoted first"
        elif self.synchronous and not self._bracket_rung_complete(trial.bracket, k, board):
            why = "waiting for the rest of the rung to finish"
        elif self.fronts:
            n = board.stats(trial.bracket, k).entries
            ranked = rank_rung(board, trial.bracket, k, self.spec.ranking, upto=n // self.eta)
            vector = records[-1].vector
            label = ranked.label(trial.trial_id, vector.failed if vector is not None else ())
            why = f"{label}, not in the top {n // self.eta} of {n} (1/{self.eta})"
        else:
            n = board.stats(trial.bracket, k).entries
            cut = board.cutoff(trial.bracket, k)
            cut_txt = f", cut-off {self.value(cut.score)}" if cut is not None else ""
            why = (
                f"{self.value(score)} is not in the top {n // self.eta} of {n} "
                f"(1/{self.eta}{cut_txt})"
            )
        return Decision(DecisionKind.PAUSE, f"paused at {self.rung_name(k)}: {why}", rung=k)

    def _bracket_rung_complete(self, index: int, k: int, board: Board) -> bool:
        for b in board.brackets():
            if b.index == index:
                return self.rung_complete(b, k, board)
        return True

    def finished_brackets(self, board: Board) -> list[int]:
        if not self.synchronous:
            return []
        done = []
        for b in board.brackets():
            if not b.closed:
                continue
            finished = True
            for k in range(b.base, self.ladder.top + 1):
                if not self.rung_complete(b, k, board):
                    finished = False
                    break
                if k < self.ladder.top:
                    st = board.stats(b.index, k)
                    if st.promoted < st.entries // self.eta:
                        finished = False
                        break
            if finished:
                done.append(b.index)
        return done
