"""Engines and sessions, with the per-backend settings that keep concurrent writers safe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as exc_module
from sqlalchemy.orm import Session, sessionmaker

# Registers the writes every transaction makes last (counters, observations) on Session.
from tuneyard.store import tail as _tail  # noqa: F401


def make_engine(
    url: str, pool_size: int = 10, max_overflow: int = 20, pool_timeout: float = 30.0
) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # A database that went away costs a request a few seconds at most, never a hang: the
    # connection attempt times out, a pooled connection that sat idle is tested before use
    # and a connection lost to a restart is replaced on its next checkout.
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    _ping_when_idle(engine)
    return engine


# Execution option of a transaction that only reads (see _sqlite_engine).
READ_ONLY = "tuneyard_read_only"
# A connection checked in less than this long ago is handed out without a ping.
PING_AFTER_IDLE = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling for connections that sat idle. ``pool_pre_ping`` pings
    on every checkout, a round trip of its own in front of every transaction: a tenth of a
    plain report's time. A connection that was in use a moment ago is as likely to fail in
    its next transaction as during its last one, so only one idle for ``PING_AFTER_IDLE``
    seconds is pinged; a failed ping makes the pool replace it (and, as a lost connection
    does, every connection older), and a lost connection found mid-transaction is answered
    with 503 and replaced likewise."""

    @event.listens_for(engine, "checkin")
    def checkin(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("checked_in")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise exc_module.DisconnectionError(f"idle connection lost: {exc}") from exc
        if not alive:
            raise exc_module.DisconnectionError("idle connection lost")


def _sqlite_engine(url: str) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    # pysqlite's own transaction handling starts transactions lazily and as DEFERRED, so two
    # writers can both read and then deadlock upgrading their locks. Take the write lock at
    # BEGIN instead: SQLite then serialises writers the way the study row lock does on Postgres.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    # A transaction marked READ_ONLY begins DEFERRED: it reads a snapshot (WAL) and leaves the
    # write lock to the writers meanwhile.
    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
