"""Faults are normal events: real API server, dispatcher and RQ worker processes on real
PostgreSQL and Redis. Each test ends with every trial in a final state and no report lost."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.stack import Deployment, assert_no_report_lost, running, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]
FINAL = {"completed", "stopped", "failed"}


def asha_spec(queue: str, entrypoint: str = "tests.e2e.objectives:slow_curve", **kw: Any) -> dict:  # type: ignore[type-arg]
    spec = {
        "name": "faults",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "sampler": {"type": "random", "seed": 5},
        "scheduler": {"type": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        "limits": {"max_trials": 9, "max_concurrent": 3},
        "execution": {"entrypoint": entrypoint, "queue": queue, "max_retries": 2},
    }
    spec.update(kw)
    return spec


def running_trial_with_reports(d: Deployment, sid: int, min_reports: int = 1) -> dict | None:  # type: ignore[type-arg]
    for t in d.http.get(f"/api/v1/studies/{sid}/trials?state=running").json()["items"]:
        full = d.trial(t["id"])
        if len(full["reports"]) >= min_reports and full["worker"]:
            return full
    return None


def check_all_final(d: Deployment, sid: int) -> list[dict[str, Any]]:
    trials = d.trials(sid)
    assert {t["state"] for t in trials} <= FINAL, [(t["number"], t["state"]) for t in trials]
    for t in trials:
        assert_no_report_lost(t)
    return trials


def test_a_sigkilled_worker_s_trial_resumes_elsewhere_within_two_leases(
    deployment: Deployment,
) -> None:
    d = deployment
    queue = f"kill-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 3)
    # Long jobs (12 epochs of 0.25 s), so the kill lands mid-trial, not between jobs.
    spec = asha_spec(queue, scheduler={"type": "fifo", "max_resource": 12})
    spec["limits"] = {"max_trials": 6, "max_concurrent": 3}
    sid = d.create(spec)
    busy = wait_for(lambda: running_trial_with_reports(d, sid, 2), 60, "a trial running")
    workers = {w["name"]: w for w in d.http.get("/api/v1/workers").json()}
    victim = workers[busy["worker"]]
    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.time()

    def resumed() -> dict | None:  # type: ignore[type-arg]
        # The trial the worker was running when it died, once it runs again.
        for t in d.trials(sid):
            log = t["attempt_log"]
            for before, after in itertools.pairwise(log):
                if before["worker"] == victim["name"] and before["state"] == "failed":
                    return {"trial": t, "lost": before, "next": after}
        return None

    found = wait_for(resumed, 6 * d.lease, "the dead worker's trial running again")
    # Its pool saw the slot die and handed the trial back (else the lease would have run out).
    assert "the worker process running it was killed by SIGKILL" in found["lost"]["error"]
    started = datetime.fromisoformat(found["next"]["started_at"]).timestamp()
    assert started - killed_at <= 2 * d.lease, f"resumed {started - killed_at:.1f} s after"
    d.wait_finished(sid)
    trials = check_all_final(d, sid)
    assert all(t["state"] != "failed" for t in trials)
    # The pool replaced the dead slot process, which registered again with its new pid.
    again = {w["name"]: w for w in d.http.get("/api/v1/workers").json()}
    assert again[victim["name"]]["pid"] != victim["pid"]


def test_redis_flushed_mid_study_the_dispatcher_refills_the_queue(
    deployment: Deployment, redis_url: str
) -> None:
    d = deployment
    queue = f"flush-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 3)
    sid = d.create(asha_spec(queue))
    wait_for(lambda: running_trial_with_reports(d, sid), 60, "a trial running")
    redis.Redis.from_url(redis_url).flushdb()
    assert d.wait_finished(sid)["state"] == "completed"
    check_all_final(d, sid)


def test_the_api_server_restarted_mid_study_workers_carry_on(deployment: Deployment) -> None:
    d = deployment
    queue = f"restart-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 3)
    sid = d.create(asha_spec(queue))
    wait_for(lambda: running_trial_with_reports(d, sid, 2), 60, "a trial running")
    d.stop_api()
    time.sleep(2.0)
    d.start_api()
    assert d.wait_finished(sid)["state"] == "completed"
    trials = check_all_final(d, sid)
    assert all(t["state"] != "failed" for t in trials), [t["error"] for t in trials]


def test_objectives_that_raise_exit_hang_or_report_nan_fail_with_the_reason(
    deployment: Deployment,
) -> None:
    d = deployment
    queue = f"bad-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 3)
    fifo = {"type": "fifo", "max_resource": 3}
    limits = {"max_trials": 2, "max_concurrent": 2}

    def spec(name: str, **execution: Any) -> dict:  # type: ignore[type-arg]
        return asha_spec(
            queue,
            name=name,
            scheduler=fifo,
            limits=limits,
            execution={"queue": queue, "max_retries": 1, **execution},
        )

    exit_code = [sys.executable, "-c", "print('cannot open the dataset'); raise SystemExit(3)"]
    studies = {
        "raises": d.create(spec("raises", entrypoint="tests.e2e.objectives:raises")),
        "exits": d.create(spec("exits", command=exit_code)),
        "hangs": d.create(spec("hangs", entrypoint="tests.e2e.objectives:hangs", timeout=2)),
        "nan": d.create(spec("nan", entrypoint="tests.e2e.objectives:reports_nan")),
    }
    for sid in studies.values():
        # Every trial failed: the study says so (never a "completed" with no result).
        st = d.wait_finished(sid)
        assert st["state"] == "failed", st
        assert st["reason"].startswith("no trial completed: all 2 trials failed")
    results = {name: check_all_final(d, sid) for name, sid in studies.items()}
    for name, trials in results.items():
        assert [t["state"] for t in trials] == ["failed", "failed"], name
    for t in results["raises"]:
        assert "ValueError: bad batch in trial" in t["error"]
        assert [a["state"] for a in t["attempt_log"]] == ["failed", "failed"], "one retry"
    for t in results["exits"]:
        assert "the command exited with code 3" in t["error"]
        assert "cannot open the dataset" in t["error"]
        assert "cannot open the dataset" in d.http.get(f"/api/v1/trials/{t['id']}/log").text
    for t in results["hangs"]:
        assert t["error"].startswith("timed out: the objective ran past execution.timeout (2 s)")
        assert "waiting for a lock that never comes" in t["log_tail"]
        assert len(t["attempt_log"]) == 2
    for t in results["nan"]:
        assert "metric 'loss' is NaN at step 2" in t["error"]
        assert [r["step"] for r in t["reports"]] == [1.0, 2.0]


def cli_spec(queue: str, epoch_seconds: float = 0.25) -> dict[str, Any]:
    command = [
        sys.executable,
        "examples/train_cli.py",
        "--lr={lr}",
        "--width={width}",
        f"--epoch-seconds={epoch_seconds}",
    ]
    return {
        "name": "cli",
        "metric": "val_loss",
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 1, "log": True},
            "width": {"type": "categorical", "choices": [16, 64]},
        },
        "sampler": {"type": "random", "seed": 5},
        "scheduler": {"type": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3},
        "limits": {"max_trials": 9, "max_concurrent": 3},
        "execution": {"command": command, "queue": queue, "max_retries": 0},
    }


@pytest.mark.parametrize("kind", ["python", "command"])
def test_sigterm_hands_the_running_trial_back_and_another_worker_resumes_it(
    deployment: Deployment, kind: str
) -> None:
    d = deployment
    queue = f"term-{uuid.uuid4().hex[:6]}"
    leaving = d.start_pool("leaving", queue, 1, "--name", "leaving")
    spec = asha_spec(queue) if kind == "python" else cli_spec(queue)
    # Long jobs without rungs, so the signal lands mid-job rather than at a pause.
    spec["scheduler"] = {"type": "fifo", "max_resource": 16}
    spec["limits"] = {"max_trials": 4, "max_concurrent": 3}
    spec["execution"]["max_retries"] = 0  # a hand-back must not need a retry
    sid = d.create(spec)

    def busy() -> dict | None:  # type: ignore[type-arg]
        t = running_trial_with_reports(d, sid, 2)
        return t if t and t["worker"] == "leaving/slot-0" else None

    trial = wait_for(busy, 60, "the leaving worker running a trial")
    d.start_pool("staying", queue, 2, "--name", "staying")
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=60) == 0

    t = d.trial(trial["id"])
    first = t["attempt_log"][0]
    assert first["worker"] == "leaving/slot-0" and first["state"] == "released"
    assert t["state"] in ("queued", "running", "paused", "completed", "stopped")
    d.wait_finished(sid)
    trials = check_all_final(d, sid)
    assert all(x["state"] != "failed" for x in trials), [x["error"] for x in trials]
    t = d.trial(trial["id"])
    second = t["attempt_log"][1]
    assert second["worker"].startswith("staying/")
    assert 2 <= second["resource_from"] < 16, "resumed from the hand-back's checkpoint"
    # The log shows every epoch once: the resume started where the hand-back stopped.
    log = d.http.get(f"/api/v1/trials/{t['id']}/log").text
    epochs = [line.split(":")[0] for line in log.splitlines() if line.startswith("epoch ")]
    assert epochs == [f"epoch {i}" for i in range(1, len(epochs) + 1)], log
    assert "----- attempt 2 -----" in log
    stopped = {w["name"]: w for w in d.http.get("/api/v1/workers?include_stopped=true").json()}
    assert stopped["leaving/slot-0"]["state"] == "stopped"


def test_a_command_line_study_pauses_and_resumes_across_workers(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    # What this checks is pause and resume, not leases: a lease of 20 s rather than the
    # fixture's 5, which a stalled beat on a loaded 2-core machine once outlasted (the trial
    # was reaped and, with no retries, failed). The dead-worker tests above check the leases.
    with running(postgres_url, redis_url, tmp_path, lease=20.0) as d:
        _command_line_study_pauses_and_resumes(d)


def _command_line_study_pauses_and_resumes(d: Deployment) -> None:
    queue = f"cli-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 3)
    spec = cli_spec(queue)
    spec["execution"]["command"] = [sys.executable, "tests/e2e/cli_objective.py", "{lr}"]
    spec["limits"] = {"max_trials": 12, "max_concurrent": 3}
    sid = d.create(spec)
    assert d.wait_finished(sid)["state"] == "completed"
    trials = check_all_final(d, sid)
    assert all(t["state"] != "failed" for t in trials), [t["error"] for t in trials]
    resumed = [t for t in trials if len(t["attempt_log"]) > 1]
    assert resumed, "ASHA promoted no paused trial"
    for t in resumed:
        # Each attempt started where the previous one paused, from its checkpoint (the
        # script exits with an error if its checkpoint disagrees with resource_from).
        attempts = t["attempt_log"]
        for before, after in itertools.pairwise(attempts):
            assert after["resource_from"] == before["resource_to"]
        log = d.http.get(f"/api/v1/trials/{t['id']}/log").text
        epochs = [line.split(":")[0] for line in log.splitlines() if line.startswith("epoch ")]
        assert epochs == [f"epoch {i}" for i in range(1, len(epochs) + 1)], log
        assert t["checkpoint"].startswith("api:"), "uploaded to the API server"


def test_redis_down_the_api_answers_and_the_dispatcher_catches_up(
    postgres_url: str, tmp_path: Path
) -> None:
    """Redis killed mid-study and started again empty a few seconds later: meanwhile the API
    creates, lists and reports as usual; afterwards the dispatcher refills the queues and
    every study finishes."""
    from tests.e2e.servers import free_port
    from tuneyard.embedded import redis_executable

    port = free_port()
    cmd = [redis_executable(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(tmp_path)]

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        conn = redis.Redis(port=port)
        wait_for(lambda: _pings(conn), 10, "redis up")
        conn.close()
        return proc

    server = start_redis()
    d = Deployment(postgres_url, f"redis://127.0.0.1:{port}/0", tmp_path, lease=10.0)
    try:
        d.start_api()
        d.start_dispatcher()
        queue = f"down-{uuid.uuid4().hex[:6]}"
        d.start_pool("pool", queue, 3)
        spec = asha_spec(queue, scheduler={"type": "fifo", "max_resource": 12})
        spec["limits"] = {"max_trials": 4, "max_concurrent": 2}
        sid = d.create(spec)
        busy = wait_for(lambda: running_trial_with_reports(d, sid), 60, "a trial running")
        server.kill()
        server.wait()
        # The API goes on without Redis: it holds only work in flight.
        other = d.create(asha_spec(queue, name="while-redis-is-down"))
        assert d.http.get(f"/api/v1/studies/{other}").status_code == 200
        ready = d.http.get("/readyz").json()
        assert ready["status"] == "ready" and ready["redis"].startswith("unreachable")
        assert d.http.get("/metrics").status_code == 200
        before = len(busy["reports"])
        wait_for(
            lambda: len(d.trial(busy["id"])["reports"]) > before + 2, 30, "reports while it is down"
        )
        time.sleep(2)
        server = start_redis()
        for study in (sid, other):
            assert d.wait_finished(study)["state"] == "completed"
            check_all_final(d, study)
    finally:
        d.close()
        server.kill()
        server.wait()


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False
