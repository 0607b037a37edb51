"""A worker frozen past its lease and then woken (a zombie) is not believed: real API servers
(two, on one database: the zombie talks to one, the live worker to the other), the dispatcher
and RQ worker processes on PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.servers import api_servers
from tests.e2e.stack import Deployment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]
LEASE = 3.0


def test_a_zombie_attempt_is_refused_and_the_live_attempt_ends_well(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    record = tmp_path / "reports.jsonl"
    d = Deployment(postgres_url, redis_url, tmp_path, lease=LEASE)
    d.env["TUNEYARD_TEST_RECORD"] = str(record)
    frozen: list[int] = []
    stack = ExitStack()
    try:
        d.start_api()
        d.start_dispatcher()
        queue = f"zombie-{uuid.uuid4().hex[:6]}"
        zombie_pool = d.start_pool("zombie", queue, 1)
        spec = {
            "name": "zombie",
            "metric": "loss",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "sampler": {"type": "random", "seed": 1},
            "scheduler": {"type": "fifo", "min_resource": 1, "max_resource": 12},
            "limits": {"max_trials": 1, "max_concurrent": 1},
            # A timeout shorter than the freeze: the zombie's watchdog fires as it wakes
            # and tries to fail the trial.
            "execution": {
                "entrypoint": "tests.e2e.objectives:recorded_curve",
                "queue": queue,
                "max_retries": 1,
                "timeout": 8,
            },
        }
        sid = d.create(spec)

        def zombie_running() -> dict | None:  # type: ignore[type-arg]
            for t in d.trials(sid):
                if t["state"] == "running" and len(t["reports"]) >= 2:
                    return t
            return None

        try:
            trial = wait_for(zombie_running, 60, "the first attempt reporting")
        except AssertionError:
            raise AssertionError(d.logs()) from None
        tid = trial["id"]
        slot = wait_for(
            lambda: {w["name"]: w for w in d.http.get("/api/v1/workers").json()}.get(
                trial["worker"]
            ),
            10,
            "the first attempt's worker registered",
        )
        frozen = [zombie_pool.pid, slot["pid"]]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        stopped_at = time.time()
        # The trial runs again on a worker of another machine, through another API server.
        server_env = {k: v for k, v in d.env.items() if k.startswith("TUNEYARD_")}
        other = stack.enter_context(api_servers(postgres_url, 1, tmp_path, **server_env))[0]
        d.env["TUNEYARD_API_URL"] = other
        d.start_pool("live", queue, 1)

        def live_ahead() -> dict | None:  # type: ignore[type-arg]
            t = d.trial(tid)
            mine = [r for r in t["reports"] if r["attempt"] == 2]
            return t if t["attempts"] == 2 and len(mine) >= 4 else None

        wait_for(live_ahead, 10 * LEASE, "the trial running again elsewhere")
        # Frozen past the study's timeout as well, then woken.
        time.sleep(max(0.0, stopped_at + 9 - time.time()))
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        woken_at = time.time()
        frozen = []
        study = d.wait_finished(sid, timeout=120)
        time.sleep(2 * LEASE)  # time for every late call of the zombie to be answered

        t = d.trial(tid)
        assert study["state"] == "completed", study
        assert t["state"] == "completed" and t["error"] is None, (t["state"], t["error"])
        first, second = t["attempt_log"]
        assert first["state"] == "failed" and "lease expired" in first["error"], first
        assert second["state"] == "completed", second

        lines = [json.loads(x) for x in record.read_text().splitlines()]
        live = [x for x in lines if x["attempt"] == 2]
        late = [x for x in lines if x["attempt"] == 1 and x["at"] >= woken_at]
        # The stored curve is the live attempt's, whole, and every acknowledged value of it
        # is the stored one.
        stored = {r["step"]: (r["attempt"], r["value"]) for r in t["reports"]}
        assert sorted(stored) == [float(s) for s in range(1, 13)], sorted(stored)
        assert {a for a, _ in stored.values()} == {2}, stored
        assert live and all(not x["stale"] for x in live)
        for x in live:
            assert stored[x["step"]] == (2, x["loss"]), (x, stored[x["step"]])
        # The zombie, once woken, was refused: its report (if it got to one) answered stale.
        assert all(x["stale"] and x["decision"] == "stop" for x in late), late
        logs = d.logs(tail=200_000)
        assert "no longer the trial's live attempt" in logs, logs[-3000:]
        assert f"trial {tid}: fail refused" in logs or late, logs[-3000:]
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        d.close()
        stack.close()
