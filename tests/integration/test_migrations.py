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


def test_reports_stored_before_attempts_count_as_their_trials_current_attempt(
    empty_url: str,
) -> None:
    """0006 gives every stored report its trial's current attempt: a worker of that attempt
    that repeats one gets the stored answer, not a second decision."""
    upgrade(empty_url, "0005")
    eng = create_engine(empty_url)
    with eng.begin() as c:
        c.execute(
            text(
                "INSERT INTO studies (id, name, state, spec, direction, metric, seed, "
                "trials_started, active, brackets_opened, created_at, updated_at) VALUES "
                "(1, 's', 'running', '{}', 'minimize', 'loss', 1, 2, 1, 0, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        for tid, attempts in ((1, 3), (2, 0)):
            c.execute(
                text(
                    "INSERT INTO trials (id, study_id, number, state, params, bracket, base_rung, "
                    "rung, resource_from, resource_to, score_sum, score_count, attempts, "
                    "log_bytes, created_at, updated_at) VALUES (:id, 1, :id, 'running', '{}', "
                    "0, 0, -1, 0, 9, 0, 0, :attempts, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": tid, "attempts": attempts},
            )
            c.execute(
                text(
                    "INSERT INTO reports (trial_id, step, value, metrics, decision, reason, "
                    "created_at) VALUES (:id, 1, 0.5, '{}', 'continue', 'r', CURRENT_TIMESTAMP)"
                ),
                {"id": tid},
            )
    eng.dispose()
    upgrade(empty_url)
    eng = create_engine(empty_url)
    with eng.connect() as c:
        rows = dict(c.execute(text("SELECT trial_id, attempt FROM reports")).all())
    eng.dispose()
    assert rows == {1: 3, 2: 1}
