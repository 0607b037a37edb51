"""The CLI's security switches: worker allowlists, tokens straight in the database, and auth
that stays on unless the server is loopback-only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tuneyard import cli
from tuneyard.worker.allow import Allowlist


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli.app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    import tuneyard.worker.pool

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(tuneyard.worker.pool, "run_pool", lambda *a, **kw: seen.append(kw) or 0)
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
    monkeypatch.setenv("TUNEYARD_TOKEN", "ty_test")
    monkeypatch.delenv("TUNEYARD_ALLOW", raising=False)
    monkeypatch.delenv("TUNEYARD_ALLOW_COMMAND", raising=False)
    return seen


def test_a_worker_runs_what_its_allow_options_name(pools: list[dict[str, Any]]) -> None:
    r = run(
        "worker", "--allow", "examples.*", "--allow", "myproj.train:*", "--allow-command", "python3"
    )
    assert r.exit_code == 0, r.output
    assert pools[-1]["allow"] == Allowlist(("examples.*", "myproj.train:*"), ("python3",))
    assert "runs entrypoints examples.*, myproj.train:*" in r.output


def test_the_allowlist_can_come_from_the_environment(pools: list[dict[str, Any]]) -> None:
    r = run("worker", env={"TUNEYARD_ALLOW": "examples.* other.mod:fit"})
    assert r.exit_code == 0, r.output
    assert pools[-1]["allow"].entrypoints == ("examples.*", "other.mod:fit")


def test_a_worker_without_an_allowlist_refuses_to_start(
    pools: list[dict[str, Any]],
) -> None:
    r = run("worker")
    assert r.exit_code == 2 and pools == []
    (line,) = r.output.strip().splitlines()
    assert line.startswith("tuneyard worker: --allow / TUNEYARD_ALLOW")
    assert "--allow-command" in line and "refuse every job" in line


def test_up_and_demo_pass_the_auth_switch_and_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    import tuneyard.embedded

    seen: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(tuneyard.embedded, "run_up", lambda **kw: seen.setdefault("up", kw) and 0)
    monkeypatch.setattr(
        tuneyard.embedded, "run_demo", lambda **kw: seen.setdefault("demo", kw) and 0
    )
    assert run("up", "--allow", "mypkg.*").exit_code == 0
    assert seen["up"]["auth"] is True and seen["up"]["allow"].entrypoints == ("mypkg.*",)
    assert run("demo", "--insecure-no-auth").exit_code == 0
    assert seen["demo"]["auth"] is False


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org", "::"])
def test_no_auth_is_refused_off_loopback(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not serve"))
    r = run("server", "--host", host, "--insecure-no-auth")
    assert r.exit_code == 2 and "refusing to serve without authentication" in r.output
    r = run("server", "--host", host, env={"TUNEYARD_AUTH": "false"})
    assert r.exit_code == 2


def test_loopback_addresses() -> None:
    assert all(cli.is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"))
    assert not any(cli.is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "host.local"))


def test_tokens_straight_in_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEYARD_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    r = CliRunner().invoke(
        cli.app, ["token", "create", "--scope", "worker", "--queue", "gpu", "--db"]
    )
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip()
    assert secret.startswith("ty_") and "\n" not in secret, "the token alone on stdout"
    assert "shown once" in r.stderr and "queues gpu" in r.stderr
    r = run("token", "list", "--db", "--json")
    (listed,) = json.loads(r.stdout)
    assert listed["scope"] == "worker" and listed["queues"] == ["gpu"]
    assert secret.startswith(listed["hint"]) and secret not in r.stdout
    assert run("token", "revoke", str(listed["id"]), "--db").exit_code == 0
    assert json.loads(run("token", "list", "--db", "--json").stdout) == []
    r = run("token", "create", "--scope", "read", "--queue", "gpu", "--db")
    assert r.exit_code == 1 and "only a worker token" in r.output
