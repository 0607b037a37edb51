"""`tuneyard worker` needs a worker token: without one it refuses to start (exit 2) with one
line that says how to give it, unless it serves an API on this machine that asks for none
(`--insecure-no-auth`)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from typer.testing import CliRunner

from tuneyard import cli


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The pools the command would start (none is), and the token they would find."""
    import tuneyard.worker.pool

    seen: list[dict[str, Any]] = []

    def run_pool(*args: Any, **kw: Any) -> int:
        seen.append({"args": args, **kw, "token": os.environ.get("TUNEYARD_TOKEN")})
        return 0

    monkeypatch.setattr(tuneyard.worker.pool, "run_pool", run_pool)
    # The start-up checks pass: an API that takes any token, a Redis that answers
    # (tests/unit/test_startup_checks.py checks them).
    import tuneyard.cli.startup
    from tuneyard.protocol import CallerOut

    monkeypatch.setattr(
        tuneyard.cli.startup,
        "check_api",
        lambda *a, **kw: CallerOut(name="t", scope="worker", queues=None, auth=True),
    )
    monkeypatch.setattr(tuneyard.cli.startup, "check_redis", lambda url, **kw: url)
    monkeypatch.setenv("TUNEYARD_REDIS_URL", "redis://127.0.0.1:1/5")
    # Set, then removed, so that monkeypatch restores the environment after each test: the
    # command puts the token it was given there.
    for name in ("TUNEYARD_TOKEN", "TUNEYARD_API_URL"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return seen


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli.app, ["worker", "--allow", "examples.*", *args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def refusal(output: str) -> str:
    (line,) = [ln for ln in output.splitlines() if "no API token" in ln]
    return line


@pytest.mark.parametrize("env", [{}, {"TUNEYARD_TOKEN": ""}], ids=["unset", "empty"])
def test_a_worker_without_a_token_refuses_to_start(
    pools: list[dict[str, Any]], env: dict[str, str]
) -> None:
    r = run("--api", "http://api:8765", env=env)
    assert r.exit_code == 2
    line = refusal(r.output)
    assert "TUNEYARD_TOKEN" in line and "--token" in line and "--scope worker" in line
    assert pools == []


def test_a_worker_without_a_token_refuses_even_on_loopback(pools: list[dict[str, Any]]) -> None:
    """An API on this machine asks for a token too, unless told otherwise."""
    r = run("--api", "http://127.0.0.1:8765")
    assert r.exit_code == 2 and refusal(r.output) and pools == []


def test_the_token_reaches_the_slot_processes(pools: list[dict[str, Any]]) -> None:
    r = run("--api", "http://api:8765", env={"TUNEYARD_TOKEN": "ty_from_env"})
    assert r.exit_code == 0, r.output
    assert pools[-1]["token"] == "ty_from_env" and pools[-1]["args"][0] == "http://api:8765"
    r = run("--api", "http://api:8765", "--token", "ty_from_option")
    assert r.exit_code == 0, r.output
    assert pools[-1]["token"] == "ty_from_option"
    assert "ty_from" not in r.output  # the token is never echoed


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:9", "http://[::1]:80"])
def test_insecure_no_auth_serves_a_loopback_api_without_a_token(
    pools: list[dict[str, Any]], url: str
) -> None:
    r = run("--api", url, "--insecure-no-auth")
    assert r.exit_code == 0, r.output
    assert pools[-1]["args"][0] == url and pools[-1]["token"] is None


@pytest.mark.parametrize("url", ["http://api:8765", "http://10.0.0.5:8765", "https://ty.example"])
def test_insecure_no_auth_is_refused_for_an_api_elsewhere(
    pools: list[dict[str, Any]], url: str
) -> None:
    r = run("--api", url, "--insecure-no-auth")
    assert r.exit_code == 2 and pools == []
    (line,) = [ln for ln in r.output.splitlines() if "--insecure-no-auth" in ln]
    assert "this machine" in line and "TUNEYARD_TOKEN" in line
