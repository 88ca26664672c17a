"""Web pages: the staff console (``bot/web/console``) and the member pages (answer and roster, memorial,
jobs, 订阅通知, 个人信息保护); each module has ``setup(app, runtime)``.

Every page is a Jinja2 template (``templates/``, autoescape on) extending ``base.html``, styled by the one
stylesheet ``static/vetbot.css`` (:mod:`bot.web.render`); member pages go through
:func:`bot.web.render.member` and learn who is looking through :mod:`bot.web.viewer`. A module may still
have a ``CSS`` string, served at ``/static/<module>.css`` and linked with :func:`stylesheet` (the busy
page, which must render without templates or database, does). A page that shows the 订阅通知 button calls
:func:`allow_wechat_sdk`, which widens that page's policy to WeChat's JS-SDK.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from aiohttp import web


@lru_cache(maxsize=32)
def stylesheet(module: str, css: str) -> str:
    """``<link>`` to ``module``'s stylesheet (``__name__`` of the page module and its ``CSS``), with a
    version so that a changed stylesheet is fetched anew despite caching."""
    name = module.rsplit(".", 1)[-1]
    return f'<link rel="stylesheet" href="/static/{name}.css?v={hashlib.sha1(css.encode()).hexdigest()[:10]}">'


#: Request key: the Content-Security-Policy this response gets when the page set none itself.
PAGE_CSP = web.RequestKey("vetbot_page_csp", str)
#: The policy of a page with WeChat's 订阅通知 open tag: the JS-SDK from res.wx.qq.com and this origin's
#: scripts, and inline style for the tag's own template (WeChat renders it); nothing else is widened.
WECHAT_SDK_CSP = ("default-src 'self'; img-src 'self' https: data:; script-src 'self' https://res.wx.qq.com; "
                  "style-src 'self' 'unsafe-inline'; connect-src 'self' https://*.weixin.qq.com https://*.qq.com; "
                  "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def allow_wechat_sdk(request: Any) -> None:
    """Let this response load WeChat's JS-SDK (the page shows a ``wx-open-subscribe`` button)."""
    request[PAGE_CSP] = WECHAT_SDK_CSP
