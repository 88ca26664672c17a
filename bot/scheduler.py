"""APScheduler wiring: every registered tick runs on an interval, in one process at a time.

Durable state lives in tables, so a tick only reads what is due (``due_at <= now``) and a restart
re-derives every timer. On PostgreSQL the process holding a session-level advisory lock is the
leader; the others keep trying, so losing the leader hands the role to another process within
one interval. On SQLite there is one process, which always leads.
"""

from __future__ import annotations

import asyncio
import logging

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.api import Services, Tick, TickContext, ticks
from storage.db import Database

log = logging.getLogger("vetbot.scheduler")

#: Arbitrary constant identifying vetbot's scheduler lock (pg_advisory_lock key).
ADVISORY_KEY = 0x7E7B07


class Leadership:
    """Who runs the ticks. ``held()`` tries to become leader when not yet."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: AsyncConnection | None = None

    async def held(self) -> bool:
        if self.db.is_sqlite:
            return True
        if self._conn is not None:
            try:
                await self._conn.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("lost the scheduler lock connection")
                await self._drop()
        try:
            conn = await self.db.engine.connect()
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY})).scalar()
            await conn.commit()
            if got:
                self._conn = conn
                log.info("this process now runs the scheduled jobs")
                return True
            await conn.close()
        except Exception as e:
            log.warning("scheduler lock attempt failed: %s", type(e).__name__)
        return False

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                pass

    async def release(self) -> None:
        if self._conn is not None:
            try:
                await self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                await self._conn.commit()
            except Exception:
                pass
        await self._drop()


async def run_tick(tick: Tick, db: Database, services: Services) -> None:
    """Run one tick now (also what tests call, with a fake clock)."""
    await tick.fn(TickContext(db=db, services=services, now=services.clock.now()))


class Scheduler:
    """Runs the registered ticks with APScheduler; only while this process is the leader."""

    def __init__(self, db: Database, services: Services, *, tick_s: float | None = None) -> None:
        self.db, self.services = db, services
        self.leadership = Leadership(db)
        self.sched = AsyncIOScheduler()
        self.tick_s = tick_s

    async def _guarded(self, tick: Tick) -> None:
        if not await self.leadership.held():
            return
        try:
            await run_tick(tick, self.db, self.services)
        except Exception:
            log.exception("scheduled job %s failed", tick.name)

    def start(self) -> None:
        for t in ticks():
            seconds = min(t.seconds, self.tick_s) if self.tick_s else t.seconds
            # max_instances=1: a job never overlaps itself (APScheduler skips a run while the previous one,
            # a coroutine on this loop, is still going); coalesce: missed runs collapse into one.
            self.sched.add_job(self._guarded, "interval", seconds=seconds, args=[t], id=t.name,
                               max_instances=1, coalesce=True, misfire_grace_time=None)
        self.sched.start()

    async def stop(self) -> None:
        if self.sched.running:
            self.sched.shutdown(wait=False)
        await asyncio.sleep(0)
        await self.leadership.release()

