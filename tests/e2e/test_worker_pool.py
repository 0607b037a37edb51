"""`tuneyard worker` keeps its slots alive: a slot process killed with SIGKILL is replaced, and
SIGTERM stops the whole pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


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


def wait_for(cond, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_a_killed_slot_is_restarted_and_sigterm_stops_the_pool(
    redis_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "TUNEYARD_REDIS_URL": redis_url, "TUNEYARD_API_URL": "http://127.0.0.1:9"}
    queue = f"pool-{uuid.uuid4().hex[:8]}"
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuneyard.cli",
                "worker",
                "--queue",
                queue,
                "--slots",
                "2",
                "--data-dir",
                str(tmp_path),
                "--insecure-no-auth",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        first = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(children(proc.pid)))
        victim = sorted(first)[0]
        os.kill(victim, signal.SIGKILL)
        after = wait_for(
            lambda: (lambda c: c if len(c) == 2 and victim not in c else None)(children(proc.pid))
        )
        assert len(after - first) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0 or proc.returncode is not None
        assert not any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in after
        )
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "starting it again" in (tmp_path / "worker.log").read_text()
