"""Alembic environment: runs the same history on PostgreSQL and SQLite."""

from __future__ import annotations

from alembic import context

from tuneyard.store.db import make_engine
from tuneyard.store.models import Base

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    """``alembic -x url=...`` when given (alembic.ini's comment), else sqlalchemy.url (what
    ``tuneyard db upgrade`` sets)."""
    url = context.get_x_argument(as_dictionary=True).get("url")
    return url or config.get_main_option("sqlalchemy.url") or ""


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table by copying it and dropping the original: with
            # foreign keys enforced, that drop would cascade to the rows that reference it
            # (a trial's reports, attempts, ...). SQLite ignores the pragma inside a
            # transaction, so it is set on the driver's connection before one begins.
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite can't ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
