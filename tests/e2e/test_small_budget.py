"""A promotion-mode ASHA study whose budget is too small for its rungs still ends with a
trial trained to max_resource: real API server, dispatcher and two worker processes (as on
two machines), PostgreSQL and Redis.

12 trials for rungs 1/3/9/27 (eta 3): rung 3 promotes the best of its 4 entries to 9, where
one entry can promote nobody by the quota (floor(1/3) = 0). Without the end-of-study rule the
study ended with every trial stopped short of 27."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.servers import api_servers
from tests.helpers import API

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]


def test_twelve_trials_for_rungs_to_27_end_with_a_trial_at_27(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    spec = {
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
    r = redis.Redis.from_url(redis_url)
    with api_servers(postgres_url, 1, tmp_path) as (url,):
        env = {
            **os.environ,
            "TUNEYARD_DATABASE_URL": postgres_url,
            "TUNEYARD_REDIS_URL": redis_url,
            "TUNEYARD_API_URL": url,
        }
        py = [sys.executable, "-m", "tuneyard.cli"]
        names = ("dispatcher", "worker-a", "worker-b")
        logs = {n: open(tmp_path / f"{n}.log", "wb") for n in names}  # noqa: SIM115
        worker = [
            "worker",
            "--queue",
            queue,
            "--slots",
            "2",
            "--path",
            str(ROOT),
            "--allow",
            "tests.e2e.objectives:*",
            "--insecure-no-auth",
        ]
        procs = [
            subprocess.Popen(
                [*py, "dispatcher"], env=env, stdout=logs["dispatcher"], stderr=subprocess.STDOUT
            ),
            *(
                subprocess.Popen(
                    [*py, *worker, "--data-dir", str(tmp_path / n), "--name", n],
                    env=env,
                    stdout=logs[n],
                    stderr=subprocess.STDOUT,
                )
                for n in ("worker-a", "worker-b")
            ),
        ]
        try:
            sid = httpx.post(f"{url}{API}/studies", json=spec).json()["id"]
            deadline = time.monotonic() + 240
            state = "running"
            while time.monotonic() < deadline and state == "running":
                time.sleep(0.5)
                state = httpx.get(f"{url}{API}/studies/{sid}").json()["state"]
            trials = httpx.get(f"{url}{API}/studies/{sid}/trials", params={"limit": 100}).json()[
                "items"
            ]
            details = [httpx.get(f"{url}{API}/trials/{t['id']}").json() for t in trials]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            r.delete(f"rq:queue:{queue}")
    log = (tmp_path / "worker-a.log").read_text()[-3000:]
    assert state == "completed", log
    assert len(trials) == 12
    at_top = [t for t in trials if t["state"] == "completed"]
    assert at_top and all(t["resource"] == 27 for t in at_top), trials
    finals = [
        d["reason"]
        for t in details
        for d in t["decisions"]
        if d["kind"] == "promote" and "as the study ends" in d["reason"]
    ]
    assert finals, "the top was reached without an end-of-study promotion"
    assert {t["state"] for t in trials} == {"completed", "stopped"}
