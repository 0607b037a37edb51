"""Asynchronous Hyperband's choice of a new trial's bracket: the least committed resource,
counting the jobs still running (``bracket_choice: budget``), or round-robin."""

from __future__ import annotations

from collections import defaultdict

import pytest
from pydantic import ValidationError

from tuneyard.scheduler.board import MemoryBoard
from tuneyard.scheduler.schedulers import ASHA, make_scheduler
from tuneyard.scheduler.simulator import Simulator
from tuneyard.spec import SchedulerSpec


def _asha(**kw: object) -> ASHA:
    spec = SchedulerSpec(type="asha", min_resource=1, max_resource=9, brackets=3, **kw)  # type: ignore[arg-type]
    sched = make_scheduler(spec)
    assert isinstance(sched, ASHA)
    return sched


def _board(sched: ASHA, admitted: dict[int, int]) -> MemoryBoard:
    board = MemoryBoard(sched.cutoff_rank)
    for b in sched.initial_brackets():
        board.open_bracket(b)
        for _ in range(admitted.get(b.index, 0)):
            board.admit(b.index)
    return board


def test_a_new_trial_joins_the_bracket_that_committed_least() -> None:
    sched = _asha()  # rungs 1, 3, 9; bracket b starts at rung b
    # Committed: bracket 0 six first jobs of 1 = 6, bracket 1 one of 3 = 3, bracket 2 none.
    board = _board(sched, {0: 6, 1: 1})
    placement, opened = sched.place(7, board, 3)
    assert opened is None
    assert placement.bracket == 2 and placement.resource_to == 9
    assert "committed the least resource, 0 (0 running; 6 in bracket 0 (6 running)" in (
        placement.reason
    )
    board.admit(2)  # bracket 2 now 9: bracket 1 (3) is the least
    assert sched.place(8, board, 3)[0].bracket == 1
    # Equal commitments go to the lowest bracket, as Hyperband starts with its widest.
    board = _board(sched, {0: 3, 1: 1, 2: 1})
    assert sched.place(5, board, 3)[0].bracket == 0


def test_running_promotions_count_before_they_report() -> None:
    """Bracket 0 has 3 trials at rung 0 (1 epoch each) and two of them promoted to rung 1,
    still running there: it has committed 3 + 2 * (3 - 1) = 7, more than bracket 1's two
    first jobs of 3 (6), although only 3 epochs of it have reported. Counting only what has
    reported would send the trial to bracket 0, where two workers are already busy."""
    sched = _asha()
    board = _board(sched, {0: 3, 1: 2, 2: 1})
    for tid in range(3):
        board.record(0, 0, tid, 0.1 * tid)
    for tid in (3, 4):
        board.record(1, 1, tid, 0.5)
    board.record(2, 2, 5, 0.5)
    for tid in (0, 1):
        board.mark_promoted(0, 0, tid)
    assert sched.committed(board.brackets()[0], board) == 7
    assert sched.in_flight(board.brackets()[0], board) == 2
    assert sched.in_flight(board.brackets()[1], board) == 0
    placement, _ = sched.place(6, board, 3)
    assert placement.bracket == 1
    assert "6 (0 running; 7 in bracket 0 (2 running), 9 in bracket 2 (0 running))" in (
        placement.reason
    )
    # One of the two arrives at rung 1 and the other fails on the way: nothing runs there,
    # and the commitment stays what was started.
    board.record(0, 1, 0, 0.3)
    board.mark_dropped(0, 1)
    assert sched.in_flight(board.brackets()[0], board) == 0
    assert sched.committed(board.brackets()[0], board) == 7


def test_round_robin_and_the_stopping_mode_deal_by_trial_number() -> None:
    for sched in (_asha(bracket_choice="round_robin"), _asha(mode="stopping")):
        board = _board(sched, {0: 6, 1: 1})
        assert [sched.place(n, board, 3)[0].bracket for n in range(6)] == [0, 1, 2, 0, 1, 2]


def test_bracket_choice_is_for_asha_only() -> None:
    with pytest.raises(ValidationError, match="bracket_choice applies to asha only"):
        SchedulerSpec(type="hyperband", bracket_choice="round_robin")
    # A stored definition is validated again from its dump, which names the default.
    stored = SchedulerSpec(type="hyperband").model_dump()
    assert stored["bracket_choice"] == "budget"
    assert SchedulerSpec.model_validate(stored).type == "hyperband"


def _trained_by_bracket(choice: str, workers: int) -> list[float]:
    spec = SchedulerSpec(
        type="asha", min_resource=1, max_resource=27, brackets=4, bracket_choice=choice
    )  # type: ignore[arg-type]
    # Scores that rank trials by a hash of their number, a little better with every step.
    res = Simulator(
        make_scheduler(spec),
        lambda n: {"n": n},
        lambda p, step: (p["n"] * 7919 % 101) / 101 + 1 / step,
        max_trials=120,
        workers=workers,
        step_time=lambda p: 1.0 + (p["n"] % 3) * 0.37,
    ).run()
    trained: dict[int, float] = defaultdict(float)
    for t in res.trials:
        trained[t.bracket] += t.trained
    return [trained[b] for b in range(4)]


@pytest.mark.parametrize("workers", [1, 4, 16])
def test_brackets_train_about_equal_budgets_whatever_the_workers(workers: int) -> None:
    """Hyperband's brackets each get the same budget (Li et al. 2018). Round-robin gives the
    bracket that starts at 27 epochs 27 times the first bracket's resource per trial."""
    budget = _trained_by_bracket("budget", workers)
    rr = _trained_by_bracket("round_robin", workers)
    assert max(budget) / min(budget) < 1.25, budget
    assert max(rr) / min(rr) > 4, rr
