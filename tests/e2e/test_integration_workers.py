"""The Keras, XGBoost and LightGBM integrations through real processes (API server, dispatcher,
a worker pool of two slots, PostgreSQL, Redis): each framework's digits example runs an ASHA
promotion study whose paused trials resume, on whichever slot asks first, from the model the
framework itself saved, with the first unit after the paused one.

One deployment and one pool serve the three studies in turn: a slot keeps its imports (Keras
and torch take seconds) from one study to the next."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REDIS_URL, _truncate_pg, _unreachable, redis_problem
from tests.e2e.stack import Deployment, assert_no_report_lost, running

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

# A few trials of each, on rungs 1, 3 and 9: a trial is paused at a rung it cannot be
# promoted from yet, and resumed once later ones rank below it.
SPACES: dict[str, dict[str, Any]] = {
    "keras": {"lr": {"type": "float", "low": 3e-3, "high": 3e-2, "log": True}},
    "xgboost": {"eta": {"type": "float", "low": 0.05, "high": 0.5, "log": True}},
    "lightgbm": {"learning_rate": {"type": "float", "low": 0.05, "high": 0.5, "log": True}},
}
METRICS = {"keras": "val_loss", "xgboost": "valid-mlogloss", "lightgbm": "valid-multi_logloss"}


class Stack:
    def __init__(self, deployment: Deployment, queue: str, record: Path) -> None:
        self.d, self.queue, self.record = deployment, queue, record

    def jobs(self, framework: str) -> list[dict[str, Any]]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        return [j for j in map(json.loads, lines) if j["framework"] == framework]


@pytest.fixture(scope="module")
def stack(pg_schema: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = redis_problem()
    if problem:
        _unreachable("Redis", problem)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    _truncate_pg(pg_schema)
    tmp = tmp_path_factory.mktemp("integrations")
    record = tmp / "jobs.jsonl"
    env = {
        "KERAS_BACKEND": "torch",
        "TUNEYARD_TEST_RECORD": str(record),
        # Two slots on a small machine: one thread each, for torch, XGBoost and LightGBM alike.
        "OMP_NUM_THREADS": "1",
    }
    with running(pg_schema, REDIS_URL, tmp, env=env) as d:
        queue = f"frameworks-{uuid.uuid4().hex[:6]}"
        d.start_pool("pool", queue, 2)
        yield Stack(d, queue, record)


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm", "keras"])
def test_paused_trials_resume_from_the_framework_s_checkpoint(stack: Stack, framework: str) -> None:
    d = stack.d
    sid = d.create(
        {
            "name": f"{framework}-digits",
            "metric": METRICS[framework],
            "space": SPACES[framework],
            "sampler": {"type": "random", "seed": 5},
            "scheduler": {
                "type": "asha",
                "mode": "promotion",
                "min_resource": 1,
                "max_resource": 9,
                "reduction_factor": 3,
            },
            "limits": {"max_trials": 6, "max_concurrent": 2},
            "execution": {
                "entrypoint": f"tests.e2e.integration_objectives:{framework}_digits",
                "queue": stack.queue,
            },
        }
    )
    assert d.wait_finished(sid, timeout=120)["state"] == "completed", d.logs()
    trials = d.trials(sid)
    assert len(trials) == 6 and all(t["state"] in ("completed", "stopped") for t in trials), [
        (t["state"], t["reason"]) for t in trials
    ]
    jobs = {(j["trial"], j["attempt"]): j for j in stack.jobs(framework)}

    resumed = 0
    for t in trials:
        # Every unit reported once, each with the study's metric and the others logged.
        assert_no_report_lost(t)
        assert all(METRICS[framework] in r["metrics"] for r in t["reports"])
        assert all(len(r["metrics"]) >= 2 for r in t["reports"]), t["reports"][0]
        attempts = t["attempt_log"]
        assert attempts[0]["resource_from"] == 0 and jobs[(t["id"], 1)]["units"] is None
        for before, after in itertools.pairwise(attempts):
            assert before["state"] == "paused", attempts
            last = max(r["step"] for r in t["reports"] if r["attempt"] == before["number"])
            first = min(r["step"] for r in t["reports"] if r["attempt"] == after["number"])
            # The resumed attempt starts where the paused one stopped, goes on with the unit
            # after it, and its job found the framework's model holding that many units.
            assert after["resource_from"] == last and first == last + 1, (t["number"], attempts)
            assert jobs[(t["id"], after["number"])]["units"] == last
            resumed += 1
    assert resumed >= 1, "no trial was paused and resumed"
    top = [t for t in trials if t["state"] == "completed"]
    assert top and all(t["resource"] == 9 for t in top)
    # The completed trial's model is the one the callback saved on complete.
    for t in top:
        assert d.http.get(f"/api/v1/trials/{t['id']}/model").status_code == 200
