"""The PBT model benchmark's loops (bench/pbt_model.py) at a tiny size: a clone resumes from
its donor's checkpoint at its own boundary, the lineages stay in the space, and every method
spends the same epochs."""

from __future__ import annotations

from typing import Any

import pytest

from bench.pbt_model import SPACE, Size, run_asha, run_population

TINY = Size(population=4, interval=2, epochs=10)


def _in_space(params: Any) -> bool:
    lr, momentum = params["lr"], params["momentum"]
    return (
        SPACE["lr"]["low"] <= lr <= SPACE["lr"]["high"]
        and SPACE["momentum"]["low"] <= momentum <= SPACE["momentum"]["high"]
    )


@pytest.mark.parametrize("method", ["pbt", "pb2"])
def test_a_clone_continues_its_donor_at_the_same_boundary(method: str) -> None:
    run = run_population(method, 2, TINY)
    # Exploits past the first boundary, where the donor has earlier checkpoints to confuse.
    assert any(d.resource > TINY.interval for d in run.exploits), "the test proves nothing"
    assert len(run.clones) == len(run.exploits)
    for d, (donor_score, after) in zip(run.exploits, run.clones, strict=True):
        # The member resumes at its own resource, from the donor's state there: the loaded
        # model scores on the validation split exactly what the donor reported at that point.
        assert d.resource_from == d.resource
        assert d.resource % TINY.interval == 0
        assert after == pytest.approx(donor_score, abs=1e-9)
        assert _in_space(d.params)
    cloned = {d.member for d in run.exploits}
    for lineage in run.lineages:
        assert all(_in_space(e.params) for e in lineage.entries)
        assert all(_in_space(p) for _, p in lineage.schedule())
        if lineage.member in cloned:
            assert any(e.donor is not None for e in lineage.entries)
    # Each member trains each of its epochs once, clone or not.
    assert run.epochs == TINY.budget
    assert run.curve[-1][0] == TINY.budget
    assert run.reached == TINY.epochs
    assert 0.0 <= run.val <= 1.0 and 0.0 <= run.test <= 1.0


def test_asha_spends_the_populations_budget_and_returns_a_trial_at_the_last_rung() -> None:
    size = Size(population=4, interval=2, epochs=6)  # rungs at 2 and 6 epochs, 24 in all
    run = run_asha(0, size)
    assert run.epochs == size.budget
    assert run.trials > size.population  # the first rung stopped some
    assert _in_space(run.params)
    assert run.reached == size.epochs
    # The curve is every validation error the rungs saw, the returned trial's among them.
    assert min(v for _, v in run.curve) <= run.val
