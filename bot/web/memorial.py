"""网上纪念馆: ``/m/`` (the memorial as a whole) and ``/m/<id>`` (one martyr).

Anyone may read a page: the record, the counts and the approved 寄语. The tribute buttons and the 寄语
form act as a user, who is named by the personal link they got in chat (``?t=<token>``: an opaque random
token stored hashed with its owner and expiry, see :func:`flows.memorial.service.page_link` and
:mod:`storage.linktokens`): no login. An unknown token answers 403, an expired one (and any link from
before the upgrade, which carried signed claims) 410, both with a page that says how to get a fresh link.

Who acts is decided in one place, :meth:`MemorialPages.actor`. A link can be forwarded, so the link alone
does not make the opener its owner: the first browser that acts with a link (a tribute or a 寄语) holds
it — a random HttpOnly cookie, whose hash is stored on the token. Only that browser may act with the link
again and see the owner's 寄语 still waiting for review; any other browser reads the page as the public
does and is told how to get its own link. Inside WeChat the opener's openid, as WeChat OAuth tells
(:mod:`bot.web.viewer`), decides instead: the link's owner acts, anyone else only reads.

Forms are plain POSTs (they work without JavaScript) answered with a redirect, so reloading never repeats
an action; the counting rule itself (once per user, target, action and day) lives in the database anyway.

Rendered from ``templates/member/memorial.html`` (Jinja2, autoescape: every user-supplied text is
escaped) with the one stylesheet: phone-first, large type and buttons, no external resources.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.clock import fmt_local
from bot.text import ascii_uint
from bot.web import viewer
from bot.web.render import member
from flows.memorial import service, texts
from flows.memorial.names import clean_query, is_letters
from storage import linktokens
from storage import memorial as store

log = logging.getLogger("vetbot.web.memorial")

TRIBUTES = ("flower", "salute", "candle", "silence")
BUTTON = {"flower": "献花", "salute": "敬礼", "candle": "点烛", "silence": "默哀一分钟"}
PAGE_MESSAGES = 30
#: A signed link of earlier releases: base64url(claims) "." base64url(mac).
OLD_SIGNED = re.compile(r"^[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}$")
#: The browser's random id (HttpOnly): the first browser that acts with a link holds the link.
DEVICE_COOKIE = "vb_dev"
DEVICE_MAX_AGE = 400 * 24 * 3600
ELSEWHERE = "这个链接已在另一部手机上用过，这里只能浏览。"
NOT_YOURS_NOTE = "此链接是发给别人的，这里只能浏览。想献花、写寄语，请在公众号里回复“祭英烈”，获取您自己的链接。"
ELSEWHERE_NOTE = ELSEWHERE + "想献花、写寄语，请在公众号里回复“祭英烈”，获取您自己的链接。"

def _page(title: str, *, status: int = 200, text: str = "", back: str = "", back_label: str = "") -> web.Response:
    """A short memorial page (a problem or a missing record)."""
    return member("member/memorial_message.html", status=status, title=title, text=text, back=back,
                  back_label=back_label)


class LinkProblem(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


@dataclass(frozen=True)
class Actor:
    """Who a request acts for (see :meth:`MemorialPages.actor`)."""

    #: The link's owner: tributes and 寄语 from this request are theirs. None without a usable link.
    openid: str | None = None
    #: The link's token, kept in the page's links and forms.
    token: str | None = None
    #: Tribute buttons and the 寄语 form may be used.
    may_act: bool = False
    #: The owner's own 寄语 waiting for review may be shown (only to the browser holding the link).
    private: bool = False
    #: A line for the page (the link is held by another browser).
    note: str | None = None


def _device(request: web.Request) -> str | None:
    v = request.cookies.get(DEVICE_COOKIE)
    return v if linktokens.looks_like_token(v) else None


class MemorialPages:
    """The handlers; ``runtime`` gives the database, config and clock."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self.cfg = runtime.config

    # --- who is acting -------------------------------------------------------------------------
    async def actor(self, session: Any, request: web.Request, token: str | None, *, acting: bool,
                    seen: viewer.Viewer | None = None) -> Actor:
        """The one place that decides who a page request acts for, and what it may see.

        Without a token: nobody (the public page). A token that was never issued: LinkProblem 403; an
        expired one, or a signed link from before the upgrade (``claims.mac``): LinkProblem 410. Otherwise
        the token's owner, with the browser rule: the first browser that acts with the link (``acting``:
        a POST) holds it; the holder may act and see the owner's pending 寄语; another browser may only
        read (its POSTs get LinkProblem 403). A browser without our cookie may act with a link nobody
        holds yet, but never sees pending 寄语. OAuth, when it comes, decides here too."""
        if not token:
            return Actor()
        if OLD_SIGNED.match(token):  # the signed links of earlier releases carried readable claims
            raise LinkProblem(410, "这个链接已过期。")
        try:
            row = await linktokens.resolve(session, token, service.LINK_KIND, self.rt.clock.now())
        except linktokens.LinkTokenError as e:
            if e.reason == "expired":
                raise LinkProblem(410, "这个链接已过期。") from None
            raise LinkProblem(403, "这个链接无效。") from None
        if seen is not None and seen.openid:  # WeChat OAuth said who opens the link: that decides
            if seen.openid == row.openid:
                return Actor(row.openid, token, may_act=True, private=True)
            if acting:
                raise LinkProblem(403, viewer.NOT_YOURS)
            return Actor(None, token, note=NOT_YOURS_NOTE)
        device = _device(request)
        holder = linktokens.token_hash(device) if device else None
        if row.holder is None:
            if acting and holder is not None and not await linktokens.claim(session, row, holder):
                raise LinkProblem(403, ELSEWHERE)
            return Actor(row.openid, token, may_act=True, private=acting and holder is not None)
        if holder is not None and row.holder == holder:
            return Actor(row.openid, token, may_act=True, private=True)
        if acting:
            raise LinkProblem(403, ELSEWHERE)
        return Actor(None, token, note=ELSEWHERE_NOTE)

    def _with_device(self, request: web.Request, resp: web.Response) -> web.Response:
        """Give a browser its random id the first time it comes (see :meth:`actor`)."""
        if _device(request) is None:
            resp.set_cookie(DEVICE_COOKIE, secrets.token_urlsafe(24), max_age=DEVICE_MAX_AGE, path="/m",
                            httponly=True, samesite="Lax",
                            secure=self.cfg.server.public_url.lower().startswith("https://"))
        return resp

    # --- helpers -------------------------------------------------------------------------------
    def _link_problem(self, martyr_id: int, p: LinkProblem) -> web.Response:
        return _page(p.text, status=p.status, text="请在公众号里回复“祭英烈”，获取您的专属链接（不用登录就能献花、写寄语）。",
                     back=service.page_path(martyr_id), back_label="不登录，先看看纪念页")

    def _url(self, martyr_id: int, token: str | None, **params: Any) -> str:
        q = {"t": token} if token else {}
        q.update({k: v for k, v in params.items() if v is not None})
        return service.page_path(martyr_id) + (f"?{urlencode(q)}" if q else "")

    @staticmethod
    def _martyr_id(request: web.Request) -> int:
        raw = request.match_info.get("id", "0")
        try:
            mid = int(raw)
        except ValueError:
            raise web.HTTPNotFound() from None
        if mid < 0 or mid > 2**31 - 1:
            raise web.HTTPNotFound()
        return mid

    # --- GET -----------------------------------------------------------------------------------
    async def show(self, request: web.Request) -> web.Response:
        mid = self._martyr_id(request)
        token = request.query.get("t")
        if (token and viewer.in_wechat(request) and viewer.oauth_ready(self.rt)
                and await viewer.current(self.rt, request) is None):
            return await viewer.start_oauth(self.rt, request)  # silent: learn whose link this is
        try:
            resp = await self._render(request, mid, request.query.get("t"))
        except LinkProblem as p:
            resp = self._link_problem(mid, p)
        return self._with_device(request, resp)

    async def _render(self, request: web.Request, mid: int, token: str | None, *, who: Actor | None = None,
                      error: str | None = None, draft: str = "", status: int = 200) -> web.Response:
        q = request.query
        seen = await viewer.current(self.rt, request) if who is None and token else None
        async with self.rt.db.session() as s:
            if who is None:
                who = await self.actor(s, request, token, acting=False, seen=seen)
            m = await store.get_martyr(s, mid) if mid else None
            if mid and m is None:
                return _page("没有找到这位英烈的记录", status=404, back="/m/", back_label="返回网上纪念馆")
            counts = await store.counts(s, mid)
            people = await service.participants(s) if not mid else 0
            n_msgs = await store.approved_count(s, mid)
            before = _int(q.get("before"), default=None)
            msgs = await store.approved_messages(s, mid, PAGE_MESSAGES, before_id=before)
            mine = await store.own_pending(s, who.openid, mid) if who.private and who.openid else []
            done = (await store.done_today(s, who.openid, mid, service.local_day(self.rt.clock.now(),
                                                                                self.cfg.bot.timezone))
                    if who.may_act and who.openid else set())
            results: list[Any] = []
            total = 0
            search = (q.get("q") or "").strip()[:40] if not mid else ""
            if not mid:
                if search:
                    norm = clean_query(search)
                    total, results = await store.search_martyrs(s, norm, letters=is_letters(norm), limit=50)
                else:
                    total, results = await store.search_martyrs(s, "", letters=False, limit=50)
        name = m.name if m else None
        # Links on the page keep the token only for the browser that may use it.
        token = who.token if who.may_act else None
        banners: list[list[str]] = []
        refresh = None
        did = q.get("did")
        if did in store.ACTIONS and who.may_act:
            n = _int(q.get("n"))
            counted = q.get("c") == "1"
            text = texts.counted_text(did, name, n) if counted and n else texts.repeat_text(did, name)
            lines = [text]
            if did == "silence":
                if q.get("end") == "1":
                    lines = [f"一分钟默哀结束。感谢您{texts.phrase('silence', name)}，英雄永垂不朽。"]
                else:
                    lines.append(f"请起立，为{texts.target_name(name)}默哀一分钟……一分钟后本页会提示您。")
                    refresh = f"60;url={self._url(mid, token, did='silence', end='1')}"
            banners.append(lines)
        msg_state = q.get("msg") if who.may_act else None
        if msg_state == store.APPROVED:
            banners.append(["您的寄语已展示在下方。谢谢您！"])
        elif msg_state == store.PENDING:
            banners.append(["您的寄语已提交，工作人员审核后公开展示。"])
        boxes = [(f"{counts.get(a, 0):,}", texts.LABEL[a]) for a in TRIBUTES] + [(f"{n_msgs:,}", "寄语")]
        ctx: dict[str, Any] = {"m": m, "boxes": boxes, "people": f"{people:,}" if people else ""}
        if m is not None:
            facts = [("生卒", texts.life_span(m.born, m.died)), ("所属部队", m.unit), ("牺牲地点", m.place_of_death),
                     ("安葬地", m.burial)]
            ctx.update(heading=texts.target_name(m.name), facts=[(k, v) for k, v in facts if v],
                       meta=" · ".join(v for v in (m.gender, m.hometown) if v),
                       photo=m.photo_url if m.photo_url and m.photo_url.startswith(("http://", "https://")) else "")
        title = f"{texts.target_name(name)} · 网上纪念馆" if m else "云端祭英烈 · 网上纪念馆"
        return member(
            "member/memorial.html", status=status, tz=self.cfg.bot.timezone, title=title, refresh=refresh,
            banners=banners, error=error, may_act=who.may_act, note=who.note, token=token,
            base=service.page_path(mid).rstrip("/"),
            buttons=[(a, "今日已" + texts.LABEL[a] if a in done else BUTTON[a]) for a in TRIBUTES],
            message_title=texts.phrase("message", name), presets=list(self.cfg.memorial.preset_messages),
            limit=self.cfg.memorial.message_max_chars, draft=draft, n_msgs=f"{n_msgs:,}", mine=mine, msgs=msgs,
            more=self._url(mid, token, before=msgs[-1].id) if len(msgs) == PAGE_MESSAGES else "",
            search=search, total=total, roll=[(self._url(x.id, token), texts.summary(x)) for x in results],
            back=self._url(0, token), when=lambda d: fmt_local(d, self.cfg.bot.timezone), **ctx)

    # --- POST ----------------------------------------------------------------------------------
    async def _form(self, request: web.Request) -> tuple[int, Any, str]:
        mid = self._martyr_id(request)
        try:
            form = await request.post()
        except Exception:  # a charset, transfer or content encoding aiohttp cannot decode: the sender's fault
            raise web.HTTPBadRequest(text="bad form") from None
        token = str(form.get("t") or "")
        if not token:
            raise LinkProblem(403, "需要从公众号里的专属链接进入才能祭扫。")
        return mid, form, token

    async def _name_of(self, session: Any, mid: int) -> tuple[bool, str | None]:
        if not mid:
            return True, None
        m = await store.get_martyr(session, mid)
        return (m is not None), (m.name if m else None)

    async def tribute(self, request: web.Request) -> web.Response:
        try:
            mid, form, token = await self._form(request)
        except LinkProblem as p:
            return self._link_problem(self._martyr_id(request), p)
        action = str(form.get("action") or "")
        if action not in TRIBUTES:
            return _page("无法识别的操作", status=400, back=self._url(mid, token), back_label="返回纪念页")
        now = self.rt.clock.now()
        seen = await viewer.current(self.rt, request)  # before the transaction (SQLite: one connection)

        async def record(s: Any) -> Any:
            who = await self.actor(s, request, token, acting=True, seen=seen)
            ok, name = await self._name_of(s, mid)
            if not ok or who.openid is None:
                return None
            return await service.pay_tribute(s, self.cfg, openid=who.openid, martyr_id=mid, name=name,
                                              action=action, now=now, silence_push=False)

        # On SQLite page tributes join the chat turns' group commit (one fsync for all that arrive together).
        try:
            out = await self.rt.db.transaction(record)
        except LinkProblem as p:
            return self._link_problem(mid, p)
        if out is None:
            return _page("没有找到这位英烈的记录", status=404, back="/m/", back_label="返回网上纪念馆")
        raise self._with_device(request, web.HTTPSeeOther(self._url(mid, token, did=action, n=out.n,
                                                                     c=int(out.counted))))

    async def message(self, request: web.Request) -> web.Response:
        try:
            mid, form, token = await self._form(request)
        except LinkProblem as p:
            return self._link_problem(self._martyr_id(request), p)
        presets = self.cfg.memorial.preset_messages
        idx = _int(str(form.get("preset") or ""), default=None)
        text = str(form.get("text") or "").strip()
        preset = idx is not None and not text
        if preset and not 0 <= idx < len(presets):  # type: ignore[operator]
            preset, text = False, ""
        try:
            if not preset and not text:
                return await self._render(request, mid, token, error="请选一句寄语，或写下您想说的话。", status=400)
            now = self.rt.clock.now()
            seen = await viewer.current(self.rt, request)  # before the transaction (SQLite: one connection)

            async def record(s: Any) -> Any:
                who = await self.actor(s, request, token, acting=True, seen=seen)
                ok, name = await self._name_of(s, mid)
                if not ok or who.openid is None:
                    return None
                out = await service.leave_message(s, self.cfg, service.word_filter(self.rt.services),
                                                  openid=who.openid, martyr_id=mid, name=name,
                                                  text=presets[idx] if preset else text,  # type: ignore[index]
                                                  preset=preset, now=now)
                return who, out

            done = await self.rt.db.transaction(record)
            if done is None:
                return _page("没有找到这位英烈的记录", status=404, back="/m/", back_label="返回网上纪念馆")
            who, out = done
            if out.status in (store.APPROVED, store.PENDING):
                raise self._with_device(request, web.HTTPSeeOther(self._url(mid, token, msg=out.status)))
            return await self._render(request, mid, token, who=who, error=out.text,
                                      draft="" if out.status == store.REJECTED else text, status=400)
        except LinkProblem as p:
            return self._link_problem(mid, p)


def _int(v: str | None, default: Any = 0) -> Any:
    """A non-negative whole number from a query or form field (ids, counts, a list position); ``default``
    for anything else, including numbers a database integer column cannot hold."""
    n = ascii_uint((v or "").strip(), 9)
    return default if n is None else n


def setup(app: web.Application, runtime: Any) -> None:
    """Routes: GET /m/, /m/<id>; POST /m/tribute, /m/message, /m/<id>/tribute, /m/<id>/message."""
    pages = MemorialPages(runtime)

    async def to_slash(_: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/m/")

    app.router.add_get("/m", to_slash)
    app.router.add_get("/m/", pages.show)
    app.router.add_get(r"/m/{id:\d+}", pages.show)
    app.router.add_post("/m/tribute", pages.tribute)
    app.router.add_post("/m/message", pages.message)
    app.router.add_post(r"/m/{id:\d+}/tribute", pages.tribute)
    app.router.add_post(r"/m/{id:\d+}/message", pages.message)
