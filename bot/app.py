"""Assembling the runtime: database, flows, intents, dispatcher, gateway, web pages, background loops."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

import bot.ticks  # noqa: F401 - the core ticks, registered wherever a runtime is built (serve, chat, tests)
from bot.clock import Clock, SystemClock
from bot.config import Config
from bot.dispatcher import BUILTIN_COMMANDS, Dispatcher
from bot.gateway import Gateway
from bot.intents import IntentMatcher, load_intents
from flows.api import Services, flows, load_all, startup_hooks
from storage.db import Database

log = logging.getLogger("vetbot")


@dataclass
class Runtime:
    """Everything a running bot holds; built by :func:`build_runtime`, used by the app, chat and tests."""

    config: Config
    db: Database
    clock: Clock
    services: Services
    matcher: IntentMatcher
    dispatcher: Dispatcher
    extra: dict[str, Any] = field(default_factory=dict)

    async def close(self) -> None:
        for closer in reversed(self.extra.get("closers", [])):
            await closer()
        await self.dispatcher.close()
        await self.db.close()


RUNTIME = web.AppKey("runtime", Runtime)
GATEWAY = web.AppKey("gateway", Gateway)


def load_matcher(config: Config) -> IntentMatcher:
    """Load flows and the intent catalogue, validating every intent's flow name."""
    load_all()
    known = set(flows()) | set(BUILTIN_COMMANDS)
    intents = load_intents(config.path(config.bot.intents_dir), known)
    return IntentMatcher(intents, accept=config.bot.fuzzy_accept, suggest=config.bot.fuzzy_suggest)


async def build_runtime(config: Config, *, clock: Clock | None = None, db: Database | None = None,
                        check_schema: bool = True) -> Runtime:
    """Open the database (checking its schema), load intents and flows, run start-up hooks."""
    clock = clock or SystemClock()
    db = db or Database(config.database.url, echo=config.database.echo, pool_size=config.database.pool_size,
                        sqlite_synchronous=config.database.sqlite_synchronous)
    try:
        if check_schema:
            await db.check_schema()
        matcher = load_matcher(config)
        services = Services(config=config, clock=clock, db=db)
        services.extra["matcher"] = matcher
        if config.bot.fallback_flow not in flows():
            from flows.api import FlowError

            raise FlowError(f"bot.fallback_flow: no flow named {config.bot.fallback_flow!r}; "
                            f"known: {', '.join(sorted(flows()))}")
        for hook in startup_hooks():
            await hook(services)
    except BaseException:
        await db.close()
        raise
    dispatcher = Dispatcher(db, services, matcher, clock)
    runtime = Runtime(config, db, clock, services, matcher, dispatcher)
    if config.speech.webhook_url:
        # Voice messages without WeChat's Recognition go to our recogniser first (bot/voice.py).
        from bot.voice import VoicePipeline

        services.extra["voice"] = voice = VoicePipeline.build(config, db)
        runtime.extra.setdefault("closers", []).append(voice.close)
    return runtime


def _web_modules() -> list[Any]:
    import bot.web

    return [importlib.import_module(m.name) for m in pkgutil.iter_modules(bot.web.__path__, prefix="bot.web.")]


def create_app(runtime: Runtime, *, background: bool = True) -> web.Application:
    """The aiohttp application: the WeChat callback, health check and the mobile pages.

    With ``background`` the outbox sender and the scheduler run inside the app's lifetime.
    """
    cfg = runtime.config
    # lingering_time=0: a request whose body a handler left unread (refused before reading it, or a body
    # aiohttp cannot decode) closes its connection after the answer, instead of aiohttp reading and
    # discarding up to 10 s more of it, which for an undecodable body ended in an "Unhandled exception"
    # and a dropped answer. WeChat's callbacks and the pages' forms are always read whole.
    app = web.Application(client_max_size=cfg.server.max_body_bytes, handler_args={"lingering_time": 0})
    app[RUNTIME] = runtime
    gateway = Gateway(cfg, runtime.dispatcher)
    app[GATEWAY] = gateway
    app.router.add_get(cfg.server.path, gateway.verify_url)
    app.router.add_post(cfg.server.path, gateway.receive)

    async def health(_: web.Request) -> web.Response:
        await runtime.db.ping()
        return web.json_response({"ok": True})

    app.router.add_get("/healthz", health)
    for mod in _web_modules():
        setup = getattr(mod, "setup", None)
        if setup is not None:
            setup(app, runtime)
    if background:
        from bot.background import background_context

        app.cleanup_ctx.append(background_context)
    return app
