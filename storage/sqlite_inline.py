"""An aiosqlite-compatible connection that runs sqlite3 calls inline on the event-loop thread.

Why: aiosqlite runs every statement on a worker thread and wakes the event loop when it is done. A
bot turn issues about fifteen statements over SQLite's single connection, so the thread hand-offs —
not the SQL, which takes microseconds on a local file — set the turn's latency (about 5 ms, i.e.
~200 turns/s for the whole process). Running the calls inline removes the hand-offs; SQLAlchemy's
``sqlite+aiosqlite`` dialect drives this object through ``create_async_engine(async_creator=…)``
exactly as it drives aiosqlite.

The one exception is COMMIT, which under ``synchronous=FULL`` waits for an fsync: it runs on the
connection's own thread (one hand-off per batch of turns, not per statement) so that HTTP parsing
and replies of other requests go on while the disk works.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class InlineCursor:
    """The subset of ``aiosqlite.Cursor`` SQLAlchemy's adapter uses."""

    __slots__ = ("_cur",)

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cur.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        if parameters is None:
            self._cur.execute(sql)
        else:
            self._cur.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cur.executemany(sql, seq)
        return self

    async def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    async def fetchone(self) -> Any:
        return self._cur.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cur.fetchmany(size) if size is not None else self._cur.fetchmany()

    async def close(self) -> None:
        self._cur.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    @property
    def description(self) -> Any:
        return self._cur.description

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cur.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cur.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cur.arraysize = value


class _CursorContext:
    """What ``aiosqlite.Connection.cursor()`` returns: awaitable and an async context manager."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __await__(self) -> Any:
        return self.__aenter__().__await__()


class InlineConnection:
    """The subset of ``aiosqlite.Connection`` SQLAlchemy's adapter uses."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # SQLAlchemy's adapter checks ``_connection`` before commit/rollback.
        self._connection: sqlite3.Connection | None = conn
        self._committer: ThreadPoolExecutor | None = None

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value

    def cursor(self) -> _CursorContext:
        return _CursorContext(self._conn)

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cur = InlineCursor(self._conn.cursor())
        return await cur.execute(sql, parameters)

    async def commit(self) -> None:
        # The one call that waits on the disk (an fsync under synchronous=FULL): sqlite3 releases the
        # GIL for it, so running it on a thread lets the loop parse and answer other requests meanwhile.
        # The connection's own thread, not the loop's default executor: that one also runs DNS lookups
        # and Q&A questions, and a commit queued behind them would hold up every turn. Nothing else uses
        # the connection meanwhile: the pool holds exactly one and it is checked out to the committer.
        if self._committer is None:
            self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vetbot-sqlite-commit")
        fut = asyncio.get_running_loop().run_in_executor(self._committer, self._conn.commit)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Cancelled (shutdown) while the thread commits: wait for it, so that nobody closes or
            # rolls back the connection under a running COMMIT, then pass the cancellation on.
            while not fut.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({fut})
            raise

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        """Close (also SQLAlchemy's terminate); the commit thread ends with it."""
        if self._connection is not None:
            self._conn.close()
            self._connection = None
        if self._committer is not None:
            self._committer.shutdown(wait=False)
            self._committer = None

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)


def creator(path: str, timeout: float = 10.0) -> Any:
    """An ``async_creator`` for ``create_async_engine``: opens ``path`` with sqlite3, inline; every
    statement, the connection's first included, waits up to ``timeout`` seconds for a lock."""

    async def connect() -> InlineConnection:
        # check_same_thread=False: SQLAlchemy may close pooled connections from its GC thread.
        # isolation_level=None: no implicit BEGINs; SQLAlchemy's "begin" event emits BEGIN IMMEDIATE.
        # timeout: the busy timeout from the first statement on (sqlite3's default is 5 s).
        conn = sqlite3.connect(path, timeout=timeout, check_same_thread=False, detect_types=0,
                               isolation_level=None)
        return InlineConnection(conn)

    return connect
