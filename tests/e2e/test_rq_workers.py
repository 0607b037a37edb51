"""Real RQ workers, a real dispatcher, real Redis and PostgreSQL: an ASHA promotion study runs
to completion, and paused trials resume on other worker processes from their checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.e2e.servers import api_servers
from tests.helpers import API
from tuneyard.store.models import Attempt, Report, Trial

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]


def test_three_workers_finish_an_asha_study_resuming_across_workers(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    queue = f"e2e-{uuid.uuid4().hex[:8]}"
    spec = {
        "name": "rq-e2e",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "sampler": {"type": "random", "seed": 2},
        "scheduler": {"type": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        "limits": {"max_trials": 18, "max_concurrent": 3},
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
        logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("scheduler", "worker")}  # noqa: SIM115
        procs = [
            subprocess.Popen(
                [*py, "dispatcher"], env=env, stdout=logs["scheduler"], stderr=subprocess.STDOUT
            ),
            subprocess.Popen(
                [
                    *py,
                    "worker",
                    "--queue",
                    queue,
                    "--slots",
                    "3",
                    "--data-dir",
                    str(tmp_path),
                    "--path",
                    str(ROOT),
                    "--allow",
                    "tests.e2e.objectives:*",
                    "--insecure-no-auth",
                ],
                env=env,
                stdout=logs["worker"],
                stderr=subprocess.STDOUT,
            ),
        ]
        try:
            sid = httpx.post(f"{url}{API}/studies", json=spec).json()["id"]
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                state = httpx.get(f"{url}{API}/studies/{sid}").json()["state"]
                if state != "running":
                    break
                time.sleep(0.5)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            r.delete(f"rq:queue:{queue}")
        assert state == "completed", (tmp_path / "worker.log").read_text()[-3000:]

    engine = create_engine(postgres_url)
    with Session(engine) as s:
        trials = s.scalars(select(Trial).where(Trial.study_id == sid)).all()
        assert len(trials) == 18
        assert {t.state for t in trials} <= {"completed", "stopped"}, [
            (t.number, t.state, t.error) for t in trials
        ]
        workers_of: dict[int, list[str | None]] = defaultdict(list)
        for a in s.scalars(
            select(Attempt).join(Trial).where(Trial.study_id == sid).order_by(Attempt.number)
        ):
            workers_of[a.trial_id].append(a.worker)
        resumed = [tid for tid, ws in workers_of.items() if len(ws) > 1]
        assert len(resumed) >= 4, f"few trials paused and resumed: {dict(workers_of)}"
        moved = [tid for tid in resumed if len(set(workers_of[tid])) > 1]
        assert moved, f"every resume happened on the same worker: {dict(workers_of)}"
        for t in trials:
            steps = sorted(s.scalars(select(Report.step).where(Report.trial_id == t.id)).all())
            assert steps == [float(i) for i in range(1, len(steps) + 1)], (t.number, steps)
    engine.dispose()
