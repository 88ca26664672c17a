"""Assembling the runtime: database, flows, intents, dispatcher, gateway, web pages, background loops."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

import bot.ticks  # noqa: F401 - the core ticks, registered wherever a runtime is built (serve, chat, tests)
from bot.clock import Clock, SystemClock
from bot.config import Config
from bot.dispatcher import BUILTIN_COMMANDS, Dispatcher
from bot.gateway import Gateway
from bot.httpserver import GUARD, ConnectionGuard, guard_middleware, quiet_client_errors
from bot.intents import IntentMatcher, load_intents
from bot.understanding import Understanding, understanding_for
from flows.api import Services, flows, load_all, startup_hooks
from storage.db import Database, DatabaseUnavailable, is_conflict

if TYPE_CHECKING:
    from bot.outbox import OutboxSender

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
    #: The outbox sender of this process, while the web app's background loops run (bot/background.py).
    outbox_sender: OutboxSender | None = None
    #: ``async fn()`` run by :meth:`close`, last added first (the voice pipeline's HTTP client …).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for closer in reversed(self.closers):
            await closer()
        await self.dispatcher.close()
        await self.db.close()


RUNTIME = web.AppKey("runtime", Runtime)
GATEWAY = web.AppKey("gateway", Gateway)


def known_flow_names() -> set[str]:
    """Every flow an intent may name (registered flows and the dispatcher's own commands)."""
    load_all()
    return set(flows()) | set(BUILTIN_COMMANDS)


def load_matcher(config: Config) -> IntentMatcher:
    """Load flows and the intent catalogue, validating every intent's flow name."""
    known = known_flow_names()
    intents = load_intents(config.path(config.bot.intents_dir), known)
    return IntentMatcher(intents, accept=config.bot.fuzzy_accept, suggest=config.bot.fuzzy_suggest)


async def understanding_of(matcher: IntentMatcher, services: Services) -> Understanding:
    """The understanding layer over the catalogue and the Q&A engine (built in a thread, once per process:
    calibrating embeds every example)."""
    import asyncio

    engine = services.qa_engine
    if engine is None and services.config.qa.kb:
        from flows.policy_qa.flow import engine_of

        engine = await engine_of(services)
    return await asyncio.to_thread(understanding_for, matcher, engine)


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
        services = Services(config=config, clock=clock, db=db, matcher=matcher)
        if config.bot.fallback_flow not in flows():
            from flows.api import FlowError

            raise FlowError(f"bot.fallback_flow: no flow named {config.bot.fallback_flow!r}; "
                            f"known: {', '.join(sorted(flows()))}")
        for hook in startup_hooks():
            await hook(services)
        understanding = await understanding_of(matcher, services)
    except BaseException:
        await db.close()
        raise
    dispatcher = Dispatcher(db, services, matcher, clock)
    dispatcher.understanding = understanding
    runtime = Runtime(config, db, clock, services, matcher, dispatcher)
    if config.speech.webhook_url:
        # Voice messages without WeChat's Recognition go to our recogniser first (bot/voice.py).
        from bot.voice import VoicePipeline

        dispatcher.voice = voice = VoicePipeline.build(config, db)
        runtime.closers.append(voice.close)
    return runtime


def _web_modules() -> list[Any]:
    import bot.web

    return [importlib.import_module(m.name) for m in pkgutil.iter_modules(bot.web.__path__, prefix="bot.web.")]


#: Every response: no framing (clickjacking), no MIME sniffing, no Referer (signed tokens ride in page
#: URLs), and a policy that allows only this origin's styles and forms and no script at all (the pages
#: have none). Images may also come over https: a martyr's photo_url points at another host.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' https: data:; script-src 'none'; "
                                "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_PREFIX = "/static/"

BUSY_CSS = ('body{margin:0;padding:24px 16px;font-family:-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;'
            "font-size:22px;line-height:1.6;background:#f4f5f7;color:#1d1d1f}h1{font-size:28px;margin:0 0 12px}")
BUSY_PAGE_TITLE = "系统繁忙"
BUSY_PAGE_TEXT = "系统繁忙，请稍后再试。您刚才的操作没有完成，请过一会儿重新打开或再点一次。"
CONFLICT_PAGE_TEXT = "刚才同一时间提交的操作太多，这次没有记下。请返回上一页，再点一次。"
ERROR_PAGE_TITLE = "出错了"
ERROR_PAGE_TEXT = "系统出错了，您刚才的操作可能没有完成。请稍后再试，或在公众号里回复“人工”告诉工作人员。"


def busy_page(text: str = BUSY_PAGE_TEXT, status: int = 503, title: str = BUSY_PAGE_TITLE) -> web.Response:
    """The Chinese page for a request that could not be done (database down, a deadlock, a bug)."""
    import html

    from bot.web import stylesheet

    doc = ('<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
           '<meta name="viewport" content="width=device-width,initial-scale=1">'
           f"<title>{title}</title>{stylesheet('busy', BUSY_CSS)}</head><body>"
           f"<h1>{title}</h1><p>{html.escape(text)}</p></body></html>")
    return web.Response(text=doc, status=status, content_type="text/html", charset="utf-8",
                        headers={"Retry-After": "5"} if status == 503 else None)


def _translate(request: web.Request, e: Exception) -> web.StreamResponse:
    """No English "500": a database outage or a conflict gets a Chinese 503 page (JSON for /healthz), a
    bug a Chinese 500 page (its traceback goes to the log). The callback handles its own database
    trouble (it answers the user in chat)."""
    if not isinstance(e, (DatabaseUnavailable, SQLAlchemyError, OSError)):
        log.exception("%s %s failed", request.method, request.path)
        if request.path == "/healthz":
            return web.json_response({"ok": False, "error": "internal"}, status=500)
        return busy_page(ERROR_PAGE_TEXT, status=500, title=ERROR_PAGE_TITLE)
    conflict = is_conflict(e)  # outlived Database.transaction's retries
    log.error("%s %s: %s (%s)", request.method, request.path,
              "conflict after retries" if conflict else "database problem", type(e).__name__)
    if request.path == "/healthz":
        return web.json_response({"ok": False, "error": "database"}, status=503)
    return busy_page(CONFLICT_PAGE_TEXT if conflict else BUSY_PAGE_TEXT)


_NO_STORE = {**SECURITY_HEADERS, "Cache-Control": "no-store"}


def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Pages carry names, phones and 寄语; a signed link must not leave a copy in a shared cache.
    # A page that sets a header itself keeps its own value: the staff console's policy lets its own
    # scripts run (script-src 'self'), 我的数据 has a stricter one. Every response still gets each header.
    from bot.web import PAGE_CSP

    page_csp = request.get(PAGE_CSP)  # a page with WeChat's 订阅通知 button (bot.web.allow_wechat_sdk)
    if page_csp:
        response.headers.setdefault("Content-Security-Policy", page_csp)
    for name, value in (SECURITY_HEADERS if request.path.startswith(STATIC_PREFIX) else _NO_STORE).items():
        response.headers.setdefault(name, value)


MODULE_SHEETS = web.AppKey("module_sheets", dict)


def _stylesheets(app: web.Application, modules: list[Any]) -> None:
    """Collect each web module's ``CSS``; :mod:`bot.web.static` serves them at ``/static/<module>.css``
    beside the files of ``bot/web/static`` (the CSP allows no inline styles; the pages link them with
    :func:`bot.web.stylesheet`)."""
    sheets: dict[str, bytes] = {"busy.css": BUSY_CSS.encode()}  # needs no database
    for mod in modules:
        css = getattr(mod, "CSS", None)
        if isinstance(css, str):
            sheets[f"{mod.__name__.rsplit('.', 1)[-1]}.css"] = css.encode()
    app[MODULE_SHEETS] = sheets


def create_app(runtime: Runtime, *, background: bool = True) -> web.Application:
    """The aiohttp application: the WeChat callback, health check and the mobile pages.

    With ``background`` the outbox sender and the scheduler run inside the app's lifetime.
    """
    cfg = runtime.config
    quiet_client_errors()
    # lingering_time=0: a request whose body a handler left unread (refused before reading it, or a body
    # aiohttp cannot decode) closes its connection after the answer, instead of aiohttp reading and
    # discarding up to 10 s more of it, which for an undecodable body ended in an "Unhandled exception"
    # and a dropped answer. WeChat's callbacks and the pages' forms are always read whole.
    # keepalive_timeout: aiohttp's default keeps an idle connection an hour (server.keepalive_timeout_s).
    guard = ConnectionGuard(cfg.server)
    app = web.Application(client_max_size=cfg.server.max_body_bytes,
                          middlewares=[guard_middleware(guard, _translate, _security_headers)],
                          handler_args={"lingering_time": 0, "keepalive_timeout": cfg.server.keepalive_timeout_s})
    app[GUARD] = guard
    app[RUNTIME] = runtime
    gateway = Gateway(cfg, runtime.dispatcher)
    app[GATEWAY] = gateway
    app.router.add_get(cfg.server.path, gateway.verify_url)
    app.router.add_post(cfg.server.path, gateway.receive)

    async def health(_: web.Request) -> web.Response:
        await runtime.db.ping()
        return web.json_response({"ok": True})

    app.router.add_get("/healthz", health)
    modules = _web_modules()
    _stylesheets(app, modules)
    for mod in modules:
        setup = getattr(mod, "setup", None)
        if setup is not None:
            setup(app, runtime)
    if background:
        from bot.background import background_context

        app.cleanup_ctx.append(background_context)
    return app
