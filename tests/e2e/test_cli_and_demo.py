"""The CLI against a real `tuneyard server` process, and the embedded demo end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.e2e.servers import free_port
from tuneyard.cli import app

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`tuneyard server` with auth on, and its first admin token made with `tuneyard token
    create --db`, in TUNEYARD_TOKEN for the CLI commands the tests run."""
    env = {**os.environ, "TUNEYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    env.pop("TUNEYARD_AUTH", None)
    up = subprocess.run(
        [sys.executable, "-m", "tuneyard.cli", "db", "upgrade"], env=env, capture_output=True
    )
    assert up.returncode == 0, up.stderr.decode()
    made = subprocess.run(
        [sys.executable, "-m", "tuneyard.cli", "token", "create", "--scope", "admin", "--db"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    assert "shown once" in made.stderr
    monkeypatch.setenv("TUNEYARD_TOKEN", made.stdout.strip())
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneyard.cli", "server", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_manages_studies_on_a_real_server(server: str, tmp_path: Path) -> None:
    cli = CliRunner()
    study = ROOT / "examples" / "study.yaml"
    r = cli.invoke(app, ["study", "create", "-f", str(study), "--api", server, "--json"])
    assert r.exit_code == 0, r.output
    sid = json.loads(r.output)["id"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nspace:\n  lr: {type: float, low: 1, high: 0}\n")
    r = cli.invoke(app, ["study", "create", "-f", str(bad), "--api", server])
    assert r.exit_code == 2 and "space.lr" in r.output and "low (1.0)" in r.output

    r = cli.invoke(app, ["study", "ls", "--api", server, "--json"])
    assert r.exit_code == 0 and [s["id"] for s in json.loads(r.output)] == [sid]
    r = cli.invoke(app, ["study", "ls", "--api", server])
    assert "mlp-digits" in r.output

    # Drive one trial through the API, then look at it from the CLI.
    auth = {"Authorization": f"Bearer {os.environ['TUNEYARD_TOKEN']}"}
    job = httpx.post(f"{server}/api/v1/studies/{sid}/next", headers=auth).json()
    httpx.post(
        f"{server}/api/v1/trials/{job['trial_id']}/reports",
        json={"attempt": 1, "step": 1, "value": 0.3},
        headers=auth,
    )
    r = cli.invoke(app, ["trials", "ls", str(sid), "--api", server])
    assert r.exit_code == 0 and "0.3" in r.output
    r = cli.invoke(app, ["trial", "show", str(job["trial_id"]), "--api", server])
    assert r.exit_code == 0 and "paused at rung 0" in r.output
    r = cli.invoke(app, ["study", "show", str(sid), "--api", server])
    assert r.exit_code == 0 and "asha" in r.output

    for cmd, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
        r = cli.invoke(app, ["study", cmd, str(sid), "--api", server])
        assert r.exit_code == 0 and state in r.output
    r = cli.invoke(app, ["study", "resume", str(sid), "--api", server])
    assert r.exit_code == 1 and "409" in r.output
    r = cli.invoke(app, ["study", "show", "999", "--api", server])
    assert r.exit_code == 1 and "404" in r.output
    r = cli.invoke(app, ["study", "ls", "--api", "http://127.0.0.1:9"])
    assert r.exit_code == 1 and "tuneyard server" in r.output


def test_tokens_from_the_cli_on_a_real_server(server: str, tmp_path: Path) -> None:
    cli = CliRunner()
    r = cli.invoke(app, ["study", "ls", "--api", server], env={"TUNEYARD_TOKEN": ""})
    assert r.exit_code == 1 and "401" in r.output and "token" in r.output
    r = cli.invoke(app, ["token", "create", "--scope", "read", "--name", "viewer", "--api", server])
    assert r.exit_code == 0, r.output
    reader = r.stdout.strip().splitlines()[-1]
    assert reader.startswith("ty_")
    as_reader = {"TUNEYARD_TOKEN": reader}
    assert cli.invoke(app, ["study", "ls", "--api", server], env=as_reader).exit_code == 0
    study = ROOT / "examples" / "study.yaml"
    r = cli.invoke(app, ["study", "create", "-f", str(study), "--api", server], env=as_reader)
    assert r.exit_code == 1 and "403" in r.output and "write" in r.output
    r = cli.invoke(app, ["token", "list", "--api", server, "--json"])
    listed = {t["name"]: t for t in json.loads(r.output)}
    assert listed["viewer"]["scope"] == "read" and reader.startswith(listed["viewer"]["hint"])
    assert "token" not in listed["viewer"]
    r = cli.invoke(app, ["token", "revoke", str(listed["viewer"]["id"]), "--api", server])
    assert r.exit_code == 0 and "revoked" in r.output
    r = cli.invoke(app, ["study", "ls", "--api", server], env=as_reader)
    assert r.exit_code == 1 and "401" in r.output


def test_auth_stays_on_unless_the_server_is_loopback_only(tmp_path: Path) -> None:
    env = {**os.environ, "TUNEYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    r = subprocess.run(
        [sys.executable, "-m", "tuneyard.cli", "server", "--host", "0.0.0.0", "--insecure-no-auth"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "refusing to serve without authentication" in r.stderr


def test_embedded_demo_runs_the_example_study_to_the_end(tmp_path: Path) -> None:
    # The example study with rungs 1/3/9, which 9 trials fill: one of them trains to the end,
    # so the study completes (with rungs up to 27 they would not: it would end exhausted).
    study = tmp_path / "study.yaml"
    example = (ROOT / "examples" / "study.yaml").read_text()
    assert "max_resource: 27," in example
    study.write_text(example.replace("max_resource: 27,", "max_resource: 9,"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneyard.cli",
            "demo",
            "--study",
            str(study),
            "--data-dir",
            str(tmp_path / "demo"),
            "--max-trials",
            "9",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "completed" in proc.stdout and "best trials by val_error" in proc.stdout
    assert "admin token (shown once" in proc.stdout and "ty_" in proc.stdout
    assert (tmp_path / "demo" / "tuneyard.db").exists()
