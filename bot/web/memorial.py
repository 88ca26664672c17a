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
does and is told how to get its own link. (When WeChat OAuth arrives, the opener's verified openid
replaces the cookie there.)

Forms are plain POSTs (they work without JavaScript) answered with a redirect, so reloading never repeats
an action; the counting rule itself (once per user, target, action and day) lives in the database anyway.

Phone-first HTML with inline CSS, large type and buttons, no external resources; every user-supplied
text is escaped.
"""

from __future__ import annotations

import html
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.clock import fmt_local
from bot.text import ascii_uint
from bot.web import stylesheet
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
ELSEWHERE_NOTE = ELSEWHERE + "想献花、写寄语，请在公众号里回复“祭英烈”，获取您自己的链接。"

CSS = """
*{box-sizing:border-box}body{margin:0;font-family:-apple-system,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",
sans-serif;font-size:19px;line-height:1.6;color:#222;background:#f4f1ea}
header{background:#3a3a3a;color:#fff;padding:14px 16px;font-size:21px;letter-spacing:2px}
header a{color:#fff;text-decoration:none}main{max-width:640px;margin:0 auto;padding:12px}
section{background:#fff;border-radius:10px;padding:16px;margin:12px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h1{font-size:26px;margin:0 0 6px}h2{font-size:21px;margin:0 0 10px}
.meta{color:#555;margin:0 0 8px}dl{margin:0}dt{color:#666;font-size:16px;margin-top:8px}dd{margin:0}
.bio{white-space:pre-wrap;margin-top:12px}
.counts{display:flex;flex-wrap:wrap;gap:8px;text-align:center}
.counts div{flex:1 1 28%;background:#faf7f0;border-radius:8px;padding:8px 4px}
.counts b{display:block;font-size:24px;color:#a31d1d}
.acts{display:grid;grid-template-columns:1fr 1fr;gap:10px}
button,.btn{display:block;width:100%;min-height:56px;font-size:21px;border:0;border-radius:10px;
background:#a31d1d;color:#fff;cursor:pointer;text-align:center;text-decoration:none;padding:12px}
button.light{background:#5b5b5b}
.banner{background:#fff7e0;border-left:6px solid #d4a017;padding:14px 16px;border-radius:8px;margin:12px 0}
.error{background:#fdecea;border-left-color:#c62828}
label.preset{display:block;padding:10px 12px;margin:8px 0;border:1px solid #ddd;border-radius:8px;font-size:20px}
label.preset input{width:22px;height:22px;vertical-align:middle;margin-right:8px}
textarea,input[type=text]{width:100%;font-size:19px;padding:10px;border:1px solid #bbb;border-radius:8px}
textarea{min-height:110px}ul.msgs{list-style:none;padding:0;margin:0}
ul.msgs li{border-bottom:1px solid #eee;padding:10px 0}ul.msgs small{color:#777;display:block;font-size:15px}
.pending{color:#8a6d00}.hint{color:#555;font-size:17px}
ul.list{list-style:none;padding:0;margin:0}ul.list li a{display:block;padding:12px 4px;border-bottom:1px solid #eee;
color:#222;text-decoration:none;font-size:20px}
footer{text-align:center;color:#777;font-size:15px;padding:20px}
img.photo{max-width:100%;border-radius:8px;margin-bottom:8px}
"""


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _page(title: str, body: str, *, status: int = 200, refresh: str | None = None) -> web.Response:
    meta = f'<meta http-equiv="refresh" content="{_esc(refresh)}">' if refresh else ""
    doc = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
           f"<title>{_esc(title)}</title>{stylesheet(__name__, CSS)}</head><body>"
           f'<header><a href="/m/">云端祭英烈</a></header><main>{body}</main>'
           '<footer>缅怀先烈 · 致敬英雄<br><a href="/privacy">个人信息保护提示</a></footer></body></html>')
    return web.Response(text=doc, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


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
    async def actor(self, session: Any, request: web.Request, token: str | None, *, acting: bool) -> Actor:
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
        body = (f'<section><h1>{_esc(p.text)}</h1><p>请在公众号里回复“祭英烈”，获取您的专属链接（不用登录就能献花、写寄语）。</p>'
                f'<p><a class="btn light" href="{service.page_path(martyr_id)}">不登录，先看看纪念页</a></p></section>')
        return _page(p.text, body, status=p.status)

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
        try:
            resp = await self._render(request, mid, request.query.get("t"))
        except LinkProblem as p:
            resp = self._link_problem(mid, p)
        return self._with_device(request, resp)

    async def _render(self, request: web.Request, mid: int, token: str | None, *, who: Actor | None = None,
                      error: str | None = None, draft: str = "", status: int = 200) -> web.Response:
        q = request.query
        async with self.rt.db.session() as s:
            if who is None:
                who = await self.actor(s, request, token, acting=False)
            m = await store.get_martyr(s, mid) if mid else None
            if mid and m is None:
                return _page("没有这条记录", '<section><h1>没有找到这位英烈的记录</h1>'
                                         '<p><a class="btn light" href="/m/">返回网上纪念馆</a></p></section>',
                             status=404)
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
        parts: list[str] = []
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
            parts.append(f'<div class="banner">{"<br>".join(_esc(x) for x in lines)}</div>')
        msg_state = q.get("msg") if who.may_act else None
        if msg_state == store.APPROVED:
            parts.append('<div class="banner">您的寄语已展示在下方。谢谢您！</div>')
        elif msg_state == store.PENDING:
            parts.append('<div class="banner">您的寄语已提交，工作人员审核后公开展示。</div>')
        if error:
            parts.append(f'<div class="banner error">{_esc(error)}</div>')
        parts.append(self._record(m, counts, n_msgs, people))
        parts.append(self._actions(mid, token, done) if who.may_act else self._no_token(who.note))
        if who.may_act:
            parts.append(self._message_form(mid, token, name, draft))
        parts.append(self._messages(mid, token, name, msgs, mine, n_msgs))
        if not mid:
            parts.append(self._roll(token, search, total, results))
        else:
            parts.append(f'<p><a class="btn light" href="{_esc(self._url(0, token))}">返回网上纪念馆</a></p>')
        title = f"{texts.target_name(name)} · 网上纪念馆" if m else "云端祭英烈 · 网上纪念馆"
        return _page(title, "".join(parts), status=status, refresh=refresh)

    def _record(self, m: Any, counts: dict[str, int], n_msgs: int, people: int) -> str:
        boxes = "".join(f"<div><b>{counts.get(a, 0):,}</b>{texts.LABEL[a]}</div>" for a in TRIBUTES)
        boxes += f"<div><b>{n_msgs:,}</b>寄语</div>"
        if m is None:
            head = ("<h1>云端祭英烈</h1><p class=\"meta\">不能到陵园祭扫的朋友，可以在这里为英烈献一束花、寄一句话。</p>"
                    + (f"<p>已有 <b>{people:,}</b> 人参与云端祭扫。</p>" if people else ""))
            return f'<section>{head}</section><section><h2>向全体英烈</h2><div class="counts">{boxes}</div></section>'
        facts = [("生卒", texts.life_span(m.born, m.died)), ("所属部队", m.unit), ("牺牲地点", m.place_of_death),
                 ("安葬地", m.burial)]
        dl = "".join(f"<dt>{k}</dt><dd>{_esc(v)}</dd>" for k, v in facts if v)
        meta = " · ".join(_esc(v) for v in (m.gender, m.hometown) if v)
        photo = ""
        if m.photo_url and m.photo_url.startswith(("http://", "https://")):
            photo = (f'<img class="photo" src="{_esc(m.photo_url)}" alt="{_esc(m.name)}" '
                     'referrerpolicy="no-referrer">')
        bio = f'<div class="bio">{_esc(m.biography)}</div>' if m.biography else ""
        return (f'<section>{photo}<h1>{_esc(texts.target_name(m.name))}</h1>'
                f'{f"<p class=meta>{meta}</p>" if meta else ""}<dl>{dl}</dl>{bio}</section>'
                f'<section><div class="counts">{boxes}</div></section>')

    def _no_token(self, note: str | None = None) -> str:
        return (f'<section><p class="hint">{_esc(note) if note else "想献花、敬礼？请在公众号里回复“祭英烈”，点开您的专属链接，不用登录即可祭扫。"}'
                "</p></section>")

    def _actions(self, mid: int, token: str | None, done: set[str]) -> str:
        buttons = "".join(
            f'<button name="action" value="{a}">{"今日已" + texts.LABEL[a] if a in done else BUTTON[a]}</button>'
            for a in TRIBUTES)
        return (f'<section><h2>祭扫</h2><form method="post" action="{service.page_path(mid).rstrip("/")}/tribute">'
                f'<input type="hidden" name="t" value="{_esc(token)}"><div class="acts">{buttons}</div></form>'
                '<p class="hint">每人每天每项计一次。</p></section>')

    def _message_form(self, mid: int, token: str | None, name: str | None, draft: str) -> str:
        presets = "".join(
            f'<label class="preset"><input type="radio" name="preset" value="{i}">{_esc(p)}</label>'
            for i, p in enumerate(self.cfg.memorial.preset_messages))
        limit = self.cfg.memorial.message_max_chars
        return (f'<section><h2>{_esc(texts.phrase("message", name))}</h2>'
                f'<form method="post" action="{service.page_path(mid).rstrip("/")}/message">'
                f'<input type="hidden" name="t" value="{_esc(token)}">{presets}'
                f'<p class="hint">或写下您想说的话（{limit}字以内，工作人员审核后展示）：</p>'
                f'<textarea name="text" maxlength="{limit}">{_esc(draft)}</textarea>'
                '<p><button>献上寄语</button></p></form></section>')

    def _messages(self, mid: int, token: str | None, name: str | None, msgs: list[Any], mine: list[Any],
                  total: int) -> str:
        tz = self.cfg.bot.timezone
        items = "".join(f'<li class="pending">{_esc(x.text)}<small>您的寄语 · 审核中（仅您可见）</small></li>'
                        for x in mine)
        items += "".join(f"<li>{_esc(x.text)}<small>网友 · {fmt_local(x.created_at, tz)}</small></li>" for x in msgs)
        if not items:
            items = '<li class="hint">还没有寄语。</li>'
        more = ""
        if len(msgs) == PAGE_MESSAGES:
            more = f'<p><a href="{_esc(self._url(mid, token, before=msgs[-1].id))}">更早的寄语</a></p>'
        return f'<section><h2>寄语（{total:,}）</h2><ul class="msgs">{items}</ul>{more}</section>'

    def _roll(self, token: str | None, search: str, total: int, results: list[Any]) -> str:
        items = "".join(f'<li><a href="{_esc(self._url(m.id, token))}">{_esc(texts.summary(m))}</a></li>'
                        for m in results)
        if search and not results:
            items = f'<li class="hint">没有找到“{_esc(search)}”。</li>'
        hidden = f'<input type="hidden" name="t" value="{_esc(token)}">' if token else ""
        note = f"<p class=\"hint\">共 {total} 位，显示前 {len(results)} 位。</p>" if total > len(results) else ""
        return (f'<section><h2>英烈名录</h2><form method="get" action="/m/">{hidden}'
                f'<input type="text" name="q" value="{_esc(search)}" placeholder="姓名、拼音首字母、籍贯或部队">'
                f'<p><button class="light">查找</button></p></form><ul class="list">{items}</ul>{note}</section>')

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
            return _page("无法识别", '<section><h1>无法识别的操作</h1><p><a class="btn light" href="'
                         f'{_esc(self._url(mid, token))}">返回纪念页</a></p></section>', status=400)
        now = self.rt.clock.now()

        async def record(s: Any) -> Any:
            who = await self.actor(s, request, token, acting=True)
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
            return _page("没有这条记录", "<section><h1>没有找到这位英烈的记录</h1></section>", status=404)
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

            async def record(s: Any) -> Any:
                who = await self.actor(s, request, token, acting=True)
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
                return _page("没有这条记录", "<section><h1>没有找到这位英烈的记录</h1></section>", status=404)
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
