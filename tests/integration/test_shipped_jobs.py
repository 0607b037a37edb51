"""A slot job of a study with shipped code, against a served API on SQLite and PostgreSQL:
the entrypoint runs in a fresh process from the fetched code; what it returns completes the
trial with that value, what it raises fails the trial with that error (not with an exit
code); a worker that does not accept code takes no trial."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import API, serve, study_spec
from tuneyard.api.app import create_app
from tuneyard.code_archive import pack
from tuneyard.settings import Settings
from tuneyard.worker import jobs
from tuneyard.worker.jobs import run_slot

OBJECTIVES = """\
import os


def value(trial):
    assert os.getcwd() == os.environ["TUNEYARD_CODE_DIR"]
    return 0.25 + trial.params["x"] * 0


def broken(trial):
    raise ValueError("learning rate too high")


def saves(trial):
    trial.save({"weights": [1, 2, 3]})
    trial.report(1, loss=0.5)  # completes the trial: max_resource is 1
"""
# A shipped command: run in the code's directory, its modules importable.
SCRIPT = """\
import sys

from shipjob.obj import value
from tuneyard import trial_from_env

trial = trial_from_env()
trial.report(1, loss=value(trial) + float(sys.argv[1]))
"""


def test_a_shipped_entrypoint_completes_with_its_value_or_fails_with_its_error(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = tmp_path / "proj"
    (proj / "shipjob").mkdir(parents=True)
    (proj / "shipjob" / "__init__.py").write_text("")
    (proj / "shipjob" / "obj.py").write_text(OBJECTIVES)
    (proj / "train.py").write_text(SCRIPT)
    packed = pack(proj, tmp_path / "code.tar.gz")
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30) as http:
        r = http.put(f"{API}/code/{packed.digest}", content=packed.path.read_bytes())
        assert r.status_code == 201, r.text
        code = r.json()["code"]

        def study(entrypoint: str | None, command: list[str] | None = None) -> int:
            run = {"command": command} if command else {"entrypoint": entrypoint}
            spec = study_spec(
                limits={"max_trials": 1, "max_concurrent": 1},
                execution={**run, "code": code, "max_retries": 0},
            )
            spec["scheduler"] = {"type": "fifo", "max_resource": 1}
            created = http.post(f"{API}/studies", json=spec)
            assert created.status_code == 201, created.text
            return int(created.json()["id"])

        def trials(sid: int) -> list[dict]:  # type: ignore[type-arg]
            items = http.get(f"{API}/studies/{sid}/trials").json()["items"]
            return [http.get(f"{API}/trials/{t['id']}").json() for t in items]

        monkeypatch.setenv("TUNEYARD_API_URL", url)
        monkeypatch.setenv("TUNEYARD_DATA_DIR", str(tmp_path / "worker"))
        monkeypatch.setenv("TUNEYARD_CODE_CACHE", str(tmp_path / "cache"))

        refused = study("shipjob.obj:value")
        monkeypatch.setenv("TUNEYARD_WORKER_ACCEPT_CODE", '["other-queue"]')
        assert run_slot(refused, url) == "refused"
        assert trials(refused) == []
        assert not (tmp_path / "cache").exists(), "nothing fetched"

        # A worker started again, with --accept-code: a new process, which refused nothing.
        monkeypatch.setattr(jobs, "REFUSED", {})
        monkeypatch.setenv("TUNEYARD_WORKER_ACCEPT_CODE", '["default"]')
        assert run_slot(refused, url) == "complete"
        (done,) = trials(refused)
        assert done["state"] == "completed" and done["value"] == 0.25

        failing = study("shipjob.obj:broken")
        assert run_slot(failing, url) == "fail"
        (failed,) = trials(failing)
        assert failed["state"] == "failed"
        assert failed["error"].startswith("Traceback"), failed["error"]
        assert "ValueError: learning rate too high" in failed["error"]
        assert "ValueError: learning rate too high" in (failed["log_tail"] or "")
        monkeypatch.setenv("TUNEYARD_WORKER_ALLOWLIST", json.dumps({"commands": [sys.executable]}))
        command = study(None, [sys.executable, "train.py", "0.5"])
        assert run_slot(command, url) == "complete"
        (ran,) = trials(command)
        assert ran["state"] == "completed" and ran["value"] == 0.75, ran
        # A report of the shipped process completed the trial: its last save is the model.
        saving = study("shipjob.obj:saves")
        assert run_slot(saving, url) == "complete"
        (kept,) = trials(saving)
        assert kept["state"] == "completed", kept
        model = http.get(f"{API}/trials/{kept['id']}/model")
        assert model.status_code == 200, model.text
        assert model.content[:2] == b"\x1f\x8b"  # a tar.gz
        # Fetched once, for all four studies.
        assert [p.name for p in (tmp_path / "cache").iterdir()] == [packed.digest]
