"""Code that follows the user, in real processes (API, dispatcher, worker pools on PostgreSQL
and Redis): a study created with ``--code DIR`` runs that directory's code; after an edit of
DIR the next study runs the new code on the same worker processes, with no restart. An
installed entrypoint's module edited between two studies is imported again. A worker started
without ``--accept-code`` takes no job of a study with code and fails no trial."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stack import PY, ROOT, Deployment, wait_for
from tests.helpers import API
from tuneyard.service.tokens import Scope

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

OBJECTIVE = """\
import os

VERSION = {version}


def run(trial):
    for epoch in trial.epochs():
        trial.report(
            epoch,
            loss=trial.params["x"] + VERSION,
            version=VERSION,
            pid=os.getpid(),
            ppid=os.getppid(),
        )
"""


def study_file(tmp: Path, name: str, queue: str, entrypoint: str) -> Path:
    spec = {
        "name": name,
        "metric": "loss",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "sampler": {"type": "random", "seed": 3},
        "scheduler": {"type": "fifo", "max_resource": 2},
        "limits": {"max_trials": 4, "max_concurrent": 2},
        "execution": {"entrypoint": entrypoint, "queue": queue, "max_retries": 0},
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def cli_create(d: Deployment, spec: Path, code: Path | None = None) -> int:
    """``tuneyard study create -f FILE [--code DIR] --json``, as a user runs it."""
    env = {**d.env, "TUNEYARD_TOKEN": d.tokens[Scope.ADMIN]}
    args = [*PY, "study", "create", "-f", str(spec), "--json"]
    if code is not None:
        args += ["--code", str(code)]
    out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(json.loads(out.stdout)["id"])


def slot_pids(d: Deployment, name: str) -> set[int]:
    workers = d.http.get(f"{API}/workers").json()
    return {w["pid"] for w in workers if w["name"].startswith(f"{name}/")}


def reports(d: Deployment, sid: int) -> list[dict[str, Any]]:
    trials = d.trials(sid)
    assert {t["state"] for t in trials} == {"completed"}, [(t["state"], t["error"]) for t in trials]
    return [r for t in trials for r in t["reports"]]


def set_version(path: Path, version: int) -> None:
    path.write_text(OBJECTIVE.format(version=version))
    st = path.stat()  # a later mtime even where the clock is coarse
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_an_edit_of_the_shipped_code_reaches_the_same_workers_with_no_restart(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    queue = f"code-{uuid.uuid4().hex[:6]}"
    proj = tmp_path / "proj"
    (proj / "shipme").mkdir(parents=True)
    (proj / "shipme" / "__init__.py").write_text("")
    set_version(proj / "shipme" / "train.py", 1)
    (proj / "data.bin").write_bytes(b"x" * 10)
    (proj / ".gitignore").write_text("data.bin\n")
    # Its allowlist covers none of the shipped module: --accept-code is what lets it run.
    pool = d.start_pool("pool", queue, 2, "--name", "pool", "--accept-code", allow=("tests.e2e.*",))
    wait_for(lambda: len(slot_pids(d, "pool")) == 2, 60, "two slots registered")
    pids = slot_pids(d, "pool")
    spec = study_file(tmp_path, "shipped", queue, "shipme.train:run")

    first = cli_create(d, spec, code=proj)
    assert d.wait_finished(first)["state"] == "completed"
    before = reports(d, first)
    assert {r["metrics"]["version"] for r in before} == {1.0}

    set_version(proj / "shipme" / "train.py", 2)
    second = cli_create(d, spec, code=proj)
    assert d.wait_finished(second)["state"] == "completed"
    after = reports(d, second)
    assert {r["metrics"]["version"] for r in after} == {2.0}, "the new code ran"

    # Each job ran in a fresh process whose parent is one of the same slot processes.
    for r in before + after:
        assert int(r["metrics"]["ppid"]) in pids
        assert int(r["metrics"]["pid"]) not in pids
    assert slot_pids(d, "pool") == pids
    assert pool.poll() is None
    assert "starting it again" not in (tmp_path / "pool.log").read_text()
    codes = [d.study(s)["spec"]["execution"]["code"] for s in (first, second)]
    assert codes[0] != codes[1]
    cache = tmp_path / "pool" / "code"
    assert sorted(p.name for p in cache.iterdir()) == sorted(c[7:] for c in codes)
    # .gitignore's data.bin stayed home.
    assert not (cache / codes[0][7:] / "data.bin").exists()
    assert (cache / codes[0][7:] / "shipme" / "train.py").is_file()


def test_an_edited_installed_module_is_imported_again_at_the_next_job(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    queue = f"reload-{uuid.uuid4().hex[:6]}"
    src = tmp_path / "src"
    (src / "reloadme").mkdir(parents=True)
    (src / "reloadme" / "__init__.py").write_text("")
    set_version(src / "reloadme" / "train.py", 1)
    pool = d.start_pool(
        "pool", queue, 1, "--name", "pool", "--path", str(src), allow=("reloadme.*",)
    )
    wait_for(lambda: len(slot_pids(d, "pool")) == 1, 60, "the slot registered")
    pids = slot_pids(d, "pool")
    spec = study_file(tmp_path, "installed", queue, "reloadme.train:run")

    first = cli_create(d, spec)
    assert d.wait_finished(first)["state"] == "completed"
    assert {r["metrics"]["version"] for r in reports(d, first)} == {1.0}

    set_version(src / "reloadme" / "train.py", 2)
    second = cli_create(d, spec)
    assert d.wait_finished(second)["state"] == "completed"
    after = reports(d, second)
    assert {r["metrics"]["version"] for r in after} == {2.0}
    # In the slot process itself, the same one: imported again, not restarted.
    assert {int(r["metrics"]["pid"]) for r in after} == pids
    assert slot_pids(d, "pool") == pids and pool.poll() is None
    assert (
        "re-importing the objective: reloadme.train changed" in (tmp_path / "pool.log").read_text()
    )


def test_a_worker_without_accept_code_leaves_shipped_jobs_to_one_with_it(
    deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    queue = f"refuse-{uuid.uuid4().hex[:6]}"
    proj = tmp_path / "proj"
    (proj / "shipme").mkdir(parents=True)
    (proj / "shipme" / "__init__.py").write_text("")
    set_version(proj / "shipme" / "train.py", 7)
    marker = tmp_path / "ran"
    (proj / "shipme" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    d.start_pool("plain", queue, 2, "--name", "plain", allow=("shipme.*",))
    wait_for(lambda: len(slot_pids(d, "plain")) == 2, 60, "two slots registered")
    sid = cli_create(d, study_file(tmp_path, "refused", queue, "shipme.train:run"), code=proj)

    log = tmp_path / "plain.log"
    wait_for(lambda: "not started with --accept-code" in log.read_text(), 60, "the refusal")
    time.sleep(3)  # the dispatcher sends more jobs meanwhile; each is handed back untouched
    assert d.http.get(f"{API}/studies/{sid}/trials").json()["items"] == []
    assert d.study(sid)["state"] == "running"
    assert not marker.exists(), "nothing of the shipped code ran"
    assert log.read_text().count("not started with --accept-code") == 1, "said once"

    d.start_pool("accepting", queue, 1, "--name", "accepting", "--accept-code", allow=())
    assert d.wait_finished(sid)["state"] == "completed"
    trials = d.trials(sid)
    assert [t["state"] for t in trials] == ["completed"] * 4
    assert all(len(t["attempt_log"]) == 1 for t in trials), "no attempt failed"
    assert all(t["worker"].startswith("accepting/") for t in trials)
    assert {r["metrics"]["version"] for t in trials for r in t["reports"]} == {7.0}
