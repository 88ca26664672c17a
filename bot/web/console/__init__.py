"""The staff console under ``/staff/``: login without passwords, dashboard, notices, call-ups, 寄语 review,
users and the audit log. Server-rendered (Jinja2, autoescape), one layout and stylesheet, no external
resources; every page works with the keyboard and on a phone.

Access is deny-by-default: :func:`bot.web.console.auth.guard` answers every ``/staff/…`` request without
a live session with a redirect to the login page (or 401/403 for data and form requests) before any
handler runs, except the few login URLs in :data:`bot.web.console.auth.PUBLIC`. A POST also needs the
session's CSRF token. Pages call the same feature services as the chat and the CLI.

Modules: :mod:`.auth` (login by QR or link, sessions, CSRF, logout), :mod:`.dashboard`, :mod:`.broadcasts`,
:mod:`.callups`, :mod:`.moderation`, :mod:`.users`, :mod:`.audit`, :mod:`.kb` (知识库),
:mod:`.uploads` (导入); :mod:`.base` holds what they share.
Later pages (the 人工 inbox) add a module and a :data:`.base.NAV` entry.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

#: The app's :class:`bot.web.console.base.Console` (tests wait for its background work).
CONSOLE: web.AppKey[Any] = web.AppKey("console", object)


def setup(app: web.Application, runtime: Any) -> None:
    """Mount the console (unless ``console.enabled`` is false)."""
    if not runtime.config.console.enabled:
        return
    from bot.web.console import audit, auth, broadcasts, callups, dashboard, kb, moderation, uploads, users
    from bot.web.console.base import Console

    console = Console(runtime)
    app[CONSOLE] = console
    app.middlewares.append(auth.guard(console))
    for mod in (auth, dashboard, broadcasts, callups, moderation, users, audit, kb, uploads):
        mod.routes(app, console)
    __import__("bot.web.console.inbox", fromlist=["routes"]).routes(app, console)  # 人工 (one line: merges cleanly)

    async def close(_: web.Application) -> None:
        await console.close()

    app.on_cleanup.append(close)
