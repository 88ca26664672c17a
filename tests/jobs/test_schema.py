"""The jobs migration creates exactly the jobs models (columns, types, indexes, constraint names),
on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import storage.jobs  # noqa: F401 - registers the tables
from storage.base import Base
from storage.db import Database

TABLES = {"jobs_postings", "jobs_subscriptions", "jobs_sent", "jobs_digests"}


def _names(d) -> set[str]:  # type: ignore[no-untyped-def]
    item = d[0] if isinstance(d, list) else d
    out: set[str] = set()
    for part in item[1:]:
        if isinstance(part, str):
            out.add(part)
        for attr in ("name", "table"):
            v = getattr(part, attr, None)
            if isinstance(v, str):
                out.add(v)
            elif v is not None and isinstance(getattr(v, "name", None), str):
                out.add(v.name)
    return out


def _jobs_diff(conn) -> list:  # type: ignore[no-untyped-def]
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return [d for d in compare_metadata(ctx, Base.metadata) if any(n.startswith("jobs_") for n in _names(d))]


def _constraints(conn) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    insp = inspect(conn)
    out = {}
    for t in TABLES:
        names = {insp.get_pk_constraint(t)["name"] or f"pk_{t}"}
        names |= {u["name"] for u in insp.get_unique_constraints(t)}
        names |= {i["name"] for i in insp.get_indexes(t)}
        out[t] = names
    return out


async def test_jobs_migration_matches_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_jobs_diff)
        names = await conn.run_sync(_constraints)
    assert diff == [], "jobs models and jobs migrations differ:\n" + "\n".join(map(str, diff))
    assert "uq_jobs_postings_natural_key" in names["jobs_postings"]
    assert "uq_jobs_subscriptions_openid" in names["jobs_subscriptions"]
    assert {"ix_jobs_sent_day"} <= names["jobs_sent"]


def test_upgrade_from_jobs_0001_recreates_the_digest_table(db_url: str) -> None:
    """A database that ran the first jobs migration (digests listing every posting id) upgrades cleanly."""
    import asyncio

    from alembic import command
    from sqlalchemy import text

    from storage.db import _alembic_config, upgrade

    command.downgrade(_alembic_config(db_url), "jobs_0001")

    async def old_row_then_columns(step: str) -> set[str]:
        db = Database(db_url)
        try:
            async with db.engine.begin() as conn:
                if step == "old":
                    await conn.execute(text(
                        "INSERT INTO jobs_digests (openid, day, posting_ids, shown, created_at) "
                        "VALUES ('u', '2026-04-04', '[1, 2]', 2, '2026-04-04 11:00:00')"))
                cols = await conn.run_sync(lambda c: {x["name"] for x in inspect(c).get_columns("jobs_digests")})
                if step == "new":
                    assert (await conn.execute(text("SELECT count(*) FROM jobs_digests"))).scalar() == 0
            return cols
        finally:
            await db.close()

    assert "posting_ids" in asyncio.run(old_row_then_columns("old"))
    upgrade(db_url)
    cols = asyncio.run(old_row_then_columns("new"))
    assert {"after_id", "upto_id", "criteria", "shown_ids", "total"} <= cols and "posting_ids" not in cols

    async def check() -> None:
        db = Database(db_url)
        try:
            await db.check_schema()  # at every head again: serve would start
            async with db.engine.connect() as conn:
                assert await conn.run_sync(_jobs_diff) == []
        finally:
            await db.close()

    asyncio.run(check())
