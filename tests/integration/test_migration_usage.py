"""Revision 0012 gives attempts that ended before it their wall time, and their studies the
sum of it as worker-seconds (as CPU time: which GPUs they used was not recorded)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import bindparam, create_engine, text

from tuneyard.store.migrate import alembic_config, upgrade
from tuneyard.store.models import UTCDateTime


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


def before_0012() -> str:
    """The revision 0012 follows, wherever the history puts it."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    down = script.get_revision("0012").down_revision
    assert isinstance(down, str)
    return down


def test_attempts_that_ended_before_get_their_wall_time(empty_url: str) -> None:
    upgrade(empty_url, before_0012())
    t0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    eng = create_engine(empty_url)
    with eng.begin() as c:
        c.execute(
            text(
                "INSERT INTO studies (id, name, state, spec, direction, metric, seed, "
                "trials_started, active, brackets_opened, created_at, updated_at) VALUES "
                "(1, 's', 'running', '{}', 'minimize', 'loss', 1, 1, 1, 0, :t, :t)"
            ).bindparams(bindparam("t", t0, type_=UTCDateTime))
        )
        c.execute(
            text(
                "INSERT INTO trials (id, study_id, number, state, params, bracket, base_rung, "
                "rung, resource_from, resource_to, score_sum, score_count, attempts, "
                "log_bytes, created_at, updated_at) VALUES (1, 1, 0, 'running', '{}', "
                "0, 0, -1, 0, 9, 0, 0, 3, 0, :t, :t)"
            ).bindparams(bindparam("t", t0, type_=UTCDateTime))
        )
        insert = text(
            "INSERT INTO attempts (trial_id, number, resource_from, resource_to, state, "
            "started_at, ended_at) VALUES (1, :n, 0, 9, :state, :start, :end)"
        ).bindparams(bindparam("start", type_=UTCDateTime), bindparam("end", type_=UTCDateTime))
        spans = {1: (0, 90.5), 2: (100, 1900), 3: (2000, None)}  # the third still runs
        for n, (start, end) in spans.items():
            c.execute(
                insert,
                {
                    "n": n,
                    "state": "failed" if end is not None else "running",
                    "start": t0 + timedelta(seconds=start),
                    "end": t0 + timedelta(seconds=end) if end is not None else None,
                },
            )
    eng.dispose()
    upgrade(empty_url)
    eng = create_engine(empty_url)
    with eng.connect() as c:
        walls = dict(c.execute(text("SELECT number, wall_seconds FROM attempts")).all())
        gpus = c.execute(text("SELECT DISTINCT gpu_count FROM attempts")).scalars().all()
        # Summed by 0012 on the study's row, moved with it to study_counters by 0017.
        study = c.execute(text("SELECT gpu_seconds, worker_seconds FROM study_counters")).one()
    eng.dispose()
    assert walls[1] == pytest.approx(90.5, abs=1e-3) and walls[2] == pytest.approx(1800)
    assert walls[3] is None and gpus == [0]
    assert study[0] == 0 and study[1] == pytest.approx(1890.5, abs=1e-3)
