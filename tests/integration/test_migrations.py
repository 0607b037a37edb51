"""The one Alembic history runs up, down and up again on SQLite and PostgreSQL, and matches
the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from tuneyard.store.migrate import downgrade, upgrade
from tuneyard.store.models import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("pg_database")
    eng = create_engine(url)
    with eng.begin() as c:
        c.execute(text("DROP SCHEMA public CASCADE"))
        c.execute(text("CREATE SCHEMA public"))
    eng.dispose()
    return url


def test_upgrade_downgrade_upgrade_matches_models(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")
    eng = create_engine(empty_url)
    assert set(inspect(eng).get_table_names()) <= {"alembic_version"}
    eng.dispose()
    upgrade(empty_url)
    eng = create_engine(empty_url)
    with eng.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert set(inspect(conn).get_table_names()) >= {"studies", "trials", "reports"}
    eng.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_alembic_from_the_checkout_takes_the_url_given_with_x(tmp_path: Path) -> None:
    """alembic.ini's own example (``alembic -x url=... upgrade head``) migrates that database,
    from any working directory, with the history inside the package."""
    root = Path(__file__).resolve().parents[2]
    target = tmp_path / "x.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(root / "alembic.ini"),
            "-x",
            f"url=sqlite:///{target}",
            "upgrade",
            "head",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    eng = create_engine(f"sqlite:///{target}")
    assert set(inspect(eng).get_table_names()) >= {"alembic_version", "studies", "trials"}
    eng.dispose()
    # Not the ini's fallback database.
    assert not (tmp_path / "tuneyard.db").exists()
