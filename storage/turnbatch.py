"""Group commit for SQLite: turns that arrive together share one transaction.

SQLite has one writer and vetbot uses one connection to it, so turns run one after another
anyway. What batching changes is the commit: with ``synchronous=FULL`` every commit is an fsync,
and a burst of messages pays one fsync for the whole burst instead of one each. Every turn runs
inside its own SAVEPOINT, so a turn that fails rolls back alone; nobody's reply leaves before the
COMMIT that makes it durable (the future resolves after the commit).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from storage.db import Database

log = logging.getLogger("vetbot.turns")


@dataclass(slots=True)
class BatchTurn:
    """What a turn function gets: the SQLAlchemy connection (already in the batch transaction, inside
    the turn's SAVEPOINT), the sqlite3 connection under it, and :meth:`after_commit`."""

    conn: AsyncConnection
    raw: sqlite3.Connection
    callbacks: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the batch has committed, if this turn succeeded (once per ``fn``)."""
        if fn not in self.callbacks:
            self.callbacks.append(fn)


TurnFn = Callable[[BatchTurn], Awaitable[Any]]


@dataclass
class _Job:
    fn: TurnFn
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class TurnBatcher:
    """Runs submitted turn functions in batches on the database's single SQLite connection.

    ``fn(turn)`` gets a :class:`BatchTurn` (the connections, and after-commit callbacks). ``max_batch`` bounds the work one fsync covers; ``turn_timeout``
    stops one stuck turn from holding everyone. Turns run one after another in the batcher's own task
    (not a task each): they share its context variables, so a turn must not leave one set.
    """

    def __init__(self, db: Database, *, max_batch: int = 64, turn_timeout: float = 30.0) -> None:
        self.db = db
        self.max_batch = max_batch
        self.turn_timeout = turn_timeout
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.turns = 0

    def enqueue(self, fn: TurnFn) -> asyncio.Future[Any]:
        """Queue ``fn`` for the next batch; the future resolves with its result once the batch has
        committed. Cancelling the future does not stop ``fn``: a queued turn always runs."""
        job = _Job(fn)
        self._queue.put_nowait(job)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="vetbot-turn-batcher")
        return job.future

    async def submit(self, fn: TurnFn) -> Any:
        """Run ``fn`` in the next batch; returns its result once the batch has committed."""
        return await asyncio.shield(self.enqueue(fn))

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._run_batch(batch)
            except asyncio.CancelledError:
                for job in batch:
                    if not job.future.done():
                        job.future.cancel()
                raise
            except Exception as e:
                log.error("turn batch failed: %s: %s", type(e).__name__, e)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)

    async def _run_batch(self, batch: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        callbacks: list[Callable[[], None]] = []
        async with self.db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            raw = getattr(raw, "_conn", raw)  # the sqlite3 connection under the inline adapter
            trans = await conn.begin()
            worker = asyncio.current_task()
            assert worker is not None
            try:
                for job in batch:
                    raw.execute("SAVEPOINT turn")
                    turn = BatchTurn(conn, raw)
                    try:
                        # In this task, under a deadline: no task of its own per turn (wait_for's cost).
                        async with asyncio.timeout(self.turn_timeout):
                            value = await job.fn(turn)
                        if worker.cancelling():
                            # Cancelled from outside (close()) and the turn swallowed it: stop anyway,
                            # as wait_for's separate task did (the timeout's own cancel is already undone).
                            raise asyncio.CancelledError
                    except Exception as e:
                        raw.execute("ROLLBACK TO turn")
                        raw.execute("RELEASE turn")
                        results.append((job, None, e))
                    else:
                        raw.execute("RELEASE turn")
                        results.append((job, value, None))
                        callbacks += (fn for fn in turn.callbacks if fn not in callbacks)
                    # Let the loop read and parse other requests between turns: on SQLite a turn
                    # rarely suspends, and a batch of 64 call-up answers would otherwise hold
                    # every socket for ~100 ms.
                    await asyncio.sleep(0)
                await trans.commit()
            except BaseException:
                if trans.is_active:
                    await trans.rollback()
                raise
        self.batches += 1
        self.turns += len(batch)
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("after-commit callback failed")
        for job, value, err in results:
            if job.future.done():
                continue
            if err is not None:
                job.future.set_exception(err)
            else:
                job.future.set_result(value)
