"""A worker runs only what its operator allowed: it takes no trial of a study outside its
allowlist (nothing of it is imported or started, no trial is failed), says so once per study,
and goes on serving; a worker that allows the study runs its trials."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Deployment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


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


def test_a_study_outside_the_allowlist_is_left_to_a_worker_that_allows_it(
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
    log = tmp_path / "pool.log"

    def said(sid: int) -> list[str]:
        return [ln for ln in log.read_text().splitlines() if f"study {sid} (" in ln]

    for sid in refused.values():
        wait_for(lambda sid=sid: said(sid), 60, f"the refusal of study {sid} logged")
    # The dispatcher goes on sending the studies' jobs, and the pool ends each one at once,
    # taking none of their trials.
    from redis import Redis
    from rq.registry import FinishedJobRegistry

    finished = FinishedJobRegistry(queue, connection=Redis.from_url(d.env["TUNEYARD_REDIS_URL"]))
    wait_for(lambda: finished.count >= 8, 60, "refused jobs ended")
    for what, sid in refused.items():
        study = d.study(sid)
        assert study["state"] == "running", what
        assert d.trials(sid) == [], f"{what}: no trial taken, none failed"
        (line,) = said(sid)  # once per study, not once per job or per slot
        assert "not taking its jobs, they are left to other workers" in line
    assert "'tests.e2e.forbidden:run'" in said(refused["entrypoint"])[0]
    assert "'tests.e2e.objectives:*'" in said(refused["entrypoint"])[0]
    assert "executable 'sh'" in said(refused["command"])[0]
    # Nothing of the refused jobs ran: the module was never imported, the shell never started.
    assert not (tmp_path / "pool" / "forbidden-imported").exists()
    assert not (tmp_path / "command-ran").exists()

    # The same worker processes go on serving what they allow.
    ok = d.create(spec(queue, "allowed", entrypoint="tests.e2e.objectives:curve"))
    assert d.wait_finished(ok)["state"] == "completed"
    assert {t["state"] for t in d.trials(ok)} == {"completed"}
    assert pool.poll() is None
    assert "starting it again" not in log.read_text()

    # A worker that allows the refused entrypoint runs its trials (the module is harmless: it
    # notes that it was imported).
    d.start_pool("other", queue, 1, allow=("tests.e2e.*",), allow_command=())
    done = d.wait_finished(refused["entrypoint"])
    assert done["state"] == "completed", done["reason"]
    assert {t["worker"].split("/")[0] for t in d.trials(refused["entrypoint"])} != set()
