"""The stack's data dir and the files in it, private to this user (0700 and 0600).

Whoever can read the data dir reads the database, the logs and the Redis password; whoever can
write there replaces what the stack runs. See :mod:`tuneyard.embedded`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The password of the run's Redis, in its data dir (0600). Whoever can reach that Redis queues
# jobs that the workers run as this user, so any other account of the machine must not.
REDIS_PASSWORD_FILE = "redis.password"
# What the stack keeps in its data dir: made private to this user when a run (re)uses it.
STACK_FILES = (
    "tuneyard.db",
    "tuneyard.db-wal",
    "tuneyard.db-shm",
    "tuneyard.db-journal",
    REDIS_PASSWORD_FILE,
    "redis.log",
    "server.log",
    "scheduler.log",
    "worker.log",
)
# Files the stack's processes create are theirs alone (0600, directories 0700).
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """``path``, created if need be, readable by this user only (0700), with what an earlier
    run of the stack left in it (database, logs, password, checkpoints) private too.

    A directory of another user is refused: its owner could read or replace what the stack
    keeps there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise RuntimeError(f"{path} belongs to another user; give the stack a data dir of yours")
    path.chmod(0o700)
    for name in STACK_FILES:
        f = path / name
        if f.is_file() and not f.is_symlink():
            f.chmod(0o600)
    checkpoints = path / "checkpoints"
    if checkpoints.is_dir() and not checkpoints.is_symlink():
        checkpoints.chmod(0o700)
    return path


def open_private(path: Path, append: bool = False) -> int:
    """A file descriptor on ``path`` for writing, the file readable by this user only (0600)
    whether it is new or left by an earlier run; a symbolic link there is refused."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


@contextmanager
def private_umask() -> Iterator[None]:
    """Files this process (and what it starts) creates meanwhile are private to this user."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)
