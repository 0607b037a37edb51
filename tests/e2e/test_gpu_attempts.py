"""A real `tuneyard worker --gpus 0,1` (one slot per GPU): each attempt records the GPU of the
slot that ran it and its wall time, the study counts GPU-hours, and until the pool starts the
study is flagged as waiting on a queue no live worker serves."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.e2e.stack import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


def test_gpu_slots_record_their_gpu_on_each_attempt(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    queue = f"gpu-{uuid.uuid4().hex[:8]}"
    d = Deployment(postgres_url, redis_url, tmp_path, lease=5.0)
    try:
        d.start_api()
        d.start_dispatcher()
        sid = d.create(
            {
                "name": "gpu-attempts",
                "metric": "loss",
                "space": {"x": {"type": "float", "low": 0, "high": 1}},
                "sampler": {"type": "random", "seed": 1},
                "scheduler": {"type": "fifo", "max_resource": 2},
                "limits": {"max_trials": 4, "max_concurrent": 2, "max_gpu_hours": 100},
                "execution": {"entrypoint": "tests.e2e.objectives:curve", "queue": queue},
            }
        )
        assert d.study(sid)["queue_warning"] == f"no live worker serves queue {queue!r}"
        # No nvidia-smi needed: GPUs named on the command line are taken as they are.
        d.start_pool("gpus", queue, 1, "--gpus", "0,1")
        study = d.wait_finished(sid)
        assert study["state"] == "completed", d.logs()
        attempts = [a for t in d.trials(sid) for a in t["attempt_log"]]
        assert len(attempts) >= 4
        assert {a["gpus"][0]["index"] for a in attempts} <= {"0", "1"}
        assert all(len(a["gpus"]) == 1 and a["wall_seconds"] > 0 for a in attempts)
        usage = study["usage"]
        # One GPU per attempt: GPU-hours and worker-hours are the same sum.
        assert usage["gpu_hours"]["used"] == pytest.approx(usage["worker_hours"], rel=1e-6)
        assert usage["gpu_hours"]["used"] == pytest.approx(
            sum(a["wall_seconds"] for a in attempts) / 3600, rel=1e-6
        )
        assert usage["gpu_hours"]["limit"] == 100
        assert usage["spent"] == "all 4 trials have started"
        assert study["queue_warning"] is None
        workers = d.http.get("/api/v1/workers").json()
        assert sorted(w["gpus"][0]["index"] for w in workers if w["queue"] == queue) == ["0", "1"]
    finally:
        d.close()
