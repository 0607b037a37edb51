"""The engines' transaction and connection handling: SQLite's write lock taken at BEGIN except
for transactions that only read, and PostgreSQL connections pinged only after sitting idle
(a connection the server dropped meanwhile is replaced, not handed out)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import event, text

from tuneyard.service.context import Toolkit
from tuneyard.settings import Settings
from tuneyard.store import db
from tuneyard.store.db import make_engine, make_sessionmaker


def _kit(url: str, tmp_path: Path) -> Toolkit:
    return Toolkit(
        make_sessionmaker(make_engine(url)), Settings(database_url=url, data_dir=tmp_path)
    )


def test_sqlite_writers_go_on_while_a_read_only_transaction_is_open(tmp_path: Path) -> None:
    kit = _kit(f"sqlite:///{tmp_path / 'x.db'}", tmp_path)
    with kit.transaction() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    with kit.reading() as r:
        assert r.execute(text("SELECT count(*) FROM t")).scalar() == 0
        done = threading.Event()

        def write() -> None:
            with kit.transaction() as w:
                w.execute(text("INSERT INTO t VALUES (1)"))
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(timeout=10)
        # A writer's BEGIN IMMEDIATE would wait (busy_timeout) for another writer's lock.
        assert done.is_set(), "the writer waited for a transaction that only reads"
        # The reader's snapshot predates the write.
        assert r.execute(text("SELECT count(*) FROM t")).scalar() == 0
    with kit.reading() as r:
        assert r.execute(text("SELECT count(*) FROM t")).scalar() == 1


def test_sqlite_writers_take_the_write_lock_at_begin(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    begun: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda c, cur, sql, *a: begun.append(sql) if sql.startswith("BEGIN") else None,
    )
    kit = Toolkit(make_sessionmaker(engine), Settings(database_url=str(engine.url)))
    with kit.transaction() as s:
        s.execute(text("SELECT 1"))
    with kit.reading() as s:
        s.execute(text("SELECT 1"))
    assert begun == ["BEGIN IMMEDIATE", "BEGIN"]


@pytest.mark.postgres
def test_a_connection_dropped_while_idle_is_replaced_not_handed_out(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)
    pings: list[int] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))
    with engine.connect() as c:
        first = c.execute(text("SELECT pg_backend_pid()")).scalar()
    # In use a moment ago: handed out as it is.
    with engine.connect() as c:
        assert c.execute(text("SELECT pg_backend_pid()")).scalar() == first
    assert pings == []
    # The server drops it while it sits idle past PING_AFTER_IDLE.
    admin = make_engine(postgres_url)
    with admin.connect() as c:
        c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    admin.dispose()
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.0)
    with engine.connect() as c:
        second = c.execute(text("SELECT pg_backend_pid()")).scalar()
    assert pings, "an idle connection was handed out without a ping"
    assert second != first
    engine.dispose()
