"""The deployment files: docker-compose.yml validates (no Docker engine needed) and holds
the services a production layout needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]


def compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        why = "docker-compose is not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(f"{why}; .ci/run installs it", pytrace=False)
        pytest.skip(why)
    return exe


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compose(), "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=path.parent,
        timeout=60,
    )


def test_the_compose_file_validates() -> None:
    r = validate(ROOT / "docker-compose.yml")
    assert r.returncode == 0, r.stderr


def test_a_broken_compose_file_is_caught(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    spec["services"]["worker"]["deploy"]["resources"]["reservations"]["gpus"] = "all"
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(spec))
    r = validate(broken)
    assert r.returncode != 0 and "gpus" in r.stderr


def test_the_layout_has_every_service_and_workers_reserve_gpus() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "api", "scheduler", "worker"}
    assert services["migrate"]["command"] == ["tuneyard", "db", "upgrade"]
    for name in ("api", "scheduler"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "--gpus" in services["worker"]["command"]
    assert (ROOT / "Dockerfile").is_file()
