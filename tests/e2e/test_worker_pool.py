"""`tuneyard worker` keeps its slots alive and takes them with it: a slot process killed with
SIGKILL is replaced and its trial runs again at once, SIGTERM stops the whole pool, a pool
killed with SIGKILL leaves no slot process behind, and a worker started with a bad token
exits at once with one line that names the token setting."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.stack import PY, ROOT, Deployment, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]
# Long enough that only a hand-back, not the lease, can explain a quick retry.
LEASE = 60.0


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    with running(postgres_url, redis_url, tmp_path, lease=LEASE) as d:
        yield d


def children(pid: int) -> set[int]:
    # Slot processes, not multiprocessing's resource tracker: they run _slot_main.
    out = set()
    for c in psutil.Process(pid).children():
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(
                c.cmdline()
            ):
                out.add(c.pid)
        except psutil.Error:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def slots_of(proc: subprocess.Popen[bytes], n: int) -> set[int]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (lambda c: c if len(c) == n else None)(children(proc.pid)), 60, f"{n} slots"
    )


def spec(queue: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": "pool",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "sampler": {"type": "random", "seed": 3},
        "scheduler": {"type": "fifo", "max_resource": 12},
        "limits": {"max_trials": 2, "max_concurrent": 1},
        "execution": {
            "entrypoint": "tests.e2e.objectives:slow_curve",
            "queue": queue,
            "max_retries": 2,
        },
        **kw,
    }


def test_a_killed_slot_is_restarted_and_sigterm_stops_the_pool(
    deployment: Deployment, tmp_path: Path
) -> None:
    proc = deployment.start_pool("pool", f"pool-{uuid.uuid4().hex[:8]}", 2)
    try:
        first = slots_of(proc, 2)
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        after = wait_for(
            lambda: (lambda c: c if len(c) == 2 and victim not in c else None)(children(proc.pid)),
            30,
            "the slot replaced",
        )
        assert len(after - first) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
        assert not any(alive(p) for p in after)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "starting it again" in (tmp_path / "pool.log").read_text()


def test_a_slot_killed_mid_trial_hands_its_trial_back_at_once(deployment: Deployment) -> None:
    d = deployment
    queue = f"slot-{uuid.uuid4().hex[:8]}"
    d.start_pool("pool", queue, 1)
    sid = d.create(spec(queue))

    def busy() -> dict[str, Any] | None:
        for t in d.http.get(f"/api/v1/studies/{sid}/trials?state=running").json()["items"]:
            full = d.trial(t["id"])
            if full["reports"]:
                return full
        return None

    trial = wait_for(busy, 60, "a trial running")
    workers = {w["name"]: w for w in d.http.get("/api/v1/workers").json()}
    victim = workers[trial["worker"]]
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.time()

    def again() -> tuple[dict[str, Any], dict[str, Any]] | None:
        log = d.trial(trial["id"])["attempt_log"]
        for before, after in itertools.pairwise(log):
            if before["state"] == "failed" and after["started_at"]:
                return before, after
        return None

    # Well within the lease: only the pool's hand-back can have started it again.
    lost, retry = wait_for(again, LEASE / 3, "the trial running again")
    assert "the worker process running it was killed by SIGKILL" in lost["error"]
    assert datetime.fromisoformat(retry["started_at"]).timestamp() >= killed_at - 1
    assert d.wait_finished(sid, timeout=120)["state"] == "completed"
    # The replacement slot took the dead one's name back (it was signed off), not a suffix.
    names = {w["name"] for w in d.http.get("/api/v1/workers").json()}
    assert victim["name"] in names and not any(n.endswith("-2") for n in names)


def test_sigkill_of_the_worker_leaves_no_slot_process(deployment: Deployment) -> None:
    proc = deployment.start_pool("pool", f"orphan-{uuid.uuid4().hex[:8]}", 2)
    slots = slots_of(proc, 2)
    proc.kill()
    proc.wait(timeout=10)
    wait_for(lambda: not any(alive(p) for p in slots), 15, "the slot processes gone")


def test_a_worker_with_a_bad_token_exits_at_once_with_one_line(
    deployment: Deployment, tmp_path: Path
) -> None:
    env = {**deployment.env, "TUNEYARD_TOKEN": "ty_" + "x" * 43, "PYTHONPATH": str(ROOT)}
    cmd = [*PY, "worker", "--queue", "q", "--slots", "1", "--allow", "examples.*"]
    cmd += ["--data-dir", str(tmp_path / "w")]
    # Within 10 s, or run() raises: a refused token is final at once.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=10, cwd=ROOT)
    assert done.returncode == 2
    (line,) = (done.stdout + done.stderr).strip().splitlines()
    assert line.startswith(
        f"tuneyard worker: --token / TUNEYARD_TOKEN: the API at {deployment.url} refused the "
        "token (401"
    ), line
