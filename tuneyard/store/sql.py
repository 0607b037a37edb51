"""Statements spelled differently on PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Float, and_, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.functions import FunctionElement


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


class seconds_between(FunctionElement[float]):
    """``end - start`` in seconds, as a float, for two timestamp expressions (SQLite: to the
    millisecond, the precision its julian day numbers keep)."""

    type = Float()
    inherit_cache = True
    name = "seconds_between"


@compiles(seconds_between, "postgresql")
def _seconds_between_pg(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    end_sql, start_sql = compiler.process(end, **kw), compiler.process(start, **kw)
    return f"CAST(EXTRACT(EPOCH FROM ({end_sql} - {start_sql})) AS DOUBLE PRECISION)"


@compiles(seconds_between)
def _seconds_between_sqlite(element: seconds_between, compiler: Any, **kw: Any) -> str:
    start, end = list(element.clauses)
    return (
        f"ROUND((julianday({compiler.process(end, **kw)}) - "
        f"julianday({compiler.process(start, **kw)})) * 86400.0, 3)"
    )
