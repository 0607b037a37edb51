"""The pbt/pb2 schedule as the engine runs it: a pause at every interval boundary, the
members furthest behind resumed first, completion at max_resource; on the memory board."""

from __future__ import annotations

from tuneyard.scheduler.board import MemoryBoard
from tuneyard.scheduler.engine import NEW_TRIAL, Engine
from tuneyard.scheduler.schedulers import PopulationScheduler, TrialView, make_scheduler
from tuneyard.spec import SchedulerSpec
from tuneyard.states import DecisionKind

SPEC = SchedulerSpec(type="pbt", population=3, interval=4, max_resource=10)


def view(trial_id: int, rung: int, resource_to: float) -> TrialView:
    return TrialView(trial_id, trial_id, 0, rung, resource_to, 0.5, 0.5)


def test_the_boundaries_are_the_rungs_and_each_pauses_until_the_top_completes() -> None:
    sched = make_scheduler(SPEC)
    assert isinstance(sched, PopulationScheduler)
    assert sched.resources == (4.0, 8.0, 10.0)
    engine = Engine(sched, capacity=3)
    board = MemoryBoard(sched.cutoff_rank)
    engine.open(board)
    first = engine.admit(0, board, 1)
    assert (first.placement.resource_from, first.placement.resource_to) == (0.0, 4.0)
    assert engine.report(view(0, -1, 4.0), 3.0, 0.7, board).decision.kind == DecisionKind.CONTINUE
    out = engine.report(view(0, -1, 4.0), 4.0, 0.6, board)
    assert out.decision.kind == DecisionKind.PAUSE
    assert out.decision.reason.startswith("pause at 4 for the population step (every 4)")
    top = engine.report(view(0, 1, 10.0), 10.0, 0.2, board)
    assert top.decision.kind == DecisionKind.COMPLETE


def test_a_paused_member_resumes_at_once_the_furthest_behind_first() -> None:
    sched = make_scheduler(SPEC)
    engine = Engine(sched, capacity=3)
    board = MemoryBoard(sched.cutoff_rank)
    engine.open(board)
    for n in range(3):
        engine.admit(n, board, 1)
    board.record(0, 1, 0, 0.1)  # member 0 paused at 8
    board.set_waiting(0, 1, 0, True)
    board.record(0, 0, 1, 0.9)  # member 1 paused at 4, behind: resumed first
    board.set_waiting(0, 0, 1, True)
    work = engine.next_work(lambda: None, board, may_start_new=True, running=1)
    assert work is not NEW_TRIAL and work is not None
    assert (work.trial_id, work.resource_from, work.resource_to) == (1, 4.0, 8.0)
    work = engine.next_work(lambda: None, board, may_start_new=True, running=1)
    assert (work.trial_id, work.resource_to) == (0, 10.0)  # type: ignore[union-attr]
    # Nobody paused: a new member starts while the population is not full.
    assert engine.next_work(lambda: None, board, may_start_new=True, running=1) is NEW_TRIAL


def test_the_shipped_population_example_is_a_valid_definition() -> None:
    from pathlib import Path

    import yaml

    from tuneyard.spec import StudySpec

    path = Path(__file__).resolve().parents[2] / "examples" / "pbt_study.yaml"
    spec = StudySpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec.scheduler.type == "pbt"
    assert spec.limits.max_trials == spec.scheduler.population == 8
    assert [n for n, p in spec.space.items() if not p.mutable] == ["units"]
