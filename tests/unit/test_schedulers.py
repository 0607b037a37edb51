"""Scheduler invariants on the fake-clock simulator, with hypothesis choosing the setting."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneyard.scheduler.board import BracketInfo, MemoryBoard
from tuneyard.scheduler.rungs import geometric_rungs, linear_rungs
from tuneyard.scheduler.schedulers import TrialView, make_scheduler
from tuneyard.scheduler.simulator import SimResult, Simulator
from tuneyard.spec import SchedulerSpec


def crossing_curves(seed: int):  # type: ignore[no-untyped-def]
    """Learning curves whose order changes over time: slow starters can end up best."""
    rng = np.random.default_rng(seed)
    cache: dict[int, tuple[float, float, float]] = {}

    def suggest(number: int) -> dict[str, float]:
        cache[number] = (rng.uniform(0, 1), rng.uniform(0.2, 3), rng.uniform(0.5, 2))
        return {"n": number}

    def curve(p: dict[str, float], step: float) -> float:
        final, speed, noise = cache[int(p["n"])]
        return final + speed / math.sqrt(step) + 0.01 * noise * math.sin(step * noise)

    return suggest, curve


def simulate(spec: SchedulerSpec, trials: int, workers: int, seed: int = 0) -> SimResult:
    suggest, curve = crossing_curves(seed)
    sched = make_scheduler(spec)
    sim = Simulator(
        sched,
        suggest,
        curve,
        max_trials=trials,
        workers=workers,
        step_time=lambda p: 1.0 + (p["n"] % 3) * 0.37,
        snapshots=True,
    )
    return sim.run()


def test_rung_ladders() -> None:
    assert geometric_rungs(1, 27, 3) == (1, 3, 9, 27)
    assert geometric_rungs(1, 10, 3) == (1, 3, 9, 10)
    assert geometric_rungs(2, 2, 3) == (2,)
    assert geometric_rungs(0.5, 4, 2) == (0.5, 1, 2, 4)
    assert linear_rungs(1, 2, 6) == (1, 3, 5, 6)


@settings(max_examples=40, deadline=None)
@given(
    eta=st.integers(2, 4),
    max_r=st.sampled_from([4, 9, 16, 27]),
    trials=st.integers(1, 60),
    workers=st.integers(1, 8),
    brackets=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_asha_promotion_invariants(
    eta: int, max_r: int, trials: int, workers: int, brackets: int, seed: int
) -> None:
    spec = SchedulerSpec(
        type="asha", min_resource=1, max_resource=max_r, reduction_factor=eta, brackets=brackets
    )
    res = simulate(spec, trials, workers, seed)
    sched = make_scheduler(spec)
    top = sched.ladder.top
    promoted: set[tuple[int, int]] = set()
    for ev in res.events:
        if ev.kind != "promote":
            continue
        assert ev.rung is not None and ev.rung < top
        assert (ev.trial_id, ev.rung) not in promoted, "promoted twice out of one rung"
        promoted.add((ev.trial_id, ev.rung))
        if ev.final:
            continue  # the study's end: outside the quota, by design
        quota = len(ev.snapshot) // eta
        top_ids = [tid for tid, _ in ev.snapshot[:quota]]
        assert ev.trial_id in top_ids, "promoted out of a rung without ranking in its top 1/eta"
    for t in res.trials:
        assert t.state in ("completed", "stopped")
        assert all(step <= max_r for step, _ in t.history)
        steps = [s for s, _ in t.history]
        assert steps == sorted(set(steps)), "a step was trained twice or out of order"
    assert len(res.trials) == trials
    # However small the budget, the study ends with a trial trained to max_resource.
    assert any(t.state == "completed" and t.history[-1][0] == max_r for t in res.trials)


def test_a_small_asha_study_ends_with_one_trial_at_the_top() -> None:
    """12 trials, rungs 1/3/9/27: too few for rung 9's quota (floor(n/3) of its entries)."""
    spec = SchedulerSpec(type="asha", min_resource=1, max_resource=27, reduction_factor=3)
    res = simulate(spec, 12, 4, seed=3)
    finals = [ev for ev in res.events if ev.kind == "promote" and ev.final]
    assert finals, "no final promotion"
    assert all("as the study ends" in ev.detail for ev in finals)
    # The finals come after every ordinary job: none starts after the first of them.
    first = min(ev.time for ev in finals)
    assert not [ev for ev in res.events if ev.kind == "start" and ev.time > first]
    done = [t for t in res.trials if t.state == "completed"]
    assert len(done) == 1 and done[0].history[-1][0] == 27
    # The one that climbed was the best paused trial of the highest rung it left from.
    climber = finals[0].trial_id
    assert res.trials[climber].state == "completed"


@settings(max_examples=25, deadline=None)
@given(trials=st.integers(1, 80), workers=st.integers(1, 6), seed=st.integers(0, 1000))
def test_sync_sha_promotes_only_complete_rungs(trials: int, workers: int, seed: int) -> None:
    spec = SchedulerSpec(type="sha", min_resource=1, max_resource=9, reduction_factor=3)
    res = simulate(spec, trials, workers, seed)
    by_rung: dict[tuple[int, int], list[int]] = defaultdict(list)
    for ev in res.events:
        if ev.kind == "promote":
            by_rung[(res.trials[ev.trial_id].bracket, ev.rung or 0)].append(ev.trial_id)
            # When a synchronous rung promotes, every trial of the bracket sent there arrived.
            arrived = {tid for tid, _ in ev.snapshot}
            bracket = res.trials[ev.trial_id].bracket
            expected = {
                t.trial_id
                for t in res.trials
                if t.bracket == bracket and any(s >= [1, 3, 9][ev.rung or 0] for s, _ in t.history)
            }
            assert expected <= arrived
    for (b, k), ids in by_rung.items():
        size = sum(1 for t in res.trials if t.bracket == b and t.rung >= k)
        assert len(ids) == size // 3, (b, k, ids, size)
    assert all(t.state in ("completed", "stopped") for t in res.trials)


def test_hyperband_brackets_follow_li_et_al() -> None:
    sched = make_scheduler(SchedulerSpec(type="hyperband", min_resource=1, max_resource=81))
    plans = [sched.bracket_plan(i) for i in range(5)]
    assert [(p.base, p.size) for p in plans] == [(0, 81), (1, 34), (2, 15), (3, 8), (4, 5)]
    res = simulate(SchedulerSpec(type="hyperband", min_resource=1, max_resource=9), 40, 3)
    first_rung = defaultdict(set)
    for t in res.trials:
        first_rung[t.bracket % 3].add(t.decisions[0][2].rsplit(" ", 1)[-1])
    assert first_rung == {0: {"1"}, 1: {"3"}, 2: {"9"}}
    assert all(t.state in ("completed", "stopped") for t in res.trials)


def test_asha_stopping_mode_keeps_the_top_and_stops_the_rest() -> None:
    spec = SchedulerSpec(type="asha", max_resource=27, mode="stopping")
    res = simulate(spec, 50, 4, seed=5)
    stops = [e for e in res.events if e.kind == "stop"]
    assert stops and all("not in the top" in e.detail for e in stops)
    assert not any(e.kind in ("pause", "promote") for e in res.events)
    completed = [t for t in res.trials if t.state == "completed"]
    assert completed and all(t.history[-1][0] == 27 for t in completed)


def test_median_rule_stops_trials_worse_than_the_median() -> None:
    spec = SchedulerSpec(type="median", min_resource=2, max_resource=10, interval=2, min_trials=3)
    res = simulate(spec, 30, 2, seed=2)
    stops = [e for e in res.events if e.kind == "stop"]
    assert stops and all("worse than the median" in e.detail for e in stops)
    assert sum(t.state == "completed" for t in res.trials) >= 1


def test_fifo_trains_everything_to_the_end() -> None:
    res = simulate(SchedulerSpec(type="fifo", max_resource=5), 7, 3)
    assert all(t.state == "completed" and t.trained == 5 for t in res.trials)
    assert res.resource_used == 35


def test_simulation_is_deterministic() -> None:
    spec = SchedulerSpec(type="asha", max_resource=27, brackets=2)
    a, b = simulate(spec, 40, 5, seed=9), simulate(spec, 40, 5, seed=9)
    assert [(e.time, e.kind, e.trial_id) for e in a.events] == [
        (e.time, e.kind, e.trial_id) for e in b.events
    ]


def test_asha_saves_resource_against_fifo() -> None:
    asha = simulate(SchedulerSpec(type="asha", max_resource=27), 81, 4, seed=1)
    fifo = simulate(SchedulerSpec(type="fifo", max_resource=27), 81, 4, seed=1)
    assert asha.resource_used < fifo.resource_used / 3
    assert asha.best() is not None


def test_pause_reason_and_on_the_spot_promotion() -> None:
    sched = make_scheduler(SchedulerSpec(type="asha", max_resource=9))
    board = MemoryBoard(sched.cutoff_rank)
    board.open_bracket(BracketInfo(0, 0, None, 0, False))
    scores = [0.5, 0.4, 0.3]
    decisions = []
    for tid, sc in enumerate(scores):
        view = TrialView(tid, tid, 0, -1, 1.0, sc, sc)
        recs = sched.milestones(view, 1.0, sc)
        for r in recs:
            board.record(r.bracket, r.rung, tid, r.score)
        decisions.append(sched.decide(view, 1.0, sc, recs, board))
        if decisions[-1].kind == "pause":
            board.set_waiting(0, 0, tid, True)
    assert [d.kind for d in decisions] == ["pause", "pause", "continue"]
    assert decisions[2].resource_to == 3 and decisions[2].promoted_from == 0
    assert "on the spot" in decisions[2].reason
    assert "0.4 is not in the top 0 of 2 (1/3)" in decisions[1].reason
