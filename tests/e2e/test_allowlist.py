"""A worker runs only what its operator allowed: a job outside its allowlist fails its trial
with the reason, nothing of it is imported or started, and the worker goes on serving."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Deployment

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(postgres_url, redis_url, tmp_path, lease=5.0)
    try:
        d.start_api()
        d.start_dispatcher()
        yield d
    finally:
        d.close()


def spec(queue: str, name: str, **execution: Any) -> dict[str, Any]:
    return {
        "name": name,
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "sampler": {"type": "random", "seed": 1},
        "scheduler": {"type": "fifo", "max_resource": 2},
        "limits": {"max_trials": 2, "max_concurrent": 2},
        "execution": {"queue": queue, "max_retries": 1, **execution},
    }


def test_a_job_outside_the_allowlist_fails_its_trial_and_the_worker_serves_on(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    queue = f"allow-{uuid.uuid4().hex[:6]}"
    pool = d.start_pool(
        "pool",
        queue,
        2,
        allow=("tests.e2e.objectives:*",),
        allow_command=(sys.executable,),
    )
    refused = {
        "entrypoint": d.create(spec(queue, "forbidden", entrypoint="tests.e2e.forbidden:run")),
        "command": d.create(
            spec(queue, "shell", command=["sh", "-c", f"touch {tmp_path}/command-ran"])
        ),
    }
    for sid in refused.values():
        assert d.wait_finished(sid)["state"] == "failed"  # every trial failed
    for what, sid in refused.items():
        trials = d.trials(sid)
        assert [t["state"] for t in trials] == ["failed", "failed"], what
        for t in trials:
            assert t["error"].startswith("NotAllowed: this worker does not run"), t["error"]
            assert len(t["attempt_log"]) == 2, "each retry refused as well"
            assert t["reports"] == []
    entry_error = d.trials(refused["entrypoint"])[0]["error"]
    assert "'tests.e2e.forbidden:run'" in entry_error
    assert "'tests.e2e.objectives:*'" in entry_error
    assert "executable 'sh'" in d.trials(refused["command"])[0]["error"]
    # Nothing of the refused jobs ran: the module was never imported, the shell never started.
    assert not (tmp_path / "pool" / "forbidden-imported").exists()
    assert not (tmp_path / "command-ran").exists()

    # The same worker processes go on serving what they allow.
    ok = d.create(spec(queue, "allowed", entrypoint="tests.e2e.objectives:curve"))
    assert d.wait_finished(ok)["state"] == "completed"
    assert {t["state"] for t in d.trials(ok)} == {"completed"}
    assert pool.poll() is None
    assert "starting it again" not in (tmp_path / "pool.log").read_text()
