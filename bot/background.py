"""Background loops that live as long as the web app: the outbox sender and the scheduler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from bot.scheduler import Scheduler


async def background_context(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: start the loops after start-up, stop them on shutdown.

    The outbox sender runs in every process (on PostgreSQL several share the work through
    ``FOR UPDATE SKIP LOCKED``); the scheduler's ticks run in one process at a time.
    """
    from bot.app import RUNTIME
    from bot.outbox import build_sender

    runtime = app[RUNTIME]
    cfg = runtime.config
    stoppers: list[Callable[[], Awaitable[None]]] = []
    if cfg.outbox.enabled:
        sender = build_sender(cfg, runtime.db, runtime.clock)
        runtime.outbox_sender = sender
        sender.start()
        stoppers.append(sender.close)
    if cfg.scheduler.enabled:
        sched = Scheduler(runtime.db, runtime.services)
        sched.start()
        stoppers.append(sched.stop)
    yield
    for stop in reversed(stoppers):
        await stop()
