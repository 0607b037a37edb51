"""A PyTorch Lightning fit as the objective of an ASHA promotion study, through real worker
processes (the API, the dispatcher and a worker pool of one slot, on PostgreSQL and Redis):
trials pause at a rung with a Lightning checkpoint, and a promoted trial's resumed fit, loaded
from that checkpoint, reports the epoch after the paused one first."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import (
    Deployment,
    assert_no_report_lost,
    paused_and_resumed,
    running,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

# A model this small trains fastest on one thread, and one thread trains it the same way
# every run: with one slot running the trials in turn (each seeded by its number), the study
# takes the same path each time, pauses and promotions included.
# Lightning must not reach for the network either.
QUIET = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    # The first job imports torch and Lightning (the objective does, when it runs) while its
    # heartbeats go on, but a busy machine can keep the heartbeat thread waiting through
    # much of that import: a 20 s lease, not the usual 5 s, keeps it from costing an attempt.
    with running(postgres_url, redis_url, tmp_path, lease=20.0, env=QUIET) as d:
        yield d


def test_paused_lightning_fits_resume_from_their_checkpoints(deployment: Deployment) -> None:
    d = deployment
    queue = f"lightning-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 1)
    sid = d.create(
        {
            "name": "lightning-e2e",
            "metric": "val_loss",
            "space": {
                "lr": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True},
                "hidden": {"type": "int", "low": 16, "high": 64},
            },
            "sampler": {"type": "random", "seed": 5},
            "scheduler": {
                "type": "asha",
                "mode": "promotion",
                "min_resource": 1,
                "max_resource": 4,
                "reduction_factor": 2,
            },
            "limits": {"max_trials": 4, "max_concurrent": 2},
            "execution": {"entrypoint": "tests.e2e.framework_objectives:lightning", "queue": queue},
        }
    )
    assert d.wait_finished(sid, timeout=120)["state"] == "completed", d.logs()
    trials = d.trials(sid)
    assert {t["state"] for t in trials} <= {"completed", "stopped"}, d.logs()
    for t in trials:
        assert_no_report_lost(t)
    resumes = paused_and_resumed(trials)
    assert resumes, "no trial was paused and resumed"
    assert all(first == last + 1 for _, last, first in resumes), resumes
    top = [t for t in trials if t["state"] == "completed"]
    assert top and all(t["resource"] == 4 for t in top)
