"""The memorial migration creates exactly the memorial models, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import storage.memorial  # noqa: F401 - registers the tables
from storage.base import Base
from storage.db import Database


def _memorial_diff(conn) -> list:  # type: ignore[no-untyped-def]
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    diff = compare_metadata(ctx, Base.metadata)

    def table_of(d) -> str:  # type: ignore[no-untyped-def]
        item = d[0] if isinstance(d, list) else d
        for part in item[1:]:
            name = getattr(part, "name", None) if not isinstance(part, str) else None
            tbl = getattr(part, "table", None)
            if tbl is not None and getattr(tbl, "name", None):
                return tbl.name
            if name and str(name).startswith("memorial_"):
                return str(name)
            if isinstance(part, str) and part.startswith("memorial_"):
                return part
        return ""

    return [d for d in diff if table_of(d).startswith("memorial_")]


async def test_memorial_migration_matches_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_memorial_diff)
    assert diff == [], "memorial models and memorial_0001 differ:\n" + "\n".join(map(str, diff))
