"""A promotion-mode ASHA study whose budget is too small for its rungs still ends with a
trial trained to max_resource: the API, the dispatcher and two worker pools (as on two
machines) in processes of their own, with tokens, on PostgreSQL and Redis.

12 trials for rungs 1/3/9/27 (eta 3): rung 3 promotes the best of its 4 entries to 9, where
one entry can promote nobody by the quota (floor(1/3) = 0). Without the end-of-study rule the
study ended with every trial stopped short of 27."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.stack import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def test_twelve_trials_for_rungs_to_27_end_with_a_trial_at_27(deployment: Deployment) -> None:
    d = deployment
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    d.start_pool("machine-a", queue, 2)
    d.start_pool("machine-b", queue, 2)
    sid = d.create(
        {
            "name": "small-budget",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "sampler": {"type": "random", "seed": 4},
            "scheduler": {
                "type": "asha",
                "mode": "promotion",
                "min_resource": 1,
                "max_resource": 27,
                "reduction_factor": 3,
            },
            "limits": {"max_trials": 12, "max_concurrent": 4},
            "execution": {"entrypoint": "tests.e2e.objectives:curve", "queue": queue},
        }
    )
    assert d.wait_finished(sid, timeout=240)["state"] == "completed", d.logs()
    trials = d.trials(sid)
    assert len(trials) == 12
    at_top = [t for t in trials if t["state"] == "completed"]
    assert at_top and all(t["resource"] == 27 for t in at_top), trials
    finals = [
        x["reason"]
        for t in trials
        for x in t["decisions"]
        if x["kind"] == "promote" and "as the study ends" in x["reason"]
    ]
    assert finals, "the top was reached without an end-of-study promotion"
    assert {t["state"] for t in trials} == {"completed", "stopped"}
