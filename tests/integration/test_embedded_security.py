"""The embedded stack's Redis and data dir are this user's alone.

A loopback port is open to every account of the machine, and whoever can talk to the stack's
Redis queues jobs that its workers run as the person who started it. So the Redis the stack
starts (``embedded_redis``, the very function ``tuneyard up`` and ``tuneyard demo`` use)
requires a password kept in the data dir, readable by this user only, and never shown on a
command line; the data dir and what the stack writes there are private (0700 / 0600)."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import redis

from tuneyard import embedded
from tuneyard.embedded.processes import process


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def redis_process(port: int) -> psutil.Process:
    """The redis-server this test process started, listening on ``port``."""
    for child in psutil.Process().children(recursive=True):
        listening = {c.laddr.port for c in child.net_connections() if c.status == "LISTEN"}
        if port in listening:
            return child
    raise AssertionError(f"no child process listens on {port}")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def redis_url(data_dir: Path) -> Iterator[str]:
    with embedded.embedded_redis(data_dir) as url:
        yield url


def raw(port: int, *command: str) -> bytes:
    """One command in Redis's wire protocol on a fresh connection, and the first reply line."""
    wire = f"*{len(command)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in command)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(wire.encode())
        return s.makefile("rb").readline()


def test_an_unauthenticated_client_is_refused(redis_url: str) -> None:
    port = urlsplit(redis_url).port
    assert port
    assert raw(port, "PING").startswith(b"-NOAUTH")
    assert raw(port, "LPUSH", "rq:queue:default", "a job").startswith(b"-NOAUTH")
    assert raw(port, "AUTH", "guess").startswith(b"-WRONGPASS")
    with pytest.raises(redis.AuthenticationError), redis.Redis(port=port) as anonymous:
        anonymous.ping()
    with redis.Redis.from_url(redis_url) as client:  # the URL the stack's clients get
        assert client.ping() is True
        assert client.llen("rq:queue:default") == 0


def test_the_password_is_in_a_private_file_of_a_private_dir(redis_url: str, data_dir: Path) -> None:
    password = urlsplit(redis_url).password
    assert password and len(password) >= 32
    kept = data_dir / embedded.REDIS_PASSWORD_FILE
    assert kept.read_text().strip() == password
    assert mode(kept) == 0o600
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "redis.log") == 0o600
    assert password not in (data_dir / "redis.log").read_text()


def test_the_password_is_on_no_command_line(redis_url: str) -> None:
    url = urlsplit(redis_url)
    assert url.password and url.port
    proc = redis_process(url.port)
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert b"redis-server" in cmdline
    assert url.password.encode() not in cmdline
    assert url.password.encode() not in Path(f"/proc/{proc.pid}/environ").read_bytes()


def test_each_run_has_a_fresh_password(data_dir: Path) -> None:
    with embedded.embedded_redis(data_dir) as first:
        pass
    with embedded.embedded_redis(data_dir) as second:
        assert urlsplit(first).password != urlsplit(second).password
        assert (data_dir / embedded.REDIS_PASSWORD_FILE).read_text().strip() == urlsplit(
            second
        ).password


def test_a_data_dir_left_open_by_an_earlier_run_is_made_private(tmp_path: Path) -> None:
    """What a run (or an older tuneyard) left readable becomes this user's only."""
    data_dir = tmp_path / "old"
    (data_dir / "checkpoints").mkdir(parents=True)
    data_dir.chmod(0o755)
    (data_dir / "checkpoints").chmod(0o755)
    for name in ("tuneyard.db", "server.log", embedded.REDIS_PASSWORD_FILE):
        (data_dir / name).write_text("old")
        (data_dir / name).chmod(0o644)
    with embedded.embedded_redis(data_dir):
        pass
    assert mode(data_dir) == 0o700 and mode(data_dir / "checkpoints") == 0o700
    for name in ("tuneyard.db", "server.log", embedded.REDIS_PASSWORD_FILE, "redis.log"):
        assert mode(data_dir / name) == 0o600, name


def test_a_symlink_where_the_password_goes_is_refused(tmp_path: Path) -> None:
    """The password is never written through a link someone planted in the data dir."""
    data_dir = tmp_path / "run"
    data_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    (data_dir / embedded.REDIS_PASSWORD_FILE).symlink_to(elsewhere)
    with pytest.raises(OSError), embedded.embedded_redis(data_dir):
        pass
    assert not elsewhere.exists()


def test_a_data_dir_of_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "theirs"
    data_dir.mkdir(mode=0o755)
    theirs = data_dir.stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: theirs + 1)
    with pytest.raises(RuntimeError, match="another user"):
        embedded.private_dir(data_dir)
    assert mode(data_dir) == 0o755  # left as it was


def test_files_the_stack_processes_create_are_private(tmp_path: Path) -> None:
    """A log opened for a process, and what that process creates, are 0600."""
    data_dir = embedded.private_dir(tmp_path / "run")
    log = data_dir / "child.log"
    made = data_dir / "made-by-child"
    cmd = ["sh", "-c", f"echo hi; echo data > '{made}'; mkdir '{data_dir / 'sub'}'"]
    with process(cmd, dict(os.environ), log) as proc:
        proc.wait(timeout=30)
    assert mode(log) == 0o600 and mode(made) == 0o600 and mode(data_dir / "sub") == 0o700
    assert log.read_text() == "hi\n"
