"""Workers submitted with `tuneyard slurm submit` to a real single-node Slurm cluster
(tests/e2e/slurm_cluster.py) run a study to the end; an array task cancelled mid-trial hands
its trial back, and the other task resumes it from its checkpoint.

Without Slurm's and munge's binaries (or root) the test is skipped, saying why; under
CI=true it fails instead (.ci/run installs them)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI
from tests.e2e.slurm_cluster import SlurmCluster, missing
from tests.e2e.stack import PY, ROOT, Deployment, assert_no_report_lost, wait_for
from tuneyard.service.tokens import Scope

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def slurm(deployment: Deployment) -> Iterator[SlurmCluster]:
    """Started after the deployment and stopped before it: the jobs' workers sign off from a
    live API."""
    problem = missing()
    if problem:
        if IN_CI:
            pytest.fail(f"Slurm is required under CI=true: {problem}", pytrace=False)
        pytest.skip(f"no Slurm here: {problem}")
    cluster = SlurmCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _running_with_reports(d: Deployment, sid: int, prefix: str) -> dict[str, Any] | None:
    for t in d.http.get(f"/api/v1/studies/{sid}/trials?state=running").json()["items"]:
        full = d.trial(t["id"])
        if len(full["reports"]) >= 2 and (full["worker"] or "").startswith(prefix):
            return full
    return None


def test_a_slurm_array_runs_a_study_and_a_cancelled_task_hands_its_trial_to_the_other(
    deployment: Deployment, slurm: SlurmCluster, tmp_path: Path
) -> None:
    d = deployment
    queue = f"slurm-{uuid.uuid4().hex[:6]}"
    token_file = tmp_path / "worker token"
    token_file.write_text(d.tokens[Scope.WORKER] + "\n")
    token_file.chmod(0o600)
    # The job inherits the submitting environment (sbatch's default): the script itself
    # drops the token and the database URL from it.
    env = {**d.env, **slurm.env, "PYTHONPATH": str(ROOT)}
    script = tmp_path / "job dir" / "workers.sbatch"
    submitted = subprocess.run(
        [
            *PY,
            "slurm",
            "submit",
            "--api",
            d.url,
            "--token-file",
            str(token_file),
            "--tasks",
            "2",
            "--gpus-per-task",
            "0",
            "--queue",
            queue,
            "--time",
            "10",
            "--grace",
            "20",
            "--allow",
            "tests.e2e.*",
            "--path",
            str(ROOT),
            "--data-dir",
            str(tmp_path / "worker data"),
            "--output",
            str(tmp_path / "job dir" / "task-%a.log"),
            "--script",
            str(script),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    assert job.isdigit(), submitted.stdout
    text = script.read_text()
    assert d.tokens[Scope.WORKER] not in text and str(token_file) in text
    assert os.stat(script).st_mode & 0o077 == 0

    def logs() -> str:
        tasks = sorted((tmp_path / "job dir").glob("task-*.log"))
        return "\n".join(f"== {f.name} ==\n{f.read_text(errors='replace')[-3000:]}" for f in tasks)

    names = {f"slurm-{job}_{i}/slot-0" for i in (0, 1)}

    def registered() -> bool:
        live = {w["name"] for w in d.http.get("/api/v1/workers").json()}
        return names <= live

    try:
        wait_for(registered, 60, "both array tasks' workers registered")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{slurm.jobs()}\n{logs()}\n{slurm.logs()}") from None

    spec = {
        "name": "slurm",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "sampler": {"type": "random", "seed": 5},
        # Long jobs without rungs, so the cancel lands mid-job rather than at a pause.
        "scheduler": {"type": "fifo", "max_resource": 16},
        "limits": {"max_trials": 4, "max_concurrent": 2},
        "execution": {
            "entrypoint": "tests.e2e.objectives:slow_curve",
            "queue": queue,
            "max_retries": 0,  # a hand-back must not need a retry
        },
    }
    sid = d.create(spec)
    trial = wait_for(
        lambda: _running_with_reports(d, sid, f"slurm-{job}_"), 60, "a trial with reports"
    )
    victim = trial["worker"].split("/")[0]
    task = victim.rsplit("_", 1)[1]
    other = f"slurm-{job}_{1 - int(task)}/slot-0"
    slurm.run("scancel", f"{job}_{task}")  # SIGTERM to the task's processes

    try:
        d.wait_finished(sid, timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs()}") from None
    trials = d.trials(sid)
    assert {t["state"] for t in trials} == {"completed"}, [(t["state"], t["error"]) for t in trials]
    for t in trials:
        assert_no_report_lost(t)
    t = d.trial(trial["id"])
    first, second = t["attempt_log"][:2]
    assert first["worker"] == f"{victim}/slot-0" and first["state"] == "released", first
    assert second["worker"] == other, second
    # From the hand-back's checkpoint, mid-way (the objective fails a resume whose
    # checkpoint disagrees with resource_from).
    assert 0 < second["resource_from"] < 16, "resumed from the hand-back's checkpoint"
    # The cancelled task's worker signed off; its job is gone, the other one still runs.
    workers = {w["name"]: w for w in d.http.get("/api/v1/workers?include_stopped=true").json()}
    assert workers[f"{victim}/slot-0"]["state"] == "stopped"
    wait_for(lambda: f"{job}_{task}" not in slurm.jobs(), 60, "the cancelled task gone")
    assert f"{job}_{1 - int(task)}" in slurm.jobs()
    assert workers[other]["state"] != "stopped"
