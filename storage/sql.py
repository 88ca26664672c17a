"""Small dialect-aware SQL helpers (SQLite and PostgreSQL both support ON CONFLICT)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def _insert(session: AsyncSession, table: Table) -> Any:
    name = session.bind.dialect.name if session.bind is not None else "sqlite"
    return postgresql.insert(table) if name == "postgresql" else sqlite.insert(table)


async def insert_ignore(session: AsyncSession, table: Table, rows: list[dict[str, Any]] | dict[str, Any],
                        index_elements: list[str] | None = None) -> int:
    """INSERT … ON CONFLICT DO NOTHING; returns how many rows were inserted."""
    if isinstance(rows, dict):
        rows = [rows]
    if not rows:
        return 0
    stmt = _insert(session, table).on_conflict_do_nothing(index_elements=index_elements)
    if len(rows) > 1 and is_postgres(session):
        # asyncpg's executemany reports no rowcount (SQLAlchemy gives -1, i.e. "0 inserted"): count
        # the rows RETURNING hands back instead (SQLAlchemy batches them as multi-VALUES inserts).
        result = await session.execute(stmt.returning(*table.primary_key.columns), rows)
        return len(result.all())
    result = await session.execute(stmt, rows)
    return max(result.rowcount or 0, 0)


def upsert_stmt(session: AsyncSession, table: Table, index_elements: list[str], update: list[str]) -> Any:
    """INSERT … ON CONFLICT (index_elements) DO UPDATE SET <update columns> = excluded.<column>."""
    stmt = _insert(session, table)
    return stmt.on_conflict_do_update(
        index_elements=index_elements, set_={c: getattr(stmt.excluded, c) for c in update}
    )


def is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"
