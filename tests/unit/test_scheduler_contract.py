"""The contract every scheduler keeps, checked on the simulator, which drives the same engine
as the service: each type and mode, each sampler, with hypothesis choosing the study's size,
the number of workers, their speeds and the learning curves (and so the order of events).

* no trial is promoted out of a rung unless it ranked within the rung's quota (the top
  floor(n/eta)) when it was promoted, and none twice out of one rung;
* every trial ends in a final state;
* no step is reported twice or out of order, none past max_resource, and a resumed trial
  goes on from where it paused (no report lost);
* the study places exactly its budget of trials, the engine says it is over when the work
  runs out, and, when no attempt failed, it ends with a completed trial (an asynchronous
  pausing study by its final promotions, made only once nothing runs and nothing can start);
* with attempts that crash (retried while retries last, then failed), workers that stop
  and hand their trial back (resumed from its checkpoint, no retry used) and workers that
  freeze past their lease (reaped and retried; the frozen attempt's late report refused),
  all of the above still holds, and a trial fails only once its retries are spent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tuneyard.scheduler.samplers import make_sampler
from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.schedulers import make_scheduler
from tuneyard.scheduler.simulator import SimResult, Simulator
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, SchedulerSpec, StudySpec

SCHEDULERS: dict[str, dict[str, Any]] = {
    "fifo": {"type": "fifo"},
    "median": {"type": "median"},
    "sha": {"type": "sha"},
    "hyperband": {"type": "hyperband"},
    "asha-promotion": {"type": "asha", "mode": "promotion"},
    "asha-stopping": {"type": "asha", "mode": "stopping"},
    "asha-brackets": {"type": "asha", "mode": "promotion", "brackets": 3},
}
# Schedulers whose promotions are bounded by a rung's quota.
QUOTA = {"sha", "hyperband", "asha-promotion", "asha-brackets"}
# Schedulers that always end with a completed trial (the synchronous ones may not, when the
# budget is too small to fill a rung: a definition warning says so).
ENDS_COMPLETED = {"fifo", "median", "asha-stopping", "asha-promotion", "asha-brackets"}
SAMPLERS = (
    "random",
    "grid",
    "sobol",
    "tpe",
    "cmaes",
    "genetic",
    "bohb",
    "gp",
    "mfgp",
    "nsga2",
    "motpe",
)
SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.125},
    "y": {"type": "float", "low": 0.001, "high": 1.0, "log": True, "grid_points": 4},
    "k": {"type": "categorical", "choices": ["a", "b", "c"]},
}


def _curves(seed: int) -> Any:
    """Learning curves set by the configuration and the seed, some crossing others."""
    rng = np.random.default_rng(seed)
    shape = {k: rng.uniform(0.2, 3.0) for k in ("a", "b", "c")}

    def curve(p: dict[str, Any], step: float) -> float:
        final = (p["x"] - 0.3) ** 2 + 0.1 * abs(math.log10(p["y"]) + 1.5)
        return final + shape[p["k"]] / math.sqrt(step)

    return curve


def _run(
    name: str,
    sampler: str,
    eta: int,
    max_r: int,
    trials: int,
    speeds: list[float],
    seed: int,
    crash: float = 0.0,
    retries: int = 0,
    handback: float = 0.0,
    stall: float = 0.0,
) -> tuple[SimResult, Any]:
    spec = SchedulerSpec(
        min_resource=1, max_resource=max_r, reduction_factor=eta, **SCHEDULERS[name]
    )
    study = StudySpec.model_validate(
        {"name": "c", "metric": "loss", "space": SPACE, "sampler": {"type": sampler}}
    )
    space = SearchSpace(study.space)
    made = make_sampler(SamplerSpec(type=sampler), space, seed)
    cap = made.capacity()
    trials = trials if cap is None else min(trials, cap)
    sched = make_scheduler(spec)
    sim = Simulator(
        sched,
        made.suggest,
        _curves(seed),
        max_trials=trials,
        workers=len(speeds),
        # Uneven workers running uneven models, as GPUs and models are.
        speeds=speeds,
        step_time=lambda p: 1.0 + p["x"],
        snapshots=True,
        sampler=made if isinstance(made, ModelSampler) else None,
        # An attempt crashes at a step with probability ``crash``, the same every run.
        fails=lambda t, step: _draw(seed, t.number, step, t.failed) < crash,
        max_retries=retries,
        # A worker stops after a step with probability ``handback``: the trial goes back.
        hands_back=lambda t, step: _draw(seed + 1, t.number, step) < handback,
        # A worker freezes past its lease with probability ``stall``.
        stalls=lambda t, step: _draw(seed + 2, t.number, step, t.attempt) < stall,
    )
    return sim.run(), sched


def _draw(*key: float) -> float:
    return float(np.random.default_rng([int(k * 1000) for k in key]).uniform())


def _check(name: str, res: SimResult, sched: Any, trials: int, retries: int = 0) -> None:
    top = sched.ladder.top
    promoted: set[tuple[int, int]] = set()
    for ev in res.events:
        if ev.kind != "promote" or name not in QUOTA:
            continue
        assert ev.rung is not None and ev.rung < top
        assert (ev.trial_id, ev.rung) not in promoted, f"{name}: promoted twice out of a rung"
        promoted.add((ev.trial_id, ev.rung))
        if ev.final:
            # Made once nothing ran and nothing could start, while none had reached the top.
            assert not any(e.kind == "complete" for e in res.events if e.time <= ev.time)
            continue
        quota = len(ev.snapshot) // sched.eta
        top_ids = [tid for tid, _ in ev.snapshot[:quota]]
        assert ev.trial_id in top_ids, f"{name}: promoted without ranking in its rung's quota"
    assert len(res.trials) == trials
    assert res.finished, f"{name}: the work ran out but the engine says the study goes on"
    for t in res.trials:
        assert t.state in ("completed", "stopped", "failed"), (name, t.trial_id, t.state)
        # A trial fails for good only once its retries are spent, and never retries more.
        assert (t.state == "failed") == (t.failed > retries), (name, t.failed, t.state)
        steps = [s for s, _ in t.history]
        assert steps == sorted(set(steps)), f"{name}: a step reported twice or out of order"
        assert all(s <= sched.ladder.max_resource + 1e-9 for s in steps)
        # No report lost: every whole step from the first to the last is there.
        if steps:
            assert steps == [float(s) for s in range(1, int(steps[-1]) + 1)], (name, steps)
    if name in ENDS_COMPLETED and trials and not any(t.failed for t in res.trials):
        assert any(t.state == "completed" for t in res.trials), f"{name}: nothing completed"


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@settings(max_examples=40, deadline=None)
@given(
    eta=st.integers(2, 4),
    max_r=st.sampled_from([4, 9, 16]),
    trials=st.integers(1, 40),
    speeds=st.lists(st.floats(0.5, 3.0), min_size=1, max_size=8),
    seed=st.integers(0, 10_000),
)
def test_every_scheduler_keeps_the_contract(
    name: str, eta: int, max_r: int, trials: int, speeds: list[float], seed: int
) -> None:
    res, sched = _run(name, "random", eta, max_r, trials, speeds, seed)
    _check(name, res, sched, len(res.trials))


@pytest.mark.parametrize("sampler", SAMPLERS)
@settings(max_examples=6, deadline=None)
@given(
    trials=st.integers(1, 24),
    speeds=st.lists(st.floats(0.5, 3.0), min_size=1, max_size=4),
    seed=st.integers(0, 10_000),
)
def test_every_sampler_keeps_the_contract_under_asha(
    sampler: str, trials: int, speeds: list[float], seed: int
) -> None:
    res, sched = _run("asha-promotion", sampler, 3, 9, trials, speeds, seed)
    _check("asha-promotion", res, sched, len(res.trials))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
@settings(max_examples=25, deadline=None)
@given(
    trials=st.integers(1, 30),
    speeds=st.lists(st.floats(0.5, 3.0), min_size=1, max_size=6),
    seed=st.integers(0, 10_000),
    crash=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
    retries=st.integers(0, 3),
    handback=st.sampled_from([0.0, 0.05, 0.2]),
    stall=st.sampled_from([0.0, 0.05, 0.2]),
)
def test_the_contract_holds_when_attempts_crash_freeze_or_are_handed_back(
    name: str,
    trials: int,
    speeds: list[float],
    seed: int,
    crash: float,
    retries: int,
    handback: float,
    stall: float,
) -> None:
    res, sched = _run(name, "random", 3, 9, trials, speeds, seed, crash, retries, handback, stall)
    _check(name, res, sched, len(res.trials), retries)
    kinds = {ev.kind for ev in res.events}
    if any(t.failed for t in res.trials) and retries:
        assert "retry" in kinds
    reaped = [ev for ev in res.events if "lease expired" in ev.detail]
    # Every reaped attempt's worker woke and sent its report, and it was refused.
    assert res.stale_reports == len(reaped)
