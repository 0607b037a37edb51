"""The deployment files: docker-compose.yml validates (no Docker engine needed), holds the
services a production layout needs, gives each only what it needs (no database credentials
for the workers, a password for Redis, a non-root user everywhere), and README.md's
Deployment section describes it as it is."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import IN_CI
from tests.e2e.servers import free_port
from tuneyard.embedded import redis_executable

ROOT = Path(__file__).resolve().parents[2]
# Sentinels for the secrets .env holds: found where they must be, and nowhere else.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-sentinel-5f3a9c",
    "REDIS_PASSWORD": "redis-sentinel-81d2e7",
    "TUNEYARD_WORKER_TOKEN": "ty_worker-sentinel",
}
NON_ROOT = re.compile(r"^(?!root\b)(?!0(:|$))\S+$")


def compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        why = "docker-compose is not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(f"{why}; .ci/run installs it", pytrace=False)
        pytest.skip(why)
    return exe


def run_compose(
    path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # Only what the test gives: no .env of the developer's, no variables of the shell.
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(path.parent)}
    return subprocess.run(
        [compose(), "--project-directory", str(path.parent), "-f", str(path), *args],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=60,
        env={**base, **(SECRETS if env is None else env)},
    )


def validate(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_compose(path, "config", "-q", env=env)


def resolved() -> dict[str, Any]:
    """docker-compose.yml as Compose reads it: anchors merged, variables filled in."""
    r = run_compose(ROOT / "docker-compose.yml", "config")
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def raw() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_file_validates() -> None:
    r = validate(ROOT / "docker-compose.yml")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "REDIS_PASSWORD"])
def test_nothing_starts_without_the_passwords(missing: str) -> None:
    """No default password: with one unset (or empty), Compose refuses the file and says which."""
    for env in (
        {k: v for k, v in SECRETS.items() if k != missing},
        {**SECRETS, missing: ""},
    ):
        r = validate(ROOT / "docker-compose.yml", env)
        assert r.returncode != 0 and missing in r.stderr and ".env" in r.stderr


def test_a_broken_compose_file_is_caught(tmp_path: Path) -> None:
    spec = raw()
    spec["services"]["worker"]["deploy"]["resources"]["reservations"]["gpus"] = "all"
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(spec))
    r = validate(broken)
    assert r.returncode != 0 and "gpus" in r.stderr


def test_the_layout_has_every_service_and_workers_reserve_gpus() -> None:
    services = resolved()["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "api", "dispatcher", "worker"}
    assert services["migrate"]["command"] == ["tuneyard", "db", "upgrade"]
    for name in ("api", "dispatcher"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert device["count"] == "all"  # one worker container serves every GPU of its host
    assert services["worker"]["command"][:4] == ["tuneyard", "worker", "--gpus", "auto"]
    assert (ROOT / "Dockerfile").is_file()


def test_workers_get_the_api_a_token_and_redis_and_nothing_else() -> None:
    """Every objective sees its worker's environment: a database URL there would let it mint
    an admin token. The worker has no network with PostgreSQL on it either."""
    services = resolved()["services"]
    worker = services["worker"]
    env = worker["environment"]
    assert set(env) == {
        "TUNEYARD_API_URL",
        "TUNEYARD_REDIS_URL",
        "TUNEYARD_TOKEN",
        "TUNEYARD_ALLOW",
    }
    assert env["TUNEYARD_TOKEN"] == SECRETS["TUNEYARD_WORKER_TOKEN"]
    assert SECRETS["POSTGRES_PASSWORD"] not in yaml.safe_dump(worker)
    assert not any("postgres" in str(v) or "DATABASE" in k for k, v in env.items())
    assert not set(worker["networks"]) & set(services["postgres"]["networks"])
    # Nor the API's volume (checkpoints of every queue) or the database's.
    sources = {v["source"] if isinstance(v, dict) else v.split(":")[0] for v in worker["volumes"]}
    assert sources == {"work"}
    # The database password is given to those that need it, and to no one else.
    holders = {n for n, s in services.items() if SECRETS["POSTGRES_PASSWORD"] in yaml.safe_dump(s)}
    assert holders == {"postgres", "migrate", "api", "dispatcher"}


def test_redis_requires_the_password_and_every_client_url_carries_it() -> None:
    services = resolved()["services"]
    assert services["redis"]["environment"]["REDIS_PASSWORD"] == SECRETS["REDIS_PASSWORD"]
    # On no command line: the password is read from the environment inside the container.
    assert SECRETS["REDIS_PASSWORD"] not in yaml.safe_dump(services["redis"]["command"])
    assert "requirepass" in " ".join(services["redis"]["command"])
    for name, service in services.items():
        url = service.get("environment", {}).get("TUNEYARD_REDIS_URL")
        if url is not None:
            assert url == f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/0", name
    assert {n for n, s in services.items() if "TUNEYARD_REDIS_URL" in s.get("environment", {})} == {
        "api",
        "dispatcher",
        "worker",
    }


def redis_command(port: int, data: Path) -> list[str]:
    """The redis service's own command, run here on a free port instead of in its container;
    ``$$`` is Compose's escape for a ``$`` the shell sees."""
    (shell, flag, script) = raw()["services"]["redis"]["command"]
    script = script.replace("$$", "$").replace("/data", str(data))
    script = script.replace("redis-server -", f"{redis_executable()} - --port {port}", 1)
    return [shell, flag, script]


def first_reply(port: int, *command: str) -> bytes:
    wire = f"*{len(command)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in command)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(wire.encode())
        return s.makefile("rb").readline()


def test_the_redis_command_requires_the_password_and_keeps_it_off_argv(tmp_path: Path) -> None:
    """The compose file's redis command, run by a shell as in the container: it refuses a
    client without the password, and neither redis-server's arguments nor the shell's hold it."""
    port = free_port()
    password = SECRETS["REDIS_PASSWORD"]
    env = {"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": password}
    proc = subprocess.Popen(
        redis_command(port, tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                reply = first_reply(port, "PING")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "redis did not start"
                time.sleep(0.05)
        assert reply.startswith(b"-NOAUTH")
        assert first_reply(port, "AUTH", password) == b"+OK\r\n"
        # exec: redis-server is the process the container's runtime started (its PID 1).
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert b"redis-server" in cmdline and password.encode() not in cmdline
        health = raw()["services"]["redis"]["healthcheck"]["test"]
        assert health[0] == "CMD-SHELL" and password not in health[1]
        probe = health[1].replace("$$", "$").replace("redis-cli", f"redis-cli -p {port}")
        ok = subprocess.run(["sh", "-c", probe], env=env, timeout=30)
        wrong = subprocess.run(["sh", "-c", probe], env={**env, "REDIS_PASSWORD": "x"}, timeout=30)
        assert ok.returncode == 0 and wrong.returncode != 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def final_user(dockerfile: Path) -> str:
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
    return users[-1] if users else "root"


def service_user(service: dict[str, Any]) -> str:
    if "user" in service:
        return str(service["user"])
    build = service["build"]
    context = ROOT / build.get("context", ".") if isinstance(build, dict) else ROOT / build
    dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile"
    return final_user(context / dockerfile)


def test_every_service_runs_as_a_non_root_user() -> None:
    for name, service in raw()["services"].items():
        user = service_user(service)
        assert NON_ROOT.match(user), f"{name} runs as {user}"
    assert final_user(ROOT / "Dockerfile") == "10001:10001"
    assert final_user(ROOT / "deploy" / "worker.Dockerfile") == "10001:10001"


def test_the_gpu_worker_image_is_cuda_tuneyard_and_the_users_code() -> None:
    text = (ROOT / "deploy" / "worker.Dockerfile").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-runtime-", text, re.MULTILINE)
    assert "FROM ${CUDA_IMAGE}" in text
    assert "ARG REQUIREMENTS=" in text and "ARG CODE=" in text
    requirements = re.search(r"^ARG REQUIREMENTS=(\S+)", text, re.MULTILINE)
    assert requirements and (ROOT / requirements.group(1)).is_file()
    assert raw()["services"]["worker"]["build"]["dockerfile"] == "deploy/worker.Dockerfile"


def readme_table() -> dict[str, dict[str, set[str]]]:
    """README.md's Deployment table: per service its user, networks and environment."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, dict[str, set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        rows[cells[0].strip("`")] = {
            "user": {cells[2].split()[0].strip("`")},
            "networks": {n.strip() for n in cells[3].split(",")},
            "environment": set(re.findall(r"`([A-Z_]+)`", cells[4])),
        }
    return rows


def test_the_readme_deployment_section_matches_the_compose_file() -> None:
    table = readme_table()
    services = raw()["services"]
    assert set(table) == set(services)
    for name, service in services.items():
        row = table[name]
        assert row["environment"] == set(service.get("environment", {})), name
        assert row["networks"] == set(service["networks"]), name
        user = service_user(service)
        assert row["user"] == {user.split(":")[0]}, name
    readme = (ROOT / "README.md").read_text()
    for needed in ("deploy/worker.Dockerfile", "--gpus auto", "--scale worker=N", ".env.example"):
        assert needed in readme, needed
    example = (ROOT / ".env.example").read_text()
    for variable in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "TUNEYARD_WORKER_TOKEN"):
        assert re.search(rf"^{variable}=$", example, re.MULTILINE), variable
