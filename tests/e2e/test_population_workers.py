"""A population of 8 members trained by population-based training through real worker pools
on PostgreSQL (the API, the dispatcher and pools as on separate machines, each a process of
its own). Members pause at every boundary and resume at once on any machine; a member in the
bottom quantile resumes from a copy of a better member's checkpoint, and its first report
continues the donor's curve (the objective restores the donor's state and says so); the
parameters in every lineage stay in the space; a machine killed in the middle of an interval
loses no member."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.e2e.stack import Deployment, wait_for
from tuneyard.store.models import Attempt, PopulationStep, Report, Trial

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def test_eight_members_exploit_across_machines_and_survive_a_killed_one(
    deployment: Deployment, postgres_url: str
) -> None:
    d = deployment
    queue = f"pbt-{uuid.uuid4().hex[:8]}"
    machine_a = d.start_pool("machine-a", queue, 2, "--name", "machine-a")
    d.start_pool("machine-b", queue, 2, "--name", "machine-b")
    sid = d.create(
        {
            "name": "population",
            "metric": "loss",
            "space": {
                "h0": {"type": "float", "low": 0.0, "high": 1.0},
                "h1": {"type": "float", "low": 0.0, "high": 1.0},
                "arch": {"type": "categorical", "choices": ["mlp"], "mutable": False},
            },
            "sampler": {"type": "random", "seed": 4},
            "scheduler": {"type": "pbt", "population": 8, "interval": 2, "max_resource": 14},
            "limits": {"max_concurrent": 4},
            "execution": {
                "entrypoint": "tests.e2e.objectives:population_member",
                "queue": queue,
                "max_retries": 2,
            },
        }
    )

    # A machine goes in the middle of an interval: once one of its members has reported past
    # a boundary, the pool and its slots are killed.
    def mid_interval() -> dict[str, object] | None:
        for t in d.trials(sid):
            if (
                t["state"] == "running"
                and (t["worker"] or "").startswith("machine-a/")
                and (t["resource"] or 0) > 2
                and int(t["resource"]) % 2 == 1
            ):
                return t
        return None

    victim = wait_for(mid_interval, 120, "a member of machine-a in the middle of an interval")
    slots = [w for w in d.http.get("/api/v1/workers").json() if w["name"].startswith("machine-a/")]
    machine_a.send_signal(signal.SIGKILL)
    machine_a.wait()
    for w in slots:
        with contextlib.suppress(ProcessLookupError):
            os.kill(w["pid"], signal.SIGKILL)
    d.start_pool("machine-c", queue, 2, "--name", "machine-c")
    assert d.wait_finished(sid, timeout=400)["state"] == "completed", d.logs()

    engine = create_engine(postgres_url)
    with Session(engine) as s:
        trials = {t.id: t for t in s.scalars(select(Trial).where(Trial.study_id == sid))}
        steps = s.scalars(select(PopulationStep).where(PopulationStep.study_id == sid)).all()
        reports = s.scalars(
            select(Report).join(Trial, Trial.id == Report.trial_id).where(Trial.study_id == sid)
        ).all()
        attempts = s.scalars(
            select(Attempt).join(Trial, Trial.id == Attempt.trial_id).where(Trial.study_id == sid)
        ).all()
    engine.dispose()
    # No member lost: all 8 trained to the top, the killed one by a retry.
    assert len(trials) == 8
    assert all(t.state == "completed" and t.resource == 14 for t in trials.values()), [
        (t.number, t.state, t.reason) for t in trials.values()
    ]
    assert trials[victim["id"]].attempts >= 2  # type: ignore[index]
    by_step = {(r.trial_id, r.step): r for r in reports}
    for (tid, step), _ in by_step.items():
        assert all((tid, k) in by_step for k in range(1, int(step) + 1))  # no hole in a curve
    exploits = [x for x in steps if x.decision == "exploit"]
    assert exploits, "no member exploited"
    step_of = {(x.trial_id, x.resource): x for x in steps}
    crossed = 0
    for x in exploits:
        assert x.donor_id is not None
        # The clone's first report restored the donor's checkpoint at the boundary and
        # continued its curve: the loss it restored is the donor's reported loss there.
        # A donor that had itself exploited there holds its own donor's checkpoint: the
        # archive is that of the member at the end of the chain.
        saver = x.donor_id
        while (at := step_of[(saver, x.resource)]).decision == "exploit":
            assert at.donor_id is not None
            saver = at.donor_id
        first = by_step[(x.trial_id, x.resource + 1)]
        saved_there = by_step[(saver, x.resource)]
        assert first.metrics["restored_from"] == saver
        assert first.metrics["restored_loss"] == pytest.approx(saved_there.value)
        assert saved_there.value is not None and x.score is not None
        assert saved_there.value <= x.score  # cloned a member at least as good
        # Which process saved the donor's checkpoint, and which resumed the clone from it.
        saved_by = {
            a.worker for a in attempts if a.trial_id == saver and a.resource_to == x.resource
        }
        resumed_by = {
            a.worker for a in attempts if a.trial_id == x.trial_id and a.resource_from == x.resource
        }
        crossed += bool(resumed_by - saved_by)
    for x in steps:
        for params in (x.params, x.new_params):
            assert 0.0 <= params["h0"] <= 1.0 and 0.0 <= params["h1"] <= 1.0
            assert params["arch"] == "mlp"
    # Clones crossed worker processes: a donor's checkpoint resumed by another slot.
    assert crossed > 0
