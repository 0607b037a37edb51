"""Statements spelled differently on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, and_, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute


def insert_new(
    conn: Connection,
    model: type[Any],
    values: Mapping[str, Any],
    key: Sequence[InstrumentedAttribute[Any]],
    returning: InstrumentedAttribute[Any] | None = None,
) -> Any:
    """Insert a row unless one with the same ``key`` (a unique constraint's columns) exists:
    ``INSERT ... ON CONFLICT DO NOTHING``, one statement instead of a lookup and an insert.
    Returns the new row's ``returning`` column, or None when the row existed (or when no
    column is asked for).

    Executed on the session's connection, so it does not flush the session first."""
    dialect = conn.dialect.name
    if dialect in ("postgresql", "sqlite"):
        mod = postgresql if dialect == "postgresql" else sqlite
        stmt = (
            mod.insert(model)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[k.key for k in key])
        )
        if returning is None:
            conn.execute(stmt)
            return None
        return conn.execute(stmt.returning(returning)).scalar()
    # Any other backend: look, then insert.
    found = conn.execute(
        select(*key).where(and_(*(k == values[k.key] for k in key))).limit(1)
    ).first()
    if found is not None:
        return None
    plain = insert(model).values(**values)
    if returning is None:
        conn.execute(plain)
        return None
    return conn.execute(plain.returning(returning)).scalar()
