"""The stack's child processes: started with their output in a private log, stopped on exit.
See :mod:`tuneyard.embedded`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tuneyard.client import Client
from tuneyard.embedded.private import PRIVATE_UMASK, open_private


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Poll GET /readyz until the server answers, failing fast if its process exits."""
    deadline = time.monotonic() + timeout
    with Client(url, retries=0, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API server exited ({proc.returncode}); see {log}")
            try:
                client.health()
                return
            except Exception:
                time.sleep(0.2)
    raise RuntimeError(f"the API server did not become ready in {timeout:.0f} s; see {log}")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def process(
    cmd: list[str], env: dict[str, str], log: Path, stdin: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` running, its output appended to ``log`` (0600), the files it creates private to
    this user; ``stdin`` is written to its standard input, which is then closed."""
    with os.fdopen(open_private(log, append=True), "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            umask=PRIVATE_UMASK,
        )
    try:
        if stdin is not None and proc.stdin is not None:
            with proc.stdin:
                proc.stdin.write(stdin.encode())
        yield proc
    finally:
        stop(proc)
