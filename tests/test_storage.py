"""Storage: migrations equal the models on both databases; serve refuses an old schema; per-user turns
serialise across processes on PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from storage.base import Base
from storage.db import Database, SchemaOutdated, head_revision
from storage.models import import_all


def _diff(conn) -> list:  # type: ignore[no-untyped-def]
    import_all()
    ctx = MigrationContext.configure(conn, opts={"compare_type": False})
    return [d for d in compare_metadata(ctx, Base.metadata)]


async def test_migrations_create_exactly_the_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == [], "models and migrations differ (write a migration):\n" + "\n".join(map(str, diff))


async def test_schema_check_names_the_command(db: Database) -> None:
    await db.check_schema()
    assert await db.current_revision() == head_revision()
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaOutdated, match="vetbot db upgrade"):
        await db.check_schema()


@pytest.mark.pg
async def test_turns_of_one_user_serialise_across_processes(db_url: str) -> None:
    """Two dispatchers with separate connection pools (as two processes) never run one user's turns at once."""
    if not db_url.startswith("postgresql"):
        pytest.skip("cross-process serialisation is a PostgreSQL property (SQLite runs one process)")
    from bot.app import load_matcher
    from bot.clock import SystemClock
    from bot.dispatcher import Dispatcher, TurnControl
    from flows.api import Context, Flow, Inbound, Services, flow
    from tests.conftest import make_config

    spans: list[tuple[str, float, float]] = []

    @flow
    class _Probe(Flow):
        name = "test_probe"

        async def start(self, ctx: Context) -> None:
            t0 = asyncio.get_running_loop().time()
            await asyncio.sleep(0.15)
            spans.append((ctx.inbound.text, t0, asyncio.get_running_loop().time()))
            ctx.say("ok")
            ctx.end()

    cfg = make_config(db_url, bot__fallback_flow="test_probe")
    matcher = load_matcher(cfg)
    dbs = [Database(db_url), Database(db_url)]
    try:
        ds = [Dispatcher(d, Services(config=cfg, clock=SystemClock(), db=d), matcher, SystemClock()) for d in dbs]
        # Policy questions: nothing in the catalogue claims them, so each goes to the fallback flow (the probe).
        texts = ["优待证补办要带什么材料", "子女上学有什么优待政策吗", "抚恤金标准是多少", "退役金什么时候发"]
        await asyncio.gather(*(ds[i % 2].handle("u_same", Inbound(kind="text", text=texts[i]), f"k{i}", TurnControl())
                               for i in range(4)))
    finally:
        for d in dbs:
            await d.close()
    spans.sort(key=lambda s: s[1])
    assert len(spans) == 4
    for a, b in itertools.pairwise(spans):
        assert b[1] >= a[2] - 0.01, f"turns overlapped: {a} and {b}"


def test_upgrade_leaves_sqlite_in_wal_mode(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Processes started together on a fresh file must not race to switch its journal mode."""
    import sqlite3

    from storage.db import upgrade

    path = tmp_path / "fresh.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_switching_to_wal_waits_for_another_process_lock(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Switching needs an exclusive lock; while another connection reads, it is retried, not failed."""
    import sqlite3
    import threading

    from storage.db import _ensure_wal

    path = tmp_path / "rollback.db"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x)")
    setup.commit()
    setup.close()
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()  # a shared lock: no exclusive lock for anyone
    threading.Timer(1.0, lambda: reader.execute("COMMIT")).start()
    other = sqlite3.connect(path)  # Python's default 5 s busy timeout: _ensure_wal must use its own, short one
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _ensure_wal(other.cursor(), wait_s=0.1)
        _ensure_wal(other.cursor(), wait_s=5)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()
        reader.close()


async def test_a_cancelled_commit_waits_for_its_thread() -> None:
    """Shutdown may cancel a turn batch mid-COMMIT; the connection must not be closed under the thread."""
    import threading
    import time

    from storage.sqlite_inline import InlineConnection

    class SlowCommit:
        finished = threading.Event()

        def commit(self) -> None:
            time.sleep(0.3)
            self.finished.set()

        def close(self) -> None:
            pass

    slow = SlowCommit()
    conn = InlineConnection(slow)  # type: ignore[arg-type]
    task = asyncio.ensure_future(conn.commit())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.finished.is_set(), "the cancellation surfaced before the COMMIT's thread was done"
    await conn.close()
