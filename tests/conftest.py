"""Shared fixtures: databases on SQLite and real PostgreSQL, Redis, and the app.

PostgreSQL and Redis are found at TUNEYARD_TEST_POSTGRES_URL / TUNEYARD_TEST_REDIS_URL
(default: 127.0.0.1:5432 and :6379). When one can't be reached, the tests that need it are
skipped with that reason, except under CI=true, where an unreachable service is an error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tuneyard.settings import Settings
from tuneyard.store.models import Base

PG_URL = os.environ.get(
    "TUNEYARD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TUNEYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_probe_cache: dict[str, str | None] = {}


def _unreachable(name: str, why: str) -> None:
    if IN_CI:
        pytest.fail(f"{name} is required under CI=true but unreachable: {why}", pytrace=False)
    pytest.skip(f"{name} unreachable ({why}); start it to run this test")


def postgres_problem() -> str | None:
    if "pg" not in _probe_cache:
        try:
            eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with eng.connect() as c:
                c.execute(text("SELECT 1"))
            eng.dispose()
            _probe_cache["pg"] = None
        except Exception as exc:
            _probe_cache["pg"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return _probe_cache["pg"]


def redis_problem() -> str | None:
    if "redis" not in _probe_cache:
        try:
            import redis

            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
            _probe_cache["redis"] = None
        except Exception as exc:
            _probe_cache["redis"] = f"{type(exc).__name__}: {exc}"
    return _probe_cache["redis"]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A private PostgreSQL database for this test session, dropped at the end."""
    problem = postgres_problem()
    if problem:
        _unreachable("PostgreSQL", problem)
    name = f"tuneyard_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_schema(pg_database: str) -> str:
    eng = create_engine(pg_database)
    Base.metadata.create_all(eng)
    eng.dispose()
    return pg_database


def _truncate_pg(url: str) -> None:
    eng = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with eng.begin() as c:
        c.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    eng.dispose()


def _sqlite_url(tmp_path: Path) -> str:
    from tuneyard.store.db import make_engine

    url = f"sqlite:///{tmp_path / 'tuneyard.db'}"
    eng = make_engine(url)
    Base.metadata.create_all(eng)
    eng.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database on each backend."""
    if request.param == "sqlite":
        return _sqlite_url(tmp_path)
    url: str = request.getfixturevalue("pg_schema")
    _truncate_pg(url)
    return url


@pytest.fixture
def postgres_url(pg_schema: str) -> str:
    """An empty PostgreSQL database (for tests that only make sense there)."""
    _truncate_pg(pg_schema)
    return pg_schema


@pytest.fixture
def redis_url() -> str:
    """The test Redis database, emptied: nothing queued by an earlier test is left."""
    problem = redis_problem()
    if problem:
        _unreachable("Redis", problem)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    return REDIS_URL


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The app's settings for API tests, with auth off: those tests are about behaviour, and
    send no token. tests/integration/test_auth.py covers auth, and the end-to-end deployments
    (tests/e2e/stack.py) run with it on, their processes holding tokens."""
    return Settings(database_url=database_url, data_dir=tmp_path, lease_seconds=60, auth=False)
