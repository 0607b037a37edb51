"""The simulator's hooks for callers with per-trial state: trial_curve, on_end and budget."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from tuneyard.scheduler.schedulers import make_scheduler
from tuneyard.scheduler.simulator import SimResult, SimTrial, Simulator
from tuneyard.spec import SchedulerSpec

SPECS = {
    "asha-promotion": SchedulerSpec(type="asha", min_resource=1, max_resource=9),
    "asha-stopping": SchedulerSpec(type="asha", min_resource=1, max_resource=9, mode="stopping"),
    "hyperband": SchedulerSpec(type="hyperband", min_resource=1, max_resource=9),
    "fifo": SchedulerSpec(type="fifo", max_resource=9),
}


class Recorder:
    """A trial_curve and an on_end that remember every call."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.finals: dict[int, float] = {}
        self.steps: dict[int, list[float]] = defaultdict(list)
        self.seen: dict[int, SimTrial] = {}
        self.ended: list[int] = []

    def suggest(self, number: int) -> dict[str, float]:
        self.finals[number] = float(self.rng.uniform())
        return {"n": number}

    def curve(self, t: SimTrial, step: float) -> float:
        if t.state in ("stopped", "completed"):
            raise AssertionError(f"trial {t.trial_id} asked for a step after it ended")
        # The same trial object every time, and the one whose configuration it is.
        assert self.seen.setdefault(t.trial_id, t) is t
        assert t.params == {"n": t.number}
        self.steps[t.trial_id].append(step)
        return self.finals[t.number] + 1.0 / step

    def on_end(self, t: SimTrial) -> None:
        assert t.state in ("stopped", "completed")
        self.ended.append(t.trial_id)


def simulate(
    spec: SchedulerSpec, rec: Recorder, trials: int = 40, budget: float | None = None
) -> SimResult:
    return Simulator(
        make_scheduler(spec),
        rec.suggest,
        None,
        max_trials=trials,
        workers=4,
        step_time=lambda p: 1.0 + (p["n"] % 3) * 0.37,
        trial_curve=rec.curve,
        on_end=rec.on_end,
        budget=budget,
    ).run()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_trial_curve_gets_each_trial_its_steps_in_order(name: str) -> None:
    rec = Recorder()
    res = simulate(SPECS[name], rec)
    for t in res.trials:
        # Every step from 1 up, once each: a resumed trial continues where it paused.
        assert rec.steps[t.trial_id] == [float(s) for s in range(1, len(rec.steps[t.trial_id]) + 1)]
        assert [s for s, _ in t.history] == rec.steps[t.trial_id]
        assert rec.seen[t.trial_id] is t
    if name == "asha-promotion":
        resumed = {e.trial_id for e in res.events if e.kind == "promote"}
        paused = {e.trial_id for e in res.events if e.kind == "pause"}
        assert resumed & paused, "no trial was paused and resumed: the test proves nothing"


def test_trial_curve_scores_are_the_ones_reported() -> None:
    rec = Recorder()
    res = simulate(SPECS["asha-promotion"], rec)
    for t in res.trials:
        assert t.history == [(s, rec.finals[t.number] + 1.0 / s) for s in rec.steps[t.trial_id]]


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("budget", [None, 37.0])
def test_on_end_is_called_once_per_trial_in_its_final_state(
    name: str, budget: float | None
) -> None:
    rec = Recorder()
    res = simulate(SPECS[name], rec, budget=budget)
    assert Counter(rec.ended) == Counter(t.trial_id for t in res.trials)
    assert all(t.state in ("stopped", "completed") for t in res.trials)


def test_on_end_covers_trials_paused_when_the_study_ends() -> None:
    rec = Recorder()
    res = simulate(SPECS["asha-promotion"], rec)
    never_promoted = [
        e.trial_id for e in res.events if e.detail == "not promoted: the study finished"
    ]
    assert never_promoted
    assert set(never_promoted) <= set(rec.ended)


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("budget", [1.0, 25.0, 60.5])
def test_budget_ends_the_run_on_the_step_that_spends_it(name: str, budget: float) -> None:
    rec = Recorder()
    res = simulate(SPECS[name], rec, budget=budget)
    assert res.exhausted
    # Only the steps reported are charged, and no step is reported after the budget is spent:
    # the one that spends it is the last one (step 1.0, so ceil(budget) of them).
    reported = sum(len(s) for s in rec.steps.values())
    assert reported == math.ceil(budget)
    assert res.resource_used == sum(t.trained for t in res.trials) == reported
    assert budget <= res.resource_used < budget + 1.0
    # What was still running is stopped when the budget is spent, and the clock stops there.
    cut = [e for e in res.events if e.detail == "the budget is spent"]
    assert all(e.kind == "stop" and e.time == res.elapsed for e in cut)


def test_budget_cuts_the_steps_in_flight() -> None:
    # Four workers are busy when the budget is spent: the step that spends it is charged, the
    # other three are not, and all four trials are stopped mid-job.
    rec = Recorder()
    res = simulate(SPECS["fifo"], rec, budget=10.0)
    assert res.resource_used == 10.0
    cut = {e.trial_id for e in res.events if e.detail == "the budget is spent"}
    assert len(cut) == 4
    assert all(len(res.trials[i].history) < 9 for i in cut)


def test_a_budget_not_reached_changes_nothing() -> None:
    plain, budgeted = Recorder(), Recorder()
    a = simulate(SPECS["asha-promotion"], plain)
    b = simulate(SPECS["asha-promotion"], budgeted, budget=a.resource_used + 1)
    assert not a.exhausted and not b.exhausted
    assert a.events == b.events
    assert a.resource_used == b.resource_used


def test_curve_and_trial_curve_are_exclusive() -> None:
    sched = make_scheduler(SPECS["fifo"])
    rec = Recorder()
    with pytest.raises(ValueError, match="exactly one"):
        Simulator(sched, rec.suggest, None, max_trials=1, workers=1)
    with pytest.raises(ValueError, match="exactly one"):
        Simulator(
            sched,
            rec.suggest,
            lambda p, s: 0.0,
            max_trials=1,
            workers=1,
            trial_curve=rec.curve,
        )
    with pytest.raises(ValueError, match="budget"):
        Simulator(sched, rec.suggest, lambda p, s: 0.0, max_trials=1, workers=1, budget=0)
