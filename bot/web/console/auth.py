"""Logging in without passwords, sessions, CSRF, logout — and the guard in front of every ``/staff/`` URL.

**QR login.** ``GET /staff/login`` creates a temporary parameter QR code through the WeChat API (scene
``login:<random>``) and renders its URL as an inline SVG; the browser gets the attempt's poll secret in
an HttpOnly cookie (path ``/staff/login``) and ``/static/login.js`` polls ``/staff/login/poll``. The
staff member scans the code in WeChat; the bot (:mod:`flows.console`) checks the staff role and asks
them to confirm in chat; the next poll then spends the confirmed attempt, creates the session and sets
its cookie. Without JavaScript, a link to ``/staff/login/done`` does the same. A browser keeps its QR
code until it is close to expiry, and the process creates at most :data:`QR_PER_MINUTE` a minute, so
reloading the page cannot exhaust the account's QR quota.

**Link login.** ``/staff/login/link?t=…`` (from 登录后台 in chat or ``vetbot console link``) shows a
button; the POST spends the link (single use, expiring), so a link-preview robot that fetches the URL
does not use it up.

**Sessions** live in the database (only the digest of the cookie value is stored); the cookie is
HttpOnly, SameSite=Lax, ``Secure`` when ``server.public_url`` is https, and has no expiry date (it ends
with the browser). :func:`guard` checks idle time, absolute age and the staff role on every request.
**CSRF**: every form carries ``csrf`` = HMAC(server key, session id); a POST without the right one
(or from another site's page, by its ``Origin``) gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlparse

import segno
from aiohttp import web
from markupsafe import Markup

from bot.web.console.base import STAFF_KEY, Console, Staff, safe_next, see_other
from bot.web.render import CSP
from storage import console as store

log = logging.getLogger("vetbot.console")

COOKIE = "vetbot_staff"
LOGIN_COOKIE = "vetbot_login"
#: The only /staff/ URLs served without a session (each checks its own one-time secret).
PUBLIC = frozenset({"/staff/login", "/staff/login/poll", "/staff/login/done", "/staff/login/link"})
#: QR codes this process asks WeChat for per minute at most (each page load without a usable one).
QR_PER_MINUTE = 30
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: POSTs under this prefix carry a CSV file (导入): they may be up to :func:`upload_body_limit` long.
UPLOADS = "/staff/imports/"


#: An oversized upload's body is read and dropped up to this many bytes before the 413 page is sent.
DRAIN_MAX = 32 * 1024 * 1024


async def _drain(request: web.Request, at_most: int) -> None:
    got = 0
    while got < at_most:
        chunk = await request.content.readany()
        if not chunk:
            return
        got += len(chunk)


def upload_body_limit(config: Any) -> int:
    """Bytes an upload's request may have: the file (``console.upload_max_kb``) sent again base64-encoded
    by the confirmation step, plus the form around it."""
    return config.console.upload_max_kb * 1024 * 4 // 3 + 64 * 1024


def csrf_token(config: Any, raw_session: str) -> str:
    """The session's CSRF token: derived from the session id, never stored, never in a cookie."""
    from bot.links import _secret

    return hmac.new(_secret(config), b"csrf\x00" + raw_session.encode(), hashlib.sha256).hexdigest()[:40]


def _secure(config: Any) -> bool:
    return config.server.public_url.lower().startswith("https://")


def _client(request: web.Request) -> str:
    """'1.2.3.4 · Chrome / Windows': shown in the chat confirmation and the audit log."""
    addr = request.remote or ""
    fwd = request.headers.get("X-Forwarded-For", "")
    if fwd and addr in ("127.0.0.1", "::1", ""):  # behind the local proxy: its first hop is the browser
        addr = fwd.split(",")[0].strip()
    ua = request.headers.get("User-Agent", "")
    browser = next((name for key, name in (("MicroMessenger", "微信"), ("Edg/", "Edge"), ("Firefox/", "Firefox"),
                                           ("Chrome/", "Chrome"), ("Safari/", "Safari")) if key in ua), "浏览器")
    system = next((name for key, name in (("Windows", "Windows"), ("Android", "Android"), ("iPhone", "iPhone"),
                                          ("iPad", "iPad"), ("Mac OS", "Mac"), ("Linux", "Linux")) if key in ua), "")
    return f"{addr[:60]} · {browser}{' / ' + system if system else ''}"


def _set_session(resp: web.StreamResponse, config: Any, raw: str) -> None:
    resp.set_cookie(COOKIE, raw, path="/staff", httponly=True, samesite="Lax", secure=_secure(config))


def _headers(resp: web.StreamResponse) -> web.StreamResponse:
    for k, v in (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                 ("Referrer-Policy", "same-origin"), ("Content-Security-Policy", CSP)):
        resp.headers.setdefault(k, v)
    return resp


async def current(console: Console, request: web.Request) -> Staff | None:
    """The live session's staff member, or None (no cookie, unknown, idle, too old, role removed)."""
    raw = request.cookies.get(COOKIE, "")
    if not raw:
        return None
    now = console.now()
    idle = timedelta(minutes=console.cfg.console.session_idle_min)
    async with console.db.session() as s:
        found = await store.load_session(s, raw, now, idle)
        if found is None:
            return None
        sess, user = found
        await store.touch_session(s, sess, now)
        return Staff(user.openid, user.name or "", frozenset(user.role_set), csrf_token(console.cfg, raw), sess.id_hash)


def _wants_json(request: web.Request) -> bool:
    return request.path.endswith(".json") or "application/json" in request.headers.get("Accept", "")


def guard(console: Console) -> Any:
    """The middleware: no session, no page (and no data) under /staff/; POSTs need the CSRF token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path != "/staff" and not path.startswith("/staff/"):
            return await handler(request)
        if path in PUBLIC:
            return _headers(await handler(request))
        staff = await current(console, request)
        if staff is None:
            resp = _refuse(console, request)
            if request.cookies.get(COOKIE):  # a dead session: forget its cookie
                resp.del_cookie(COOKIE, path="/staff")
            return _headers(resp)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if path.startswith(UPLOADS):  # a CSV file may be larger than a WeChat callback
                limit = upload_body_limit(console.cfg)
                if (request.content_length or 0) > limit:
                    await _drain(request, DRAIN_MAX)  # so the browser shows the answer, not a reset connection
                    return _headers(console.message(request, 413, "文件太大", "文件超过了允许的大小（"
                                                    f"{console.cfg.console.upload_max_kb} KB），没有导入任何数据。"
                                                    "请把文件分成几份再导入。", back=request.path))
                request = request.clone(client_max_size=limit)
            problem = await _csrf_problem(console, request, staff)
            if problem:
                log.warning("console: refused a %s to %s: %s", request.method, path, problem)
                return _headers(console.message(request, 403, "无法提交", "页面已过期或来源不对，没有保存任何内容。"
                                                "请返回上一页，刷新后再试。", back="/staff/"))
        request[STAFF_KEY] = staff
        return _headers(await handler(request))

    return middleware


def _refuse(console: Console, request: web.Request) -> web.StreamResponse:
    """What a request without a session gets: nothing of the page it asked for."""
    if _wants_json(request):
        return web.json_response({"login": "/staff/login"}, status=401)
    if request.method in ("GET", "HEAD"):
        target = request.path_qs if safe_next(request.path_qs) else None
        loc = "/staff/login" + (f"?next={quote(target, safe='/')}" if target else "")
        return see_other(loc)
    return console.message(request, 403, "请先登录", "登录已过期，没有保存任何内容。请重新登录后再操作。",
                           back="/staff/login")


async def _csrf_problem(console: Console, request: web.Request, staff: Staff) -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = urlparse(origin).netloc
        if host not in (request.host, urlparse(console.cfg.server.public_url).netloc):
            return f"origin {origin!r} is another site"
    try:
        data = await request.post()
    except Exception:
        return "unreadable form"
    token = data.get("csrf") or request.headers.get("X-CSRF-Token") or ""
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), staff.csrf.encode()):
        return "missing or wrong CSRF token"
    return None


# ---------------------------------------------------------------------------------------------------
# Pages


def routes(app: web.Application, c: Console) -> None:
    """Login (QR and link), polling, logout."""
    cfg = c.cfg

    async def staff_root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(location="/staff/")

    async def login_page(request: web.Request) -> web.StreamResponse:
        nxt = safe_next(request.query.get("next"))
        if await current(c, request) is not None:
            raise web.HTTPSeeOther(location=nxt or "/staff/")
        now = c.now()
        poll = request.cookies.get(LOGIN_COOKIE, "")
        row = None
        if poll:
            async with c.db.session() as s:
                row = await store.qr_by_poll(s, poll)
            # Keep showing this browser's code while it has a minute left: reloading costs no new code.
            if row is None or row.state != store.NEW or row.expires_at - now < timedelta(seconds=60) or not row.qr_url:
                row = None
        problem = None
        new_poll = None
        if row is None:
            problem, created = await _new_qr(c, request, nxt)
            if created is not None:
                row, new_poll = created
        qr = _svg(row.qr_url) if row is not None and row.qr_url else None
        resp = c.page(request, "console/login.html", title="登录", qr=qr, problem=problem,
                      ttl_s=int((row.expires_at - now).total_seconds()) if row is not None else 0,
                      bye=request.query.get("bye") == "1", nxt=nxt,
                      done_url="/staff/login/done", link_ttl=cfg.console.link_ttl_min)
        if new_poll is not None:
            resp.set_cookie(LOGIN_COOKIE, new_poll, path="/staff/login", httponly=True, samesite="Strict",
                            secure=_secure(cfg), max_age=cfg.console.qr_ttl_s)
        return resp

    async def poll(request: web.Request) -> web.StreamResponse:
        state, resp = await _poll(c, request)
        if resp is not None:
            return resp
        return web.json_response({"state": state})

    async def done(request: web.Request) -> web.StreamResponse:
        """The no-JavaScript way to finish a QR login (the page links here)."""
        state, resp = await _poll(c, request, redirect=True)
        if resp is not None:
            return resp
        raise web.HTTPSeeOther(location="/staff/login" + ("?wait=1" if state in ("waiting", "scanned") else ""))

    async def link_page(request: web.Request) -> web.StreamResponse:
        raw = request.query.get("t", "")
        async with c.db.session() as s:
            state = await store.link_state(s, raw, c.now()) if 20 <= len(raw) <= 100 else "unknown"
        if state != "ok":
            return _link_problem(c, request, state)
        return c.page(request, "console/link.html", title="登录", token=raw)

    async def link_post(request: web.Request) -> web.StreamResponse:
        try:
            data = await request.post()
        except Exception:
            return c.message(request, 400, "无法登录", "提交的内容无法读取，请重新打开登录链接。")
        raw = data.get("t", "")
        raw = raw if isinstance(raw, str) and 20 <= len(raw) <= 100 else ""
        now = c.now()
        async with c.db.session() as s:
            openid = await store.use_link(s, raw, now) if raw else None
            if openid is None:
                state = await store.link_state(s, raw, now) if raw else "unknown"
                return _link_problem(c, request, state)
            session_raw = await _start_session(c, s, request, openid, "link")
        if session_raw is None:
            return c.message(request, 403, "无法登录", "这个微信号已没有工作人员权限。如需开通，请联系管理员。")
        resp = see_other("/staff/")
        _set_session(resp, cfg, session_raw)
        return resp

    async def logout(request: web.Request) -> web.StreamResponse:
        raw = request.cookies.get(COOKIE, "")
        staff: Staff = request[STAFF_KEY]
        async with c.db.session() as s:
            await store.end_session(s, raw)
            await store.audit(s, actor=staff.openid, actor_name=staff.name, action="console.logout", now=c.now(),
                              target_type="user", target_id=staff.openid, summary="退出后台")
        resp = see_other("/staff/login?bye=1")
        resp.del_cookie(COOKIE, path="/staff")
        return resp

    app.router.add_get("/staff", staff_root)
    app.router.add_get("/staff/login", login_page)
    app.router.add_get("/staff/login/poll", poll)
    app.router.add_get("/staff/login/done", done)
    app.router.add_get("/staff/login/link", link_page)
    app.router.add_post("/staff/login/link", link_post)
    app.router.add_post("/staff/logout", logout)


def _svg(url: str) -> Markup:
    """The QR code of ``url`` as inline SVG (no image host: bureau networks are closed)."""
    qr = segno.make(url, error="m", micro=False)
    return Markup(qr.svg_inline(scale=6, border=3, omitsize=True, svgclass="qr", title="微信扫码登录二维码"))


async def _new_qr(c: Console, request: web.Request, nxt: str | None) -> tuple[str | None, Any]:
    """Ask WeChat for a new login QR code; (problem text, None) when it cannot be had."""
    from bot.wechat_api import WeChatError

    mono = time.monotonic()
    while c.qr_times and mono - c.qr_times[0] > 60:
        c.qr_times.popleft()
    if len(c.qr_times) >= QR_PER_MINUTE:
        return "登录请求太多，请一分钟后刷新页面。也可以在微信里给公众号发送“登录后台”获取登录链接。", None
    c.qr_times.append(mono)
    scene, poll = store.new_secret(), store.new_secret()
    ttl = c.cfg.console.qr_ttl_s
    try:
        answer = await c.client().create_qrcode(f"login:{scene}", expire_seconds=ttl)
    except (WeChatError, ValueError) as e:
        log.error("console: could not create a login QR code: %s", e)
        return ("暂时无法生成登录二维码（微信接口没有响应或不允许）。请在微信里给公众号发送“登录后台”，"
                "用收到的链接登录。"), None
    now = c.now()
    async with c.db.session() as s:
        row = await store.create_qr(s, scene=scene, poll=poll, qr_url=str(answer["url"]), client=_client(request),
                                    next_path=nxt, now=now, ttl=timedelta(seconds=ttl))
    return None, (row, poll)


async def _poll(c: Console, request: web.Request, redirect: bool = False) -> tuple[str, web.StreamResponse | None]:
    """The state of this browser's QR attempt; when confirmed, log in (once) and return the response."""
    poll = request.cookies.get(LOGIN_COOKIE, "")
    if not poll:
        return "none", None
    now = c.now()
    async with c.db.session() as s:
        row = await store.qr_by_poll(s, poll)
        if row is None:
            return "none", None
        if row.state == store.CONFIRMED and row.expires_at > now:
            taken = await store.take_confirmed(s, poll, now)
            session_raw = await _start_session(c, s, request, taken[0], "qr") if taken else None
            if session_raw is not None and taken is not None:
                nxt = taken[1] or "/staff/"
                resp: web.StreamResponse = (see_other(nxt) if redirect
                                            else web.json_response({"state": "ok", "next": nxt}))
                _set_session(resp, c.cfg, session_raw)
                resp.del_cookie(LOGIN_COOKIE, path="/staff/login")
                return "ok", resp
            return "denied", None
        if row.expires_at <= now and row.state in (store.NEW, store.SCANNED, store.CONFIRMED):
            return "expired", None
        return {store.NEW: "waiting", store.SCANNED: "scanned", store.DENIED: "denied",
                store.USED: "used"}.get(row.state, "waiting"), None


async def _start_session(c: Console, s: Any, request: web.Request, openid: str, via: str) -> str | None:
    """A new session for ``openid`` if they still hold a staff role (checked now, not when the link was
    made); records the login."""
    from storage.models import User

    user = await s.get(User, openid)
    if user is None or not store.is_staff(user.role_set):
        return None
    now = c.now()
    client = _client(request)
    raw = await store.create_session(s, openid, now, timedelta(hours=c.cfg.console.session_max_h), via=via,
                                     client=client)
    await store.audit(s, actor=openid, actor_name=user.name or "", action="console.login", now=now,
                      target_type="user", target_id=openid, summary=f"登录后台（{'扫码' if via == 'qr' else '链接'}）",
                      detail={"via": via, "client": client})
    return raw


def _link_problem(c: Console, request: web.Request, state: str) -> web.Response:
    if state == "used":
        return c.message(request, 410, "链接已用过", "这个登录链接已经用过了（每个链接只能登录一次）。"
                         "请在微信里重新发送“登录后台”获取新链接，或在电脑上扫码登录。", back="/staff/login")
    if state == "expired":
        return c.message(request, 410, "链接已过期", f"登录链接只在 {c.cfg.console.link_ttl_min} 分钟内有效。"
                         "请在微信里重新发送“登录后台”获取新链接，或在电脑上扫码登录。", back="/staff/login")
    return c.message(request, 400, "链接无效", "这个登录链接不完整或已损坏。请从微信消息里重新打开，"
                     "或在电脑上扫码登录。", back="/staff/login")
