"""订阅通知 on the pages: the subscribe button other pages include, the page chat links to, and the full
text of a push whose template fields could not hold it.

* :func:`subscribe_button` — HTML of WeChat's ``wx-open-subscribe`` button for the 订阅通知 templates of
  some push purposes, with its ``wx.config`` (JS-SDK signature, :mod:`bot.jssdk`). WeChat shows its own
  popup; the person's choice reaches us as ``subscribe_msg_popup_event`` (recorded in
  :mod:`flows.notices`, for the openid WeChat names, whoever was sent the link). The button exists only
  inside WeChat (User-Agent ``MicroMessenger``): elsewhere the page carries no WeChat script at all.
  Pages pass it to their template as ``Markup(await subscribe_button(request, runtime, ["callup"]))``.
* ``GET /notices/<token>`` — the page the chat offers when someone subscribes to job alerts or
  reminders (:func:`flows.notices.offer`; an opaque token in the database naming the person): what each
  notice is for, whether it is on (shown only to the person, as WeChat OAuth tells), and the button.
* ``GET /msg/<token>`` — a push's whole text (signed claims naming the push, no person): the link of a
  template message or 订阅通知 that has no page of its own (a late reply), since its fields show 20
  characters each; shown only to the person the push went to, as WeChat OAuth tells (:mod:`bot.web.viewer`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from markupsafe import Markup

from bot.jssdk import JsSdk
from bot.links import LinkError, verify
from bot.web import allow_wechat_sdk, viewer
from bot.web.render import environment
from bot.web.render import member as render_member
from bot.wechat_api import WeChatError
from flows.notices import NOTICES_KIND, PURPOSE_WORDS
from storage import linktokens
from storage import subscribe as consent
from storage.models import OutboxMessage

log = logging.getLogger("vetbot.web.notices")

JSSDK = web.AppKey("jssdk", JsSdk)
#: The JS-SDK WeChat serves (open tags need 1.6.0 or later).
JSSDK_URL = "https://res.wx.qq.com/open/js/jweixin-1.6.0.js"

_BUTTON_STYLE = (".vb-sub{display:block;width:100%;font-size:22px;padding:16px;border:0;border-radius:12px;"
                 "background:#07c160;color:#fff;font-weight:600}")


def in_wechat(request: web.Request) -> bool:
    """Whether the page is being opened inside WeChat's browser (where open tags work)."""
    return "MicroMessenger" in request.headers.get("User-Agent", "")


def page_url(runtime: Any, request: web.Request) -> str:
    """The page's address as the phone sees it (``server.public_url`` + path and query): what WeChat
    checks the ``wx.config`` signature against (behind a proxy ``request.url`` is the inner address)."""
    return runtime.config.server.public_url.rstrip("/") + request.path_qs


def _js(value: Any) -> str:
    """A JSON value safe inside an inline <script>."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace(
        "&", "\\u0026")


def subscribe_templates(config: Any, purposes: Sequence[str]) -> dict[str, list[str]]:
    """The 订阅通知 template ids of ``purposes``, grouped by kind (WeChat refuses one button that mixes
    one-time and long-term templates, error 20002)."""
    groups: dict[str, list[str]] = {}
    for p in purposes:
        spec = config.templates.get(p)
        sub = spec.subscribe if spec is not None else None
        if sub is not None and sub.template_id and sub.template_id not in groups.get(sub.kind, []):
            groups.setdefault(sub.kind, []).append(sub.template_id)
    return groups


async def subscribe_button(request: web.Request, runtime: Any, purposes: Sequence[str], *,
                           label: str = "开启消息提醒", outside: str = "") -> str:
    """HTML of the 订阅通知 button for ``purposes`` ("" when none has a 订阅通知 template; ``outside`` when
    the page is not opened in WeChat; "" when the JS-SDK ticket cannot be had, which is logged)."""
    groups = subscribe_templates(runtime.config, purposes)
    if not groups:
        return ""
    if not in_wechat(request):
        return outside
    jssdk = request.app.get(JSSDK)
    if jssdk is None:
        return ""
    try:
        conf = await jssdk.config_for(page_url(runtime, request))
    except WeChatError as e:
        log.warning("no 订阅通知 button: the JS-SDK ticket could not be had (%s)", e)
        return ""
    config = {**conf, "jsApiList": ["checkJsApi"], "openTagList": ["wx-open-subscribe"], "debug": False}
    # The settings travel as a JSON data block (never run) and /static/subscribe.js applies them: the
    # page's CSP then needs to allow only this origin's script and WeChat's JS-SDK (allow_wechat_sdk).
    allow_wechat_sdk(request)
    return environment().get_template("member/_subscribe.html").render(
        groups=list(groups.values()), style=Markup(_BUTTON_STYLE), label=label, config=Markup(_js(config)),
        sdk=JSSDK_URL)


def setup(app: web.Application, runtime: Any) -> None:
    """The JS-SDK helper for every page, ``/notices/<token>`` and ``/msg/<token>``."""
    jssdk = JsSdk(runtime.config, runtime.db)
    app[JSSDK] = jssdk

    async def _close(_: web.Application) -> None:
        await jssdk.close()

    app.on_cleanup.append(_close)

    async def notices_page(request: web.Request) -> web.Response:
        token = request.match_info.get("token", "")
        if "." in token:  # a signed link of earlier releases (its claims named the person readably)
            return viewer.problem(410, "链接已过期", "这个链接已经过期。请回到公众号里重新获取。")
        async with runtime.db.session() as s:
            try:
                row = await linktokens.resolve(s, token, NOTICES_KIND, runtime.clock.now())
            except linktokens.LinkTokenError as e:
                if e.reason == "expired":
                    return viewer.problem(410, "链接已过期", "这个链接已经过期。请回到公众号里重新获取。")
                return viewer.problem(400, "链接无效", "这个链接不完整或已损坏。请从公众号消息里重新点开。")
        openid = row.openid
        purposes = [p for p in str((row.data or {}).get("p", "")).split(",") if p in PURPOSE_WORDS]
        groups = subscribe_templates(runtime.config, purposes)
        if not groups:
            return viewer.problem(404, "暂未开通", "消息提醒暂未开通，有消息时我们会在公众号里告诉您。")
        if in_wechat(request):  # whose consents are shown: the person's, as WeChat OAuth tells
            seen = await viewer.gate(runtime, request, viewer.Person(openid))
            if isinstance(seen, web.Response):
                return seen
        ids = [t for ids in groups.values() for t in ids]
        async with runtime.db.session() as s:
            on = await consent.accepted(s, openid, ids) if in_wechat(request) else set()
        rows = []
        for p in purposes:
            sub = runtime.config.templates[p].subscribe
            if sub is None or not sub.template_id:
                continue
            state = ("long" if sub.template_id in on and sub.kind == "long_term"
                     else "once" if sub.template_id in on else "off")
            rows.append((PURPOSE_WORDS[p], state))
        button = await subscribe_button(request, runtime, purposes)
        return render_member("member/notices.html", request=request, title="开启消息提醒", rows=rows,
                             subscribe=Markup(button))

    async def message_page(request: web.Request) -> web.Response:
        try:
            claims = verify(runtime.config, request.match_info.get("token", ""))
        except LinkError as e:
            if e.reason == "expired":
                return viewer.problem(410, "链接已过期", "这个链接已经过期。请回到公众号里重新获取。")
            return viewer.problem(400, "链接无效", "这个链接不完整或已损坏。请从公众号消息里重新点开。")
        row_id = claims.get("o")
        if claims.get("k") != "msg" or not isinstance(row_id, int):
            return viewer.problem(400, "链接无效", "这个链接不完整或已损坏。请从公众号消息里重新点开。")
        async with runtime.db.session() as s:
            row = await s.get(OutboxMessage, row_id)
        if row is None or ("u" in claims and row.openid != claims["u"]):
            return viewer.problem(404, "消息不存在", "这条消息已不存在。如有疑问，请在公众号里回复“人工”。")
        # The link names the push, not the person: the text is shown to the person WeChat OAuth names.
        seen = await viewer.gate(runtime, request, viewer.Person(row.openid))
        if isinstance(seen, web.Response):
            return seen
        payload = row.payload or {}
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        from bot.outbox import PURPOSE_TITLES

        title = str(data.get("title") or PURPOSE_TITLES.get(row.purpose) or "消息")
        link = payload.get("url")
        return render_member("member/msg.html", request=request, title=title, text=str(payload.get("text") or ""),
                             link=link if isinstance(link, str) and link.startswith(("http://", "https://")) else "")

    app.router.add_get("/notices/{token}", notices_page)
    app.router.add_get("/msg/{token}", message_page)
