"""A worker slot imports the study's objective before it asks for a trial: a slow import
(torch and a training framework take seconds) is not spent on a trial's lease, whose heartbeats
start only with the objective; an import that fails still fails the trial it was meant for,
with the error."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fake_api import ASSIGNMENT, SPEC, FakeApi, problem, study_json, trial_json
from tuneyard.client import Client
from tuneyard.worker import jobs
from tuneyard.worker.allow import ENV_VAR, Allowlist

ORDER: list[str] = []


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    pkg = tmp_path / "probe_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "slow.py").write_text(
        "from tests.unit.test_slot_objective_import import ORDER\n"
        "ORDER.append('imported')\n"
        "def run(trial):\n"
        "    return 0.0\n"
    )
    (pkg / "broken.py").write_text("import no_such_framework_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(ENV_VAR, Allowlist.of(["probe_pkg.*"]).to_env())
    monkeypatch.delenv("TUNEYARD_POOL_ID", raising=False)
    jobs.REFUSED.clear()
    ORDER.clear()
    yield pkg
    for name in [m for m in sys.modules if m.startswith("probe_pkg")]:
        del sys.modules[name]


def api_for(entrypoint: str) -> FakeApi:
    api = FakeApi()
    spec = {**SPEC, "execution": {"entrypoint": entrypoint, "queue": "default"}}
    api.on("GET", "/studies/7", httpx.Response(200, json=study_json(7, spec=spec)))
    return api


def run_slot(api: FakeApi, tmp_path: Path) -> str:
    transport = httpx.MockTransport(api.handle)
    with Client("http://api.test", token="ty_x", transport=transport) as client:
        return jobs._run_slot(client, None, 7, "http://api.test", "ty_x", tmp_path / "data")


def test_the_objective_is_imported_before_a_trial_is_asked_for(
    package: Path, tmp_path: Path
) -> None:
    api = api_for("probe_pkg.slow:run")

    def finished(_req: httpx.Request) -> httpx.Response:
        ORDER.append("next")
        return problem(409, "the study is finished")

    api.on("POST", "/studies/7/next", finished)
    assert run_slot(api, tmp_path) == "finished"
    assert ORDER == ["imported", "next"]


def test_an_objective_that_cannot_be_imported_fails_the_trial_with_the_error(
    package: Path, tmp_path: Path
) -> None:
    api = api_for("probe_pkg.broken:run")
    api.on("POST", "/studies/7/next", httpx.Response(200, json={**ASSIGNMENT, "attempt": 1}))
    api.on("POST", "/trials/3/fail", httpx.Response(200, json=trial_json(2, state="failed")))
    assert run_slot(api, tmp_path) == "fail"
    failed = [r for r in api.requests if r.url.path.endswith("/fail")]
    assert len(failed) == 1
    body = json.loads(failed[0].content)
    assert body["attempt"] == 1
    assert body["error"].startswith("ImportError: cannot import 'probe_pkg.broken'")
    assert "No module named 'no_such_framework_anywhere'" in body["error"]
