"""Engine factory and schema management.

SQLite (aiosqlite, WAL) is the embedded default; PostgreSQL (asyncpg) is the real deployment where
several processes share one database and the database is the coordinator (row locks,
``FOR UPDATE SKIP LOCKED``, advisory locks).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from storage.turnbatch import TurnBatcher

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


#: Tries of a transaction that PostgreSQL aborted as a deadlock or serialization failure.
CONFLICT_TRIES = 3


def is_conflict(e: BaseException) -> bool:
    """A PostgreSQL deadlock (40P01) or serialization failure (40001): running it again may succeed."""
    return isinstance(e, DBAPIError) and getattr(e.orig, "sqlstate", None) in ("40P01", "40001")


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; the message says what to check."""


class SchemaOutdated(Exception):
    """The database schema is older (or newer) than this code expects."""


def _sqlite_path(url: str) -> str | None:
    u = make_url(url)
    if not u.drivername.startswith("sqlite"):
        return None
    return u.database or ":memory:"


#: How long a statement waits for another process's lock before "database is locked". Every connection
#: is born with it (see :func:`storage.sqlite_inline.creator`): the first statements on a connection
#: (SQLAlchemy's dialect set-up, the journal-mode check below) ran under the sqlite3 module's default
#: of 5 s instead, so a process opening the database while another held it locked a little longer (the
#: last connection of a process checkpointing on close, a backup) failed at once on its first
#: connection, while every later statement would have waited.
BUSY_TIMEOUT_S = 10.0


def _ensure_wal(cur: Any, wait_s: float = BUSY_TIMEOUT_S) -> None:
    """Put the SQLite file in WAL mode (persistent: once set, every later connection finds it so).

    Switching needs an exclusive lock on the file, so a process opening a database that is not yet in
    WAL mode while another process writes to it gets "database is locked" once the busy timeout is
    over. ``vetbot db upgrade`` leaves the file in WAL mode, so this is rare; it is retried for
    ``wait_s`` seconds (with a 100 ms busy timeout per try) and skipped when the file already is in
    WAL mode (nothing to lock then). The connection's busy timeout is set back before returning."""
    cur.execute("PRAGMA journal_mode")  # (DB-API: what execute() returns is not defined; fetch from cur)
    mode = str(cur.fetchone()[0]).lower()
    if mode in ("wal", "memory"):
        return
    # SQLite's busy wait applies to the switch too: keep it short so the loop below does the waiting.
    cur.execute("PRAGMA busy_timeout=100")
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")


class Database:
    """One engine plus a session factory.

    On SQLite every write goes through a single connection (SQLite has one writer anyway, and one
    connection avoids busy-waiting between connections). Never open a second session while holding
    one: on SQLite that would wait for itself.
    """

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10, sqlite_synchronous: str = "FULL"):
        self.url = url
        self.is_sqlite = make_url(url).drivername.startswith("sqlite")
        # hide_parameters: a database error in a log line must not carry a name or phone (个人信息保护法);
        # echo (debugging only) shows them.
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": not echo}
        if self.is_sqlite:
            path = _sqlite_path(url)
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs.update(pool_size=1, max_overflow=0, pool_timeout=60)
            if path:
                from storage.sqlite_inline import creator

                # sqlite3 inline instead of aiosqlite's worker thread: see storage/sqlite_inline.py.
                kwargs["async_creator"] = creator(path, timeout=BUSY_TIMEOUT_S)
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            sync_mode = sqlite_synchronous.upper()

            @event.listens_for(self.engine.sync_engine, "connect")
            def _pragmas(dbapi_conn: Any, _rec: Any) -> None:  # pragma: no cover - trivial
                cur = dbapi_conn.cursor()
                _ensure_wal(cur)  # the connection already waits BUSY_TIMEOUT_S for locks (creator)
                cur.execute(f"PRAGMA synchronous={sync_mode}")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            # Explicit transactions (SQLAlchemy's recipe for pysqlite): the driver's implicit BEGIN
            # breaks SAVEPOINTs, and IMMEDIATE takes the write lock up front so a read-then-write
            # transaction never deadlocks with another process (the busy timeout then simply waits).
            @event.listens_for(self.engine.sync_engine, "begin")
            def _begin(conn: Any) -> None:  # pragma: no cover - trivial
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self._batcher: TurnBatcher | None = None

    @property
    def batcher(self) -> TurnBatcher:
        """SQLite: the one group-commit queue for writes driven by requests (chat turns, the answer and
        tribute pages). Writes that arrive together share one COMMIT, i.e. one fsync under
        ``synchronous=FULL``; two queues would take turns on the single connection and pay one each."""
        if self._batcher is None:
            from storage.turnbatch import TurnBatcher

            self._batcher = TurnBatcher(self)
        return self._batcher

    async def transaction(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(session)`` in a transaction and return its result once it is committed.

        On PostgreSQL a plain session; a deadlock or serialization failure runs ``fn`` again in a fresh
        transaction (up to :data:`CONFLICT_TRIES` times in all), so ``fn`` must not act outside the
        session. On SQLite ``fn`` joins the shared group commit (:attr:`batcher`) in its own SAVEPOINT, so
        an exception rolls back ``fn``'s work alone and reaches the caller; hot repository paths run their
        statements inline there (:func:`storage.turnio.runner`). ``fn`` must not open another session (on
        SQLite that would wait for the connection it holds).
        """
        if not self.is_sqlite:
            for attempt in range(1, CONFLICT_TRIES + 1):
                try:
                    async with self.session() as s:
                        return await fn(s)
                except DBAPIError as e:
                    # Rapid taps of one person can deadlock (their row vs a shared one); the database
                    # aborts one transaction, which then simply runs again.
                    if not is_conflict(e) or attempt == CONFLICT_TRIES:
                        raise
                    await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)
        from storage.turnio import batch_session

        async def job(turn: Any) -> T:
            s = batch_session(turn)
            try:
                value = await fn(s)
                await s.commit()
                return value
            finally:
                await s.close()

        return await self.batcher.submit(job)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits on success and rolls back on error."""
        async with self.sessionmaker() as s, s.begin():
            yield s

    async def ping(self) -> None:
        """Raise DatabaseUnavailable with a hint when the database does not answer."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (TimeoutError, OSError, SQLAlchemyError) as e:
            raise DatabaseUnavailable(
                f"cannot reach the database at {make_url(self.url).render_as_string(hide_password=True)}: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                "(hint: is the server running and the URL in database.url right?)"
            ) from e

    async def current_revision(self) -> str | None:
        """The Alembic revisions stored in the database, sorted and comma-joined (None: never migrated)."""
        try:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
                return ",".join(sorted(rows)) or None
        except SQLAlchemyError:
            return None

    async def check_schema(self) -> None:
        """Raise SchemaOutdated naming the command to run when the schema is not at head."""
        await self.ping()
        head = head_revision()
        current = await self.current_revision()
        if current != head:
            raise SchemaOutdated(
                f"database schema is at {current or 'nothing (empty database)'}, this vetbot needs {head}: "
                "run `vetbot db upgrade -c CONFIG` first"
            )

    async def close(self) -> None:
        if self._batcher is not None:
            await self._batcher.close()
            self._batcher = None
        await self.engine.dispose()


def _alembic_config(url: str) -> Any:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest migrations this code ships: each feature is its own Alembic branch off the core
    (``0001``), so features can evolve independently; returned sorted and comma-joined."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    return ",".join(sorted(script.get_heads()))


def upgrade(url: str, revision: str = "heads") -> None:
    """Run Alembic migrations up to ``revision`` (blocking; call from a thread or the CLI)."""
    from alembic import command

    path = _sqlite_path(url)
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(_alembic_config(url), revision)
    if path and path != ":memory:":
        # WAL from the start: processes started together (serve, outbox run) then never need the
        # exclusive lock that switching journal modes takes (see _ensure_wal).
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            _ensure_wal(con.cursor())
        finally:
            con.close()

