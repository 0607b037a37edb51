"""A two-objective study with a constraint through real worker pools, with ASHA promotion
mode on PostgreSQL: the API, the dispatcher and two RQ worker pools (as on two machines) in
processes of their own. Rungs rank by fronts under constraint-dominance, the reasons name the
fronts and the failed constraint, and the Pareto endpoint's set is the non-dominated feasible
completed trials a brute-force filter of the stored trials finds."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.stack import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def test_a_constrained_two_objective_study_runs_on_two_pools(deployment: Deployment) -> None:
    d = deployment
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    d.start_pool("machine-a", queue, 2)
    d.start_pool("machine-b", queue, 2)
    sid = d.create(
        {
            "name": "error-vs-latency",
            "objectives": [
                {"metric": "val_error", "direction": "minimize"},
                {"metric": "latency_ms", "direction": "minimize"},
            ],
            "constraints": [{"metric": "gpu_mem_gb", "max": 10}],
            "space": {
                "width": {"type": "int", "low": 8, "high": 96},
                "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            },
            "sampler": {"type": "nsga2", "seed": 7},
            "scheduler": {
                "type": "asha",
                "mode": "promotion",
                "min_resource": 1,
                "max_resource": 9,
                "reduction_factor": 3,
            },
            "limits": {"max_trials": 18, "max_concurrent": 4},
            "execution": {"entrypoint": "tests.e2e.objectives:trade_off", "queue": queue},
        }
    )
    assert d.wait_finished(sid, timeout=300)["state"] == "completed", d.logs()
    trials = d.trials(sid)
    assert len(trials) == 18
    reasons = [x["reason"] for t in trials for x in t["decisions"]]
    assert any("front " in why for why in reasons), reasons
    assert any("(infeasible: gpu_mem_gb " in why and "> 10)" in why for why in reasons), reasons
    for t in trials:
        assert t["values"] is not None, t
        assert t["feasible"] == (4 + 0.1 * t["params"]["width"] <= 10), t
    completed = [t for t in trials if t["state"] == "completed" and t["feasible"]]
    assert completed, "no feasible trial reached max_resource"

    def vector(t: dict[str, Any]) -> list[float]:
        return [t["values"]["val_error"], t["values"]["latency_ms"]]

    expected = {
        t["id"] for t in completed if not any(_dominates(vector(o), vector(t)) for o in completed)
    }
    front = d.http.get(f"/api/v1/studies/{sid}/pareto").json()
    assert {t["id"] for t in front["trials"]} == expected
