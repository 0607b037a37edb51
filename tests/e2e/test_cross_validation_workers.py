"""A 5-fold cross-validated study through real worker pools on PostgreSQL: the API, the
dispatcher and two RQ worker pools (as on two machines) in processes of their own. Folds run
in parallel as jobs of their own, spread over both pools; each resumes from its own
checkpoint when its trial is promoted; the stored aggregate of a trial is the mean of its
stored per-fold values; racing stops a clearly worse trial before its last fold, naming the
folds and the test."""

from __future__ import annotations

import re
import statistics
import uuid

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.e2e.stack import Deployment
from tuneyard.store.models import Attempt, Trial

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def test_five_folds_spread_over_two_pools_and_race(
    deployment: Deployment, postgres_url: str
) -> None:
    d = deployment
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    d.start_pool("machine-a", queue, 2, "--name", "machine-a")
    d.start_pool("machine-b", queue, 2, "--name", "machine-b")
    sid = d.create(
        {
            "name": "five-fold",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "sampler": {"type": "random", "seed": 11},
            "scheduler": {
                "type": "asha",
                "min_resource": 1,
                "max_resource": 9,
                "reduction_factor": 3,
            },
            "evaluation": {"folds": 5, "parallel": True, "racing": {"confidence": 0.9}},
            "limits": {"max_trials": 10, "max_concurrent": 4},
            "execution": {"entrypoint": "tests.e2e.objectives:cross_validated", "queue": queue},
        }
    )
    assert d.wait_finished(sid, timeout=300)["state"] == "completed", d.logs()
    listed = d.trials(sid)
    assert len(listed) == 10  # trials, not their folds

    engine = create_engine(postgres_url)
    with Session(engine) as s:
        trials = s.scalars(
            select(Trial).where(Trial.study_id == sid, Trial.parent_id.is_(None))
        ).all()
        folds = s.scalars(
            select(Trial).where(Trial.study_id == sid, Trial.parent_id.is_not(None))
        ).all()
        workers = s.scalars(
            select(Attempt.worker)
            .join(Trial, Trial.id == Attempt.trial_id)
            .where(Trial.study_id == sid)
        ).all()
        # The folds ran on both machines.
        machines = {(w or "").split("/")[0] for w in workers}
        assert {"machine-a", "machine-b"} <= machines, machines
        by_parent: dict[int, list[Trial]] = {}
        for f in folds:
            assert f.parent_id is not None
            by_parent.setdefault(f.parent_id, []).append(f)
        completed = [t for t in trials if t.state == "completed"]
        assert completed
        for t in completed:
            kids = by_parent[t.id]
            assert sorted(k.replicate for k in kids) == [0, 1, 2, 3, 4]
            assert t.value == pytest.approx(statistics.mean(k.value for k in kids))
            assert t.value_stderr is not None and t.value_stderr > 0
        raced = [t for t in trials if (t.reason or "").startswith("stopped after fold")]
        assert raced, [(t.state, t.reason) for t in trials]
        for t in raced:
            assert re.match(
                r"stopped after fold [2-4] of 5: mean .* is worse than the incumbent's .* "
                r"\(paired t-test, p = ",
                t.reason or "",
            ), t.reason
            # Its folds that had not reached the test's level were stopped, not run on.
            assert all(k.state in ("completed", "stopped", "paused") for k in by_parent[t.id])
    engine.dispose()
