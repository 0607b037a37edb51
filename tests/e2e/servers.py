"""Start real API server processes for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_servers(database_url: str, n: int, log_dir: Path, **env: str) -> Iterator[list[str]]:
    """``n`` uvicorn processes serving one database; yields their base URLs.

    Auth is off unless ``TUNEYARD_AUTH`` says otherwise: the tests that use these servers
    call them without tokens (tests/e2e/stack.py runs a deployment with tokens)."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    environment = {
        **os.environ,
        "TUNEYARD_DATABASE_URL": database_url,
        "TUNEYARD_AUTH": "false",
        **env,
    }
    try:
        for i in range(n):
            port = free_port()
            log = open(log_dir / f"server-{i}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        "tuneyard.api.app:create_app",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    env=environment,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url, proc in zip(urls, procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server {url} exited with {proc.returncode}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server {url} did not become ready")
                time.sleep(0.1)
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
