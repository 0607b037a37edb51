"""Fail fast with real processes: an API server on PostgreSQL, the dispatcher and an RQ
worker. A study whose objective always raises ends ``failing`` after its first 3 trials, starts
no fourth, and ``tuneyard study show`` and the API both name the error, its class and the
trial it came from."""

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
ERROR = "AttributeError: 'object' object has no attribute 'train_slow'"


def test_a_study_whose_objective_always_raises_ends_failing_after_three_trials(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "broken-code",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "scheduler": {"type": "asha", "min_resource": 1, "max_resource": 9},
        # Two workers' worth of slots, one trial at a time: the streak is the first 3 trials.
        "limits": {"max_trials": 20, "max_concurrent": 1},
        "execution": {
            "entrypoint": "tests.e2e.failing_objective:broken",
            "queue": queue,
            "max_retries": 1,
        },
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
        logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("dispatcher", "worker")}  # noqa: SIM115
        procs = [
            subprocess.Popen(
                [*py, "dispatcher"], env=env, stdout=logs["dispatcher"], stderr=subprocess.STDOUT
            ),
            subprocess.Popen(
                [
                    *py,
                    "worker",
                    "--queue",
                    queue,
                    "--slots",
                    "2",
                    "--data-dir",
                    str(tmp_path),
                    "--path",
                    str(ROOT),
                    "--allow",
                    "tests.e2e.failing_objective:*",
                    "--insecure-no-auth",
                ],
                env=env,
                stdout=logs["worker"],
                stderr=subprocess.STDOUT,
            ),
        ]
        try:
            sid = httpx.post(f"{url}{API}/studies", json=spec).json()["id"]
            deadline = time.monotonic() + 120
            study: dict = {}  # type: ignore[type-arg]
            while time.monotonic() < deadline:
                study = httpx.get(f"{url}{API}/studies/{sid}").json()
                if study["state"] != "running":
                    break
                time.sleep(0.3)
            assert study["state"] == "failing", (tmp_path / "worker.log").read_text()[-3000:]
            # It starts no fourth trial, however long the dispatcher and the worker go on.
            time.sleep(3)
            study = httpx.get(f"{url}{API}/studies/{sid}").json()
            tid = (study.get("error") or {}).get("trial_id")
            trial = httpx.get(f"{url}{API}/trials/{tid}").json() if tid else {}
            shown = subprocess.run(
                [*py, "study", "show", str(sid)],
                env={**env, "COLUMNS": "200"},
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            r.delete(f"rq:queue:{queue}")

    assert study["state"] == "failing" and study["trials_started"] == 3
    assert study["counts"]["failed"] == 3
    error = study["error"]
    assert error["summary"] == ERROR and error["type"] == "AttributeError"
    assert error["count"] == 3
    assert trial["state"] == "failed" and trial["number"] == 2
    assert ERROR in trial["error"] and "Traceback" in trial["error"]
    assert "the first 3 trials failed with the same error" in study["reason"]

    assert shown.returncode == 0, shown.stderr
    out = " ".join(shown.stdout.split())
    assert f"study {sid}: broken-code failing" in out
    assert f"error: {ERROR}" in out
    assert f"AttributeError, last from trial id {error['trial_id']}, 3 trial(s) in a row" in out
    assert f"tuneyard study resume {sid}" in out
