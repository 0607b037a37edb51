"""The halving schedulers ranking rungs by fronts (several objectives, constraints).

Every decision by fronts reduces to today's decision when there is one objective and no
constraint: the same trials pause, stop, get promoted and complete at the same moments. With
two objectives and a constraint, the reasons name the front and the failed constraint, and a
promotion never prefers an infeasible entry to a feasible one.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneyard.scheduler.board import MemoryBoard, Vector
from tuneyard.scheduler.multi import rank
from tuneyard.scheduler.schedulers import make_scheduler
from tuneyard.scheduler.schedulers.fronts import rank_rung
from tuneyard.scheduler.simulator import SimResult, Simulator
from tuneyard.spec import SchedulerSpec

KINDS = [
    {"type": "asha"},
    {"type": "asha", "mode": "stopping"},
    {"type": "asha", "brackets": 2},
    {"type": "sha", "bracket_size": 9},
    {"type": "hyperband"},
]


def _run(kind: dict[str, object], seed: int, levels: int, workers: int, fronts: bool) -> SimResult:
    spec = SchedulerSpec(min_resource=1, max_resource=9, **kind)  # type: ignore[arg-type]

    def curve(p: dict[str, float], step: float) -> float | Vector:
        # Few distinct values, so ties between trials are common.
        score = round(p["x"] * levels) / levels + round(levels / (step + 1)) / levels
        return Vector((score,)) if fronts else score

    return Simulator(
        make_scheduler(spec, fronts=fronts),
        lambda n: {"x": random.Random(seed * 1000 + n).random()},
        curve,
        max_trials=30,
        workers=workers,
        speeds=[1.0 + 0.37 * w for w in range(workers)],
    ).run()


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k.values())))
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), levels=st.integers(1, 6), workers=st.integers(1, 5))
def test_one_objective_by_fronts_decides_as_by_scores(
    kind: dict[str, object], seed: int, levels: int, workers: int
) -> None:
    by_scores = _run(kind, seed, levels, workers, fronts=False)
    by_fronts = _run(kind, seed, levels, workers, fronts=True)
    plain = [(e.time, e.kind, e.trial_id, e.rung, e.final) for e in by_scores.events]
    ranked = [(e.time, e.kind, e.trial_id, e.rung, e.final) for e in by_fronts.events]
    assert ranked == plain
    assert by_fronts.finished == by_scores.finished


def _two_objectives(p: dict[str, float], step: float) -> Vector:
    x, y = p["x"], p["y"]
    late = 1.0 / step
    mem = 10 + 10 * y
    failed = (f"mem {mem:.1f} > 16",) if mem > 16 else ()
    return Vector((x + late, 1 - math.sqrt(x) + y + late), max(0.0, mem - 16), failed)


@pytest.mark.parametrize("mode", ["promotion", "stopping"])
def test_reasons_name_fronts_and_the_failed_constraint(mode: str) -> None:
    rng = random.Random(3)
    sched = make_scheduler(
        SchedulerSpec(type="asha", mode=mode, min_resource=1, max_resource=27), fronts=True
    )
    result = Simulator(
        sched,
        lambda n: {"x": rng.random(), "y": rng.random()},
        _two_objectives,
        max_trials=60,
        workers=4,
    ).run()
    assert result.finished
    details = [e.detail for e in result.events if e.kind in ("pause", "stop", "promote")]
    assert any("front " in d and " of " in d for d in details)
    assert any("(infeasible: mem " in d and "> 16)" in d for d in details)
    if mode == "stopping":
        assert any("only the top" in d and "continue" in d for d in details)
    else:
        assert any(d.startswith("promoted from rung") and "within the top" in d for d in details)


def test_a_rung_ranks_feasible_entries_before_infeasible_ones() -> None:
    sched = make_scheduler(SchedulerSpec(type="asha", min_resource=1, max_resource=9), fronts=True)
    board = MemoryBoard(sched.cutoff_rank)
    sched_brackets = sched.initial_brackets()
    for b in sched_brackets:
        board.open_bracket(b)
    # An infeasible entry that dominates every feasible one in the objectives.
    board.record(0, 0, 1, 0.0, Vector((0.0, 0.0), 2.0, ("mem 18 > 16",)))
    for tid, (a, b) in enumerate([(0.5, 0.6), (0.6, 0.5), (0.9, 0.9), (0.7, 0.8), (1, 1)], 2):
        board.record(0, 0, tid, a, Vector((a, b)))
    for tid in range(1, 7):
        board.set_waiting(0, 0, tid, True)
    ranked = rank_rung(board, 0, 0, "nsga2")
    assert ranked.position(1) == 5
    assert ranked.label(1, ("mem 18 > 16",)) == "front 5 of 5 (infeasible: mem 18 > 16)"
    promo = sched.next_promotion(board)
    # 6 entries, eta 3: the top 2 go on: trials 2 and 3, the first front.
    assert promo is not None and promo.trial_id in (2, 3)
    assert "front 1 of 5, within the top 2 of 6 (1/3)" in promo.reason


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 5), st.sampled_from([0, 0, 0, 1, 2])),
        min_size=1,
        max_size=40,
    ),
    k=st.integers(0, 45),
    method=st.sampled_from(["nsga2", "epsnet"]),
)
def test_a_quota_test_on_a_partial_ranking_answers_as_on_the_whole(
    data: list[tuple[int, int, int]], k: int, method: str
) -> None:
    points = [(a, b) for a, b, _ in data]
    violations = [v for _, _, v in data]
    whole = rank(points, violations, method, keys=range(len(data)))  # type: ignore[arg-type]
    part = rank(points, violations, method, keys=range(len(data)), upto=k)  # type: ignore[arg-type]
    for i in range(len(data)):
        for ties in (False, True):
            assert part.within_top(i, k, ties) == whole.within_top(i, k, ties)
