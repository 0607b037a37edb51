"""The CLI against a fake API (httpx.MockTransport behind the one client factory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_api import SPEC, FakeApi, problem, run, study_json, trial_json
from tuneyard.cli import common
from tuneyard.client import Client


# -- study create ------------------------------------------------------------------------------
def test_create_rejects_an_invalid_spec_field_by_field_without_calling_the_api(
    api: FakeApi, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\n"
        "direction: upward\n"
        "space:\n"
        "  lr: {type: float, low: 1, high: 0}\n"
        "  n: {type: int, low: 1, high: 4, color: red}\n"
    )
    r = run("study", "create", "-f", str(bad))
    assert r.exit_code == 2, r.output
    assert "direction" in r.output and "'minimize' or 'maximize'" in r.output
    assert "space.lr" in r.output and "low (1.0) must not be greater than high" in r.output
    assert "space.n.color" in r.output  # the union's tag ("int") is not part of the path
    assert not api.requests


@pytest.mark.parametrize(
    ("text", "why"),
    [("name: [unclosed\n", "cannot parse"), ("- just\n- a list\n", "expected a mapping")],
)
def test_create_rejects_a_file_that_is_not_a_mapping(
    api: FakeApi, tmp_path: Path, text: str, why: str
) -> None:
    f = tmp_path / "study.yaml"
    f.write_text(text)
    r = run("study", "create", "-f", str(f))
    assert r.exit_code == 2 and why in r.output and not api.requests


def test_create_sends_a_json_spec_and_prints_json(api: FakeApi, tmp_path: Path) -> None:
    f = tmp_path / "study.json"
    f.write_text(json.dumps(SPEC))
    api.on("POST", "/studies", httpx.Response(201, json=study_json(7)))
    r = run("study", "create", "-f", str(f), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["id"] == 7
    sent = json.loads(api.requests[0].content)
    assert sent["name"] == "demo" and sent["space"]["lr"]["log"] is True

    r = run("study", "create", "-f", str(f))
    assert r.exit_code == 0 and "created study 7" in r.output


def test_create_prints_the_servers_field_errors(api: FakeApi, tmp_path: Path) -> None:
    f = tmp_path / "study.yaml"
    f.write_text(json.dumps(SPEC))
    errors = [{"field": "execution.queue", "message": "no such queue", "type": "value_error"}]
    api.on("POST", "/studies", problem(422, "execution.queue: no such queue", errors=errors))
    r = run("study", "create", "-f", str(f))
    assert r.exit_code == 1 and "422" in r.output and "no such queue" in r.output


# -- reading -----------------------------------------------------------------------------------
def test_study_ls_json_is_parseable(api: FakeApi) -> None:
    page = {"items": [study_json(2), study_json(1)], "next_cursor": None}
    api.on("GET", "/studies", httpx.Response(200, json=page))
    r = run("study", "ls", "--json", "--limit", "10")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [s["id"] for s in data] == [2, 1] and data[0]["spec"]["name"] == "demo"
    assert api.requests[0].url.params["limit"] == "10"


def test_study_ls_table_and_paging(api: FakeApi) -> None:
    pages = {
        None: {"items": [study_json(2, name="mlp-digits")], "next_cursor": "c2"},
        "c2": {"items": [study_json(1, best=None)], "next_cursor": None},
    }
    api.on(
        "GET",
        "/studies",
        lambda req: httpx.Response(200, json=pages[req.url.params.get("cursor")]),
    )
    r = run("study", "ls")
    assert r.exit_code == 0, r.output
    assert "mlp-digits" in r.output and "2 running" in r.output and "0.25" in r.output
    assert "--cursor c2" in r.output

    r = run("study", "ls", "--cursor", "c2", "--json")
    assert [s["id"] for s in json.loads(r.stdout)] == [1]
    r = run("study", "ls", "--all", "--json")
    assert [s["id"] for s in json.loads(r.stdout)] == [2, 1]
    assert "--cursor" not in r.output


def test_trials_ls_renders_a_table_and_passes_filters(api: FakeApi) -> None:
    items = [
        trial_json(0),
        trial_json(1, state="stopped", value=0.9, rung=0, reason="stopped at rung 0"),
    ]
    api.on(
        "GET", "/studies/1/trials", httpx.Response(200, json={"items": items, "next_cursor": None})
    )
    r = run("trials", "ls", "1", "--state", "completed", "--order", "-value", "--limit", "5")
    assert r.exit_code == 0, r.output
    for text in ("state", "reason", "completed", "stopped", "lr=0.01", "opt=adam", "rung 0"):
        assert text in r.output
    params = api.requests[0].url.params
    assert (params["state"], params["order"], params["limit"]) == ("completed", "-value", "5")


def test_trials_ls_refuses_an_unknown_order_before_calling(api: FakeApi) -> None:
    r = run("trials", "ls", "1", "--order", "best")
    assert r.exit_code == 2 and not api.requests


def test_trials_ls_json(api: FakeApi) -> None:
    api.on(
        "GET",
        "/studies/3/trials",
        httpx.Response(200, json={"items": [trial_json(4)], "next_cursor": None}),
    )
    r = run("trials", "ls", "3", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["number"] == 4


def test_study_show_summarises_spec_counts_and_best(api: FakeApi) -> None:
    api.on("GET", "/studies/1", httpx.Response(200, json=study_json()))
    r = run("study", "show", "1")
    assert r.exit_code == 0, r.output
    for text in ("study 1: demo", "minimize loss", "asha", "lr: float", "5/100 started"):
        assert text in r.output
    assert "3 completed" in r.output and "trial 0" in r.output and "opt = adam" in r.output
    r = run("study", "show", "1", "--json")
    assert json.loads(r.stdout)["counts"] == {"running": 2, "completed": 3}


def test_trial_show_lists_decisions_and_reports(api: FakeApi) -> None:
    full = {
        **trial_json(state="paused", reason="paused at rung 0 [top 1/3]"),
        "resource_from": 0,
        "resource_to": 1,
        "checkpoint": "/ck/100",
        "error": None,
        "reports": [
            {
                "step": 1,
                "value": 0.3,
                "metrics": {"acc": 0.8},
                "decision": "pause",
                "reason": "paused at rung 0",
                "resource_to": 1,
                "created_at": "2026-01-01T00:00:00Z",
            }
        ],
        "decisions": [
            {
                "kind": "pause",
                "reason": "paused at rung 0 [top 1/3]",
                "rung": 0,
                "resource": 1,
                "created_at": "2026-01-01T00:00:00Z",
            }
        ],
        "attempt_log": [],
    }
    api.on("GET", "/trials/100", httpx.Response(200, json=full))
    r = run("trial", "show", "100")
    assert r.exit_code == 0, r.output
    assert "[top 1/3]" in r.output  # markup in server text is printed, not interpreted
    assert "acc=0.8" in r.output and "/ck/100" in r.output


# -- changing state ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cmd", "state"), [("pause", "paused"), ("resume", "running"), ("stop", "stopped")]
)
def test_state_commands_patch_the_study(api: FakeApi, cmd: str, state: str) -> None:
    api.on(
        "PATCH",
        "/studies/4",
        lambda req: httpx.Response(200, json=study_json(4, state=json.loads(req.content)["state"])),
    )
    r = run("study", cmd, "4")
    assert r.exit_code == 0 and f"study 4 is {state}" in r.output
    assert json.loads(api.requests[0].content) == {"state": state}


def test_delete(api: FakeApi) -> None:
    api.on("DELETE", "/studies/4", httpx.Response(204))
    r = run("study", "delete", "4")
    assert r.exit_code == 0 and "deleted" in r.output


# -- errors and the API address ----------------------------------------------------------------
def test_api_errors_print_the_detail_and_exit_1(api: FakeApi) -> None:
    api.on("PATCH", "/studies/4", problem(409, "study 4 is stopped; it cannot resume"))
    r = run("study", "resume", "4")
    assert r.exit_code == 1 and "409" in r.output and "cannot resume" in r.output
    r = run("study", "show", "999")
    assert r.exit_code == 1 and "404" in r.output


def test_connection_refused_prints_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    monkeypatch.setattr(
        common,
        "make_client",
        lambda url: Client(url, transport=httpx.MockTransport(refused), retries=0),
    )
    r = run("study", "ls", "--api", "http://127.0.0.1:9")
    assert r.exit_code == 1
    assert "is the server running at http://127.0.0.1:9" in r.output
    assert "tuneyard server" in r.output


def test_api_url_comes_from_the_command_the_global_option_or_the_environment(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.on("GET", "/studies", httpx.Response(200, json={"items": [], "next_cursor": None}))
    run("study", "ls", "--api", "http://cmd:1/")
    run("--api", "http://global:2", "study", "ls")
    run("--api", "http://global:2", "study", "ls", "--api", "http://cmd:1")
    monkeypatch.setenv("TUNEYARD_API_URL", "http://env:3")
    run("study", "ls")
    assert api.urls == ["http://cmd:1", "http://global:2", "http://cmd:1", "http://env:3"]


# -- the service commands ------------------------------------------------------------------------
def test_server_migrates_then_serves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    import tuneyard.api.app
    import tuneyard.store.migrate

    calls: list[tuple[str, Any]] = []
    monkeypatch.setenv("TUNEYARD_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setattr(tuneyard.store.migrate, "upgrade", lambda url: calls.append(("up", url)))
    monkeypatch.setattr(tuneyard.api.app, "create_app", lambda s: calls.append(("app", s)) or "APP")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(("run", (app, kw))))
    r = run("server", "--port", "9999")
    assert r.exit_code == 0, r.output
    assert [c[0] for c in calls] == ["up", "app", "run"]
    assert calls[0][1].endswith("x.db")
    app, kw = calls[2][1]
    assert app == "APP" and kw["port"] == 9999 and kw["host"] == "127.0.0.1"


def test_server_workers_build_their_apps_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import uvicorn

    import tuneyard.store.migrate

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setenv("TUNEYARD_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.delenv("TUNEYARD_AUTH", raising=False)
    monkeypatch.setattr(tuneyard.store.migrate, "upgrade", lambda url: None)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    r = run("server", "--workers", "2", "--insecure-no-auth")
    assert r.exit_code == 0, r.output
    ((app, kw),) = calls
    assert app == "tuneyard.api.app:create_app"
    assert kw["factory"] is True and kw["workers"] == 2 and kw["port"] == 8765
    # Each process reads its settings from the environment: the option must reach it there.
    assert os.environ["TUNEYARD_AUTH"] == "false"


@pytest.mark.parametrize("name", ["dispatcher", "scheduler"])
def test_both_names_run_the_dispatcher(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tuneyard.service.dispatch

    runs: list[tuple[str, str, float]] = []

    class Dispatcher:
        def __init__(self, kit: Any, redis: Any, api_url: str) -> None:
            self.redis, self.api_url = redis, api_url

        def run(self, interval: float) -> None:
            kwargs = self.redis.connection_pool.connection_kwargs
            runs.append((self.api_url, f"{kwargs['host']}:{kwargs['port']}", interval))

    monkeypatch.setenv("TUNEYARD_DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setattr(tuneyard.service.dispatch, "Dispatcher", Dispatcher)
    # Its start-up checks pass (tests/unit/test_startup_checks.py checks them).
    import tuneyard.cli.startup

    monkeypatch.setattr(tuneyard.cli.startup, "check_redis", lambda url, **kw: url)
    monkeypatch.setattr(tuneyard.cli.startup, "check_api_answers", lambda url, **kw: None)
    args = ["--api", "http://api:1", "--redis", "redis://r:2/0", "--interval", "0.25"]
    r = run(name, *args)
    assert r.exit_code == 0, r.output
    assert runs == [("http://api:1", "r:2", 0.25)]


def test_help_lists_the_dispatcher_and_not_its_old_name() -> None:
    listed = run("--help").output
    assert "dispatcher" in listed and "scheduler" not in listed
    told = " ".join(run("scheduler", "--help").output.split())
    assert "old name of `tuneyard dispatcher`" in told


def test_up_runs_the_stack_or_a_study(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tuneyard.embedded

    seen: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(tuneyard.embedded, "run_up", lambda **kw: seen.setdefault("up", kw) and 0)
    monkeypatch.setattr(
        tuneyard.embedded, "run_demo", lambda **kw: seen.setdefault("demo", kw) and 3
    )
    r = run("up", "--workers", "3", "--data-dir", str(tmp_path))
    assert r.exit_code == 0 and seen["up"]["workers"] == 3 and seen["up"]["data_dir"] == tmp_path
    study = tmp_path / "s.yaml"
    study.write_text("name: x\n")
    r = run("up", "--study", str(study), "--port", "8123")
    assert r.exit_code == 3  # run_demo's exit code
    assert seen["demo"]["study_file"] == study and seen["demo"]["port"] == 8123


def test_importing_the_cli_loads_no_server_code() -> None:
    code = (
        "import sys, tuneyard.cli; "
        "print(sorted(m for m in ('uvicorn', 'fastapi', 'sqlalchemy', 'alembic', 'redis') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
