"""Checkpoints worth keeping, in real processes (API server, dispatcher, two worker pools
as on two machines, PostgreSQL, Redis): a SIGKILLed worker's trial resumes on the other
machine from the last epoch it saved, and a completed trial's model downloads and loads."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import PY, ROOT, Deployment, assert_no_report_lost, running, wait_for
from tuneyard.service.tokens import Scope

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def deployment(postgres_url: str, redis_url: str, tmp_path: Path) -> Any:
    sweep = {"TUNEYARD_CHECKPOINT_SWEEP_EVERY": "1"}
    with running(postgres_url, redis_url, tmp_path, lease=4.0, env=sweep) as d:
        yield d


def spec(queue: str, entrypoint: str, max_resource: int, **limits: int) -> dict[str, Any]:
    return {
        "name": "keep",
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "sampler": {"type": "random", "seed": 11},
        "scheduler": {"type": "fifo", "max_resource": max_resource},
        "limits": {"max_trials": 1, "max_concurrent": 1, **limits},
        "execution": {
            "entrypoint": entrypoint,
            "queue": queue,
            "max_retries": 2,
            "checkpoint_every": 1,
        },
    }


def test_a_sigkilled_worker_s_trial_resumes_on_another_from_its_last_saved_epoch(
    deployment: Deployment,
) -> None:
    d = deployment
    queue = f"every-{uuid.uuid4().hex[:6]}"
    machine_a = d.start_pool("machine-a", queue, 1, "--name", "machine-a")
    sid = d.create(spec(queue, "tests.e2e.model_objectives:saves_every_epoch", 10))
    (item,) = wait_for(
        lambda: d.http.get(f"/api/v1/studies/{sid}/trials").json()["items"], 60, "a trial"
    )
    tid = item["id"]

    def three_reports() -> dict[str, Any] | None:
        t = d.trial(tid)
        return t if len(t["reports"]) >= 3 and t["worker"] else None

    running = wait_for(three_reports, 60, "three reports")
    (slot,) = [w for w in d.http.get("/api/v1/workers").json() if w["name"] == running["worker"]]
    # The whole machine goes: the worker (so nothing restarts its slot), then the slot.
    machine_a.send_signal(signal.SIGKILL)
    machine_a.wait()
    os.kill(slot["pid"], signal.SIGKILL)
    d.start_pool("machine-b", queue, 1, "--name", "machine-b")

    d.wait_finished(sid)
    trial = d.trial(tid)
    assert trial["state"] == "completed", trial["reason"]
    first, second = trial["attempt_log"]
    assert first["worker"] == "machine-a/slot-0" and first["state"] == "failed"
    assert "lease expired" in first["error"]
    assert second["worker"] == "machine-b/slot-0"
    # The retry started at the last checkpoint the dead worker uploaded, at least epoch 2
    # (its upload came before the report of epoch 3) and not past its last report ...
    resumed = second["resource_from"]
    by_attempt = {r["step"]: (r["attempt"], r["metrics"]["restored"]) for r in trial["reports"]}
    killed_after = max(s for s, (a, _) in by_attempt.items() if a == 1)
    assert 2 <= resumed <= killed_after, (resumed, killed_after)
    # ... and the objective restored that very epoch from the checkpoint.
    assert {restored for a, restored in by_attempt.values() if a == 2} == {resumed}
    assert all(restored == 0 for a, restored in by_attempt.values() if a == 1)
    # Every epoch reported once: those up to the checkpoint by the first attempt, the rest
    # by the second (steps the first reported after its checkpoint are replaced).
    assert_no_report_lost(trial)
    assert [a for _, (a, _) in sorted(by_attempt.items())] == [1] * int(resumed) + [2] * (
        10 - int(resumed)
    )


def test_a_completed_trial_s_model_downloads_and_loads(
    deployment: Deployment, tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    d = deployment
    queue = f"model-{uuid.uuid4().hex[:6]}"
    d.start_pool("pool", queue, 2)
    study = spec(queue, "tests.e2e.model_objectives:torch_model", 3, keep_models=1)
    study["limits"] = {"max_trials": 3, "max_concurrent": 2, "keep_models": 1}
    sid = d.create(study)
    assert d.wait_finished(sid)["state"] == "completed"
    best = d.study(sid)["best"]
    trials = {t["id"]: t for t in d.trials(sid)}
    assert all(t["state"] == "completed" for t in trials.values())

    # The CLI unpacks it into a directory; torch loads it.
    env = {**d.env, "TUNEYARD_TOKEN": d.tokens[Scope.ADMIN]}
    out = tmp_path / "best-model"
    done = subprocess.run(
        [*PY, "trial", "download", str(best["id"]), "-o", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    saved = torch.load(out / "model.pt", weights_only=True)
    x = trials[best["id"]]["params"]["x"]
    assert saved["epoch"] == 3
    weight = saved["state_dict"]["weight"]
    assert weight.shape == (1, 2) and torch.allclose(weight, torch.full((1, 2), x * 3))
    assert saved["state_dict"]["bias"].item() == 3.0

    # The API gives the same archive; the other trials' models go, as keep_models says.
    got = d.http.get(f"/api/v1/trials/{best['id']}/model")
    assert got.status_code == 200 and got.headers["content-type"] == "application/gzip"
    others = [t for t in trials if t != best["id"]]

    def dropped() -> bool:
        return all(d.http.get(f"/api/v1/trials/{t}/model").status_code == 404 for t in others)

    wait_for(dropped, 30, "the models beyond keep_models deleted by the sweep")
    gone = d.http.get(f"/api/v1/trials/{others[0]}/model").json()
    assert "keep_models" in gone["detail"]
    assert d.http.get(f"/api/v1/trials/{best['id']}/model").status_code == 200
