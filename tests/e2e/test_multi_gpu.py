"""Multi-GPU trials through a real worker: `tuneyard worker --gpus 0,1,2,3 --gpus-per-slot 2`
makes two slots of two GPUs; a study with ``execution.gpus: 2`` runs its command under
torchrun, one rank per GPU of the slot (on CPU: gloo, and GPU ids that are only names, since
no nvidia-smi is needed to name them); and a study whose trials need four GPUs is left alone
by those slots and says why."""

from __future__ import annotations

import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import Deployment, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

OBJECTIVE = Path(__file__).with_name("ddp_objective.py")


def spec(queue: str, name: str, gpus: int, out: Path, *seconds: str) -> dict[str, Any]:
    return {
        "name": name,
        "metric": "loss",
        "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}},
        "sampler": {"type": "random", "seed": 3},
        "scheduler": {"type": "fifo", "max_resource": 3},
        "limits": {"max_trials": 2, "max_concurrent": 2},
        "execution": {
            "queue": queue,
            "gpus": gpus,
            "max_retries": 0,
            "command": [sys.executable, str(OBJECTIVE), str(out), *seconds],
        },
    }


def test_each_rank_of_a_two_gpu_trial_sees_its_own_gpu_of_the_slot(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    queue = f"ddp-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "seen"
    out.mkdir()
    four = d.create(spec(queue, "four-gpus", 4, out))
    assert d.study(four)["queue_warning"] == f"no live worker serves queue {queue!r}"
    d.start_pool("pool", queue, 1, "--gpus", "0,1,2,3", "--gpus-per-slot", "2")
    two = d.create(spec(queue, "two-gpus", 2, out))

    study = d.wait_finished(two, 120)
    assert study["state"] == "completed", d.logs()
    slots = {("0", "1"), ("2", "3")}
    for trial in d.trials(two):
        assert trial["state"] == "completed", trial
        (attempt,) = trial["attempt_log"]
        gpus = tuple(g["index"] for g in attempt["gpus"])
        assert gpus in slots, "the attempt records both GPUs of its slot"
        # Rank 0's last report completed the trial; it writes what the ranks saw just after.
        seen = out / f"trial-{trial['number']}.json"
        wait_for(seen.exists, 30, f"{seen.name} written")
        ranks = json.loads(seen.read_text())
        assert sorted(r["rank"] for r in ranks) == [0, 1]
        assert sorted(r["local_rank"] for r in ranks) == [0, 1]
        for r in ranks:
            assert r["world_size"] == 2 and r["trial_rank"] == r["rank"]
            assert r["cuda_visible_devices"] == ",".join(gpus), r
        # Each rank's device is its own GPU of the slot: LOCAL_RANK indexes the visible ids.
        own = {r["cuda_visible_devices"].split(",")[r["local_rank"]] for r in ranks}
        assert own == set(gpus)
        # Rank 0 reported; every rank got its decisions and left the loop at the same epoch,
        # and data-parallel training kept their weights equal.
        assert [len(r["decisions"]) for r in ranks] == [3, 3]
        assert ranks[0]["decisions"] == ranks[1]["decisions"]
        assert ranks[0]["decisions"][-1] == "complete"
        assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"])
        assert [rep["step"] for rep in trial["reports"]] == [1.0, 2.0, 3.0], "one per epoch"

    # The pool registered one slot per two GPUs.
    workers = [w for w in d.http.get("/api/v1/workers").json() if w["queue"] == queue]
    assert sorted(tuple(g["index"] for g in w["gpus"]) for w in workers) == sorted(slots)
    assert sorted(w["name"].rsplit("/", 1)[1] for w in workers) == ["gpu-0+1", "gpu-2+3"]

    # The four-GPU study: its jobs were handed back untouched, and it says why it waits.
    log = tmp_path / "pool.log"
    wait_for(lambda: f"study {four} (" in log.read_text(), 30, "the refusal logged")
    assert "its trials need 4 GPUs each (execution.gpus) and this worker slot has 2 GPUs" in (
        log.read_text()
    )
    waiting = d.study(four)
    assert waiting["state"] == "running"
    assert d.trials(four) == []
    assert waiting["queue_warning"] == (
        f"no live worker on queue {queue!r} has 4 GPUs per slot for its trials "
        "(execution.gpus); the most is 2: start one with --gpus-per-slot 4"
    )


def test_a_stopping_worker_hands_a_two_gpu_trial_back_and_another_slot_resumes_it(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    queue = f"ddp-{uuid.uuid4().hex[:6]}"
    out = tmp_path / "seen"
    out.mkdir()
    leaving = d.start_pool(
        "leaving", queue, 1, "--gpus", "0,1", "--gpus-per-slot", "2", "--name", "leaving"
    )
    body = spec(queue, "handed-back", 2, out, "0.5")
    body["scheduler"] = {"type": "fifo", "max_resource": 8}
    body["limits"] = {"max_trials": 1, "max_concurrent": 1}
    sid = d.create(body)

    def reported() -> dict[str, Any] | None:
        for t in d.http.get(f"/api/v1/studies/{sid}/trials?state=running").json()["items"]:
            full = d.trial(t["id"])
            if len(full["reports"]) >= 2:
                return full
        return None

    trial = wait_for(reported, 60, "the two-GPU trial reporting")
    d.start_pool("staying", queue, 1, "--gpus", "2,3", "--gpus-per-slot", "2", "--name", "staying")
    # The worker asks rank 0 (through its stop file) to pause at its next report; rank 1 follows.
    leaving.send_signal(signal.SIGTERM)
    assert leaving.wait(timeout=60) == 0

    assert d.wait_finished(sid, 120)["state"] == "completed"
    t = d.trial(trial["id"])
    first, second = t["attempt_log"]
    assert first["worker"] == "leaving/gpu-0+1" and first["state"] == "released"
    assert second["worker"] == "staying/gpu-2+3"
    # Resumed from the hand-back's checkpoint, not from the start.
    assert 2 <= second["resource_from"] < 8, (first, second, d.logs())
    assert [r["step"] for r in t["reports"]] == [float(i) for i in range(1, 9)]
    seen = out / f"trial-{t['number']}.json"
    wait_for(seen.exists, 30, f"{seen.name} written")
    ranks = json.loads(seen.read_text())
    assert [r["cuda_visible_devices"] for r in ranks] == ["2,3", "2,3"]
    assert all(r["resumed"] for r in ranks), "every rank loaded rank 0's checkpoint"
