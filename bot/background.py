"""Background loops that live as long as the web app: the outbox sender and the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

import bot.ticks  # noqa: F401 - registers the core ticks
from bot.scheduler import Scheduler


async def background_context(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: start the loops after start-up, stop them on shutdown."""
    from bot.app import RUNTIME

    runtime = app[RUNTIME]
    cfg = runtime.config
    stoppers = []
    if cfg.scheduler.enabled:
        sched = Scheduler(runtime.db, runtime.services)
        sched.start()
        stoppers.append(sched.stop)
    yield
    for stop in reversed(stoppers):
        await stop()
