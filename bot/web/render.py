"""Jinja2 rendering for the staff console (and, later, the member pages): one layout, one stylesheet.

Templates live in ``bot/web/templates`` (``base.html`` is the layout every page extends), static files
in ``bot/web/static`` (served by :mod:`bot.web.static` under ``/static/``, nothing from elsewhere: many
bureau networks are closed). Autoescape is on for every template, so text people typed (a notice, a
寄语, a name) can never become markup; ``StrictUndefined`` makes a misspelt variable an error in the
tests instead of an empty spot on a page.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from bot.clock import fmt_local

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
#: What a page may load, for every console response (no inline script or style anywhere).
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


@lru_cache(maxsize=64)
def static_version(name: str) -> str:
    """A short content hash of a static file (its URL changes when the file does: safe to cache long)."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:10]


def static_url(name: str) -> str:
    return f"/static/{name}?v={static_version(name)}"


def mask_phone(phone: str | None) -> str:
    """138****1234 (the users list); full numbers only where staff need to call (boards, reports)."""
    return f"{phone[:3]}****{phone[-4:]}" if phone and len(phone) == 11 else (phone or "")


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The one Jinja2 environment (autoescape on, strict undefined)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["static"] = static_url
    env.filters["mask_phone"] = mask_phone
    env.filters["nl"] = lambda text: Markup("<br>").join(str(text or "").split("\n"))
    return env


def html(name: str, /, *, status: int = 200, tz: str = "Asia/Shanghai", headers: dict[str, str] | None = None,
         **context: Any) -> web.Response:
    """Render ``name`` with ``context`` (plus ``local(dt, fmt)`` in the bot's time zone) as a response."""
    def local(when: Any, pattern: str = "%Y-%m-%d %H:%M") -> str:
        return fmt_local(when, tz, pattern) if when is not None else ""

    text = environment().get_template(name).render(local=local, **context)
    base = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin", "Content-Security-Policy": CSP}
    base.update(headers or {})
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=base)


#: A member page's policy: no script at all (the pages have none) unless it shows the 订阅通知 button;
#: images may come over https (a martyr's photo_url points at another host).
MEMBER_CSP = ("default-src 'self'; img-src 'self' https: data:; style-src 'self'; script-src 'none'; "
              "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def member(name: str, /, *, request: web.Request | None = None, status: int = 200, tz: str = "Asia/Shanghai",
           headers: dict[str, str] | None = None, **context: Any) -> web.Response:
    """A member page (``templates/member/``): like :func:`html`, with no Referer ever sent (tokens ride in
    these pages' URLs), no script (:data:`MEMBER_CSP`; ``headers`` may tighten it) and, where the page shows
    WeChat's 订阅通知 button, the wider policy it needs (:func:`bot.web.allow_wechat_sdk`). ``refresh``
    (seconds) adds a meta refresh."""
    from bot.web import PAGE_CSP

    base = {"Referrer-Policy": "no-referrer", "Content-Security-Policy": MEMBER_CSP, **(headers or {})}
    if request is not None and request.get(PAGE_CSP):
        base["Content-Security-Policy"] = request[PAGE_CSP]
    context.setdefault("refresh", None)
    return html(name, status=status, tz=tz, headers=base, **context)
