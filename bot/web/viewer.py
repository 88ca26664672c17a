"""Who is looking at a member page: the person a link was sent to, someone it was forwarded to, or staff.

A link alone never makes its opener the person it names (a member forwards a call-up link to a group
chat; anyone could answer as them). Before a page shows or records anything for a person, :func:`gate`
learns who the viewer is:

* **Inside WeChat** (User-Agent ``MicroMessenger``) through OAuth 网页授权 with ``snsapi_base`` (silent: no
  prompt): the browser goes to ``{wechat.oauth_base}/connect/oauth2/authorize?…#wechat_redirect``, WeChat
  sends it back to ``/oauth/wechat?code=…&state=…``, and the code is traded at
  ``sns/oauth2/access_token`` (:meth:`bot.wechat_api.WeChatClient.oauth_openid`) for the viewer's openid.
  The ``state`` is a single-use token in the database, tied to the browser by a cookie (a login CSRF
  cannot plant someone else's identity). A viewer whose openid is not the person's gets "此链接是发给别人的"
  and nothing is recorded.
* **Outside WeChat** (an SMS link), or for a person without WeChat: the last four digits of the phone on
  file, at most :data:`DIGIT_TRIES` wrong answers per person an hour (``page_gate_attempts``).

Either way the result is a short viewer session: a random HttpOnly cookie (``SameSite=Lax``, ``Secure``
on https) naming a ``link_tokens`` row of kind ``page_viewer`` with the verified openid or member id,
for :data:`VIEWER_TTL`. Only hashes are stored.

:func:`staff_viewer` is the roster's check: a viewer with the staff role (OAuth inside WeChat).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from bot.web.render import member
from bot.wechat_api import MemoryTokenStore, WeChatClient, WeChatError
from storage import linktokens

log = logging.getLogger("vetbot.web.viewer")

VIEWER_COOKIE = "vb_who"
STATE_COOKIE = "vb_oauth"
VIEWER_KIND = "page_viewer"
STATE_KIND = "oauth_state"
#: How long a verified viewer stays verified in this browser.
VIEWER_TTL = timedelta(hours=2)
STATE_TTL = timedelta(minutes=10)
#: Wrong phone digits allowed per person in :data:`DIGIT_WINDOW`.
DIGIT_TRIES = 5
DIGIT_WINDOW = timedelta(hours=1)
CALLBACK = "/oauth/wechat"
NOT_YOURS = "此链接是发给别人的"
CLIENT = web.AppKey("oauth_client", WeChatClient)


@dataclass(frozen=True)
class Person:
    """Whom a link is for: a member (``member_id``, with their ``phone``) and/or a WeChat user."""

    openid: str | None
    member_id: int | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Viewer:
    """Who this browser was shown to be: an openid (WeChat OAuth) or a member (phone digits)."""

    openid: str | None
    member_id: int | None
    via: str

    def is_(self, person: Person) -> bool:
        if self.openid and person.openid and self.openid == person.openid:
            return True
        return self.member_id is not None and self.member_id == person.member_id


def in_wechat(request: web.Request) -> bool:
    """Whether the page is opened in WeChat's own browser."""
    return "MicroMessenger" in request.headers.get("User-Agent", "")


def _secure(runtime: Any) -> bool:
    return runtime.config.server.public_url.lower().startswith("https://")


def oauth_ready(runtime: Any) -> bool:
    """OAuth can be used: switched on and the account's appid and AppSecret are set."""
    w = runtime.config.wechat
    return bool(w.oauth and w.appid and w.secret and w.oauth_base)


async def current(runtime: Any, request: web.Request) -> Viewer | None:
    """The verified viewer of this browser, or None."""
    raw = request.cookies.get(VIEWER_COOKIE)
    if not linktokens.looks_like_token(raw):
        return None
    async with runtime.db.session() as s:
        try:
            row = await linktokens.resolve(s, raw, VIEWER_KIND, runtime.clock.now())
        except linktokens.LinkTokenError:
            return None
    data = row.data or {}
    member = data.get("m")
    return Viewer(row.openid or None, member if isinstance(member, int) else None, str(data.get("via", "")))


async def _remember(runtime: Any, resp: web.StreamResponse, openid: str | None, member_id: int | None,
                    via: str) -> None:
    async def write(s: Any) -> str:
        return await linktokens.issue(s, VIEWER_KIND, openid or "", {"m": member_id, "via": via}, VIEWER_TTL,
                                      now=runtime.clock.now())

    token = await runtime.db.transaction(write)
    resp.set_cookie(VIEWER_COOKIE, token, path="/", httponly=True, samesite="Lax", secure=_secure(runtime),
                    max_age=int(VIEWER_TTL.total_seconds()))


def _local_path(path: str) -> str:
    """Only a path on this site may be returned to (never ``//host`` or a scheme)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


async def start_oauth(runtime: Any, request: web.Request) -> web.Response:
    """Send WeChat's browser to the authorize page; it comes back to :data:`CALLBACK`."""
    cfg = runtime.config
    browser = secrets.token_urlsafe(18)
    async def write(s: Any) -> str:
        return await linktokens.issue(s, STATE_KIND, "", {"next": _local_path(request.path_qs),
                                                           "b": linktokens.token_hash(browser)},
                                      STATE_TTL, now=runtime.clock.now(), single_use=True)

    state = await runtime.db.transaction(write)
    back = cfg.server.public_url.rstrip("/") + CALLBACK
    query = urlencode({"appid": cfg.wechat.appid, "redirect_uri": back, "response_type": "code",
                       "scope": "snsapi_base", "state": state}, quote_via=quote)
    url = f"{cfg.wechat.oauth_base.rstrip('/')}/connect/oauth2/authorize?{query}#wechat_redirect"
    resp = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
    resp.set_cookie(STATE_COOKIE, browser, path=CALLBACK, httponly=True, samesite="Lax", secure=_secure(runtime),
                    max_age=int(STATE_TTL.total_seconds()))
    return resp


def problem(status: int, title: str, text: str) -> web.Response:
    """A member page saying what went wrong and what to do (no data of anyone)."""
    return member("member/message.html", status=status, title=title, text=text, kind="err")


def not_yours() -> web.Response:
    """The page for a viewer who is not the link's person; the caller records nothing."""
    return problem(403, NOT_YOURS, "这个链接是发给另一位队员的，您不能用它回复。"
                                   "如果您也收到了通知，请点开发给您自己的链接，或在公众号里直接回复。")


async def gate(runtime: Any, request: web.Request, person: Person) -> Viewer | web.Response:
    """The viewer when they are ``person``; otherwise the response to send (an OAuth redirect, the
    phone-digits form, or "此链接是发给别人的"). Call it for every GET and POST of a personal page."""
    viewer = await current(runtime, request)
    if viewer is not None and viewer.is_(person):
        return viewer
    wechat = in_wechat(request) and oauth_ready(runtime)
    if person.openid and wechat:
        if viewer is not None and viewer.openid:
            return not_yours()
        return await start_oauth(runtime, request)
    if person.phone and person.member_id is not None:
        return digits_form(request, runtime)
    if person.openid and in_wechat(request):
        return problem(403, "无法确认身份", "请稍后重新打开这个链接。")
    return problem(403, "请在微信里打开", "这个链接需要在微信里打开：请在公众号的消息里点开它。")


def digits_form(request: web.Request, runtime: Any, *, error: str = "", status: int = 200) -> web.Response:
    """Ask for the last four digits of the phone on file; posts to the same page with ``gate=digits``."""
    return member("member/digits.html", status=status, title="确认身份", action=request.path, error=error)


async def check_digits(runtime: Any, request: web.Request, person: Person, digits: str) -> web.Response:
    """Answer a POST of the digits form: on the right digits a redirect back to the page (GET) with the
    viewer cookie set; otherwise the form again with what to do. Rate-limited per person:
    :data:`DIGIT_TRIES` wrong answers an hour, counted in the database (any process, any browser)."""
    if person.member_id is None or not person.phone:
        return problem(403, "无法确认身份", "这个链接不能用手机号确认。请在微信里打开。")
    key = f"m:{person.member_id}"
    now = runtime.clock.now()
    digits = digits.strip()

    async def attempt(s: Any) -> int | None:
        """None when locked; 0 when right; else the failures in the window so far."""
        if await linktokens.gate_locked(s, key, now, DIGIT_TRIES):
            return None
        ok = len(digits) == 4 and digits.isascii() and digits.isdigit() and secrets.compare_digest(
            digits, person.phone[-4:])
        return 0 if ok else await linktokens.gate_failed(s, key, now, DIGIT_WINDOW)

    n = await runtime.db.transaction(attempt)
    if n is None or n >= DIGIT_TRIES:
        return digits_form(request, runtime, status=429, error="错误次数太多，请一小时后再试，或联系队长、工作人员。")
    if n:
        return digits_form(request, runtime, status=400,
                           error=f"号码不对，请再试一次（还可以试 {DIGIT_TRIES - n} 次）。")
    resp = web.Response(status=303, headers={"Location": request.path_qs})
    await _remember(runtime, resp, None, person.member_id, "digits")
    return resp


async def staff_viewer(runtime: Any, request: web.Request) -> Viewer | web.Response:
    """A viewer with the staff role (OAuth in WeChat), or the response to send instead."""
    viewer = await current(runtime, request)
    if viewer is None or not viewer.openid:
        if in_wechat(request) and oauth_ready(runtime):
            return await start_oauth(runtime, request)
        return problem(403, "仅限工作人员", "这个页面只给工作人员看。请在微信里打开，或登录工作人员后台查看。")
    from storage.models import User

    async with runtime.db.session() as s:
        user = await s.get(User, viewer.openid)
        staff = user is not None and user.has_role("staff")
    if not staff:
        return problem(403, "仅限工作人员", "这个页面只给工作人员看。")
    return viewer


def setup(app: web.Application, runtime: Any) -> None:
    """The OAuth callback ``/oauth/wechat`` and the client that trades codes."""
    w = runtime.config.wechat
    client = WeChatClient(w.api_base, w.appid, w.secret, MemoryTokenStore(), timeout=w.timeout_s)
    app[CLIENT] = client

    async def _close(_: web.Application) -> None:
        await client.close()

    app.on_cleanup.append(_close)

    async def callback(request: web.Request) -> web.StreamResponse:
        code, state = request.query.get("code", ""), request.query.get("state", "")
        browser = request.cookies.get(STATE_COOKIE, "")
        now = runtime.clock.now()
        async def take(s: Any) -> Any:
            try:
                return await linktokens.resolve(s, state, STATE_KIND, now, consume=True)
            except linktokens.LinkTokenError:
                return None

        row = await runtime.db.transaction(take)
        data = (row.data or {}) if row is not None else {}
        if row is None or not browser or data.get("b") != linktokens.token_hash(browser) or not code:
            return problem(400, "没能确认身份", "请回到微信消息里，重新点开链接。")
        try:
            openid = await client.oauth_openid(code)
        except WeChatError as e:
            log.warning("OAuth code exchange refused: %s", e.errcode)
            return problem(400, "没能确认身份", "请回到微信消息里，重新点开链接。")
        resp = web.Response(status=303, headers={"Location": _local_path(str(data.get("next") or "/"))})
        resp.del_cookie(STATE_COOKIE, path=CALLBACK)
        await _remember(runtime, resp, openid, None, "oauth")
        return resp

    app.router.add_get(CALLBACK, callback)
