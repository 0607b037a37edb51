"""optimize(n_trials=...): the workers sharing a budget start exactly n new trials."""

from __future__ import annotations

import random
import threading

import pytest

from tuneyard.worker.local import TrialBudget


def test_many_workers_start_exactly_n_new_trials() -> None:
    budget = TrialBudget(7)
    stop = threading.Event()
    started: list[int] = []
    resumed: list[int] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        while budget.reserve(stop):
            # What `next` handed out: a new trial, a resumed one or nothing to run yet.
            got = rng.choice(["new", "resume", "nothing"])
            budget.settle(started=got == "new")
            with lock:
                (started if got == "new" else resumed).append(seed)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(30)
    assert len(started) == 7 and budget.started == 7
    assert resumed  # jobs that were not new trials did not use up the budget
    stop.set()
    assert not budget.reserve(stop)


def test_a_stopped_worker_gives_up_waiting_for_a_place() -> None:
    budget = TrialBudget(1)
    stop = threading.Event()
    assert budget.reserve(stop)  # the one place is reserved and not settled yet
    stop.set()
    assert not budget.reserve(stop)  # a second worker would wait; a stop ends the wait
    budget.settle(started=False)
    assert budget.reserve(threading.Event())  # the place came back


def test_the_budget_must_hold_a_trial() -> None:
    with pytest.raises(ValueError, match="n_trials must be at least 1"):
        TrialBudget(0)
