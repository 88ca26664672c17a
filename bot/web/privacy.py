"""个人信息保护 pages: ``/privacy`` (the notice, public), ``/privacy/mine?t=…`` (everything stored about the
link's owner) and ``/privacy/mine.json?t=…`` (the same as a JSON download).

The 我的数据 link carries an opaque token (:mod:`storage.linktokens`, kind ``privacy_export``) that lives
``privacy.export_link_ttl_min`` minutes. A link can be forwarded, so the link alone is not trusted: the
first browser that opens it holds it (a random HttpOnly cookie whose hash is stored on the token), and any
other browser gets 403. Every answer sends ``Cache-Control: no-store`` (a shared phone's browser cache must
not keep someone's data) and a strict Content-Security-Policy; phone numbers are masked on the page (the
download has them whole: it is the person's own copy).
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.clock import fmt_local
from bot.web.render import member
from flows.privacy import texts
from flows.privacy.chat import EXPORT_KIND
from flows.privacy.notice import load_notice
from flows.privacy.service import export, export_json
from storage import linktokens

DEVICE_COOKIE = "vb_priv"
PAGE_ROWS = 50
HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
}
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?!\d)")

def mask_phones(text: str) -> str:
    """Every mobile number in ``text`` as 139****5678 (pages never show a whole phone number)."""
    return _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)


def _page(name: str, status: int = 200, **context: Any) -> web.Response:
    return member(name, status=status, headers=HEADERS, **context)


def _problem(status: int, title: str, text: str) -> web.Response:
    return _page("member/message.html", status, title=title, text=text, kind="err")


def _cell(value: str) -> str:
    """A value for the page: phone numbers masked (the download has them whole), long texts cut."""
    return mask_phones(value if len(value) <= 300 else value[:300] + "…")


def setup(app: web.Application, runtime: Any) -> None:
    """Routes: GET /privacy, /privacy/mine, /privacy/mine.json."""
    cfg = runtime.config

    async def notice_page(_: web.Request) -> web.Response:
        notice = load_notice(cfg)
        return _page("member/privacy_notice.html", title=notice.title, notice=notice,
                     sections=list(notice.page_sections()))

    async def _owner(request: web.Request) -> tuple[str | None, str | None, web.Response | None]:
        """(openid, new device cookie or None, problem page or None) for the link in ``?t=``."""
        token = request.query.get("t")
        device = request.cookies.get(DEVICE_COOKIE)
        fresh = None
        if not linktokens.looks_like_token(device):
            device = fresh = secrets.token_urlsafe(24)
        now = runtime.clock.now()

        async def claim(s: Any) -> tuple[str | None, str]:
            try:
                row = await linktokens.resolve(s, token, EXPORT_KIND, now)
            except linktokens.LinkTokenError as e:
                return None, e.reason
            if not await linktokens.claim(s, row, linktokens.token_hash(device or "")):
                return None, "elsewhere"
            return row.openid, ""

        openid, why = await runtime.db.transaction(claim)
        if openid is None:
            if why == "expired":
                return None, None, _problem(410, "链接已过期", "这个链接已经过期。请在公众号里回复“我的数据”获取新的链接。")
            if why == "elsewhere":
                return None, None, _problem(403, "链接已在另一部手机上打开",
                                            "为保护个人信息，这个链接只能在第一次打开它的手机上查看。"
                                            "请在公众号里回复“我的数据”，获取您自己的链接。")
            return None, None, _problem(403, "链接无效", "这个链接无效。请在公众号里回复“我的数据”获取链接。")
        return openid, fresh, None

    def _with_cookie(resp: web.StreamResponse, fresh: str | None) -> web.StreamResponse:
        if fresh:
            resp.set_cookie(DEVICE_COOKIE, fresh, path=texts.NOTICE_PATH, httponly=True, samesite="Lax",
                            max_age=24 * 3600, secure=cfg.server.public_url.lower().startswith("https://"))
        return resp

    async def _document(openid: str) -> dict[str, Any]:
        async with runtime.db.session() as s:
            return await export(s, openid, cfg, runtime.clock.now())

    async def _collected(openid: str) -> tuple[dict[str, Any], list[Any]]:
        from storage.privacy import collect

        async with runtime.db.session() as s:
            found = await collect(s, openid)
            return await export(s, openid, cfg, runtime.clock.now(), found=found), found

    async def mine_page(request: web.Request) -> web.StreamResponse:
        openid, fresh, problem = await _owner(request)
        if problem is not None:
            return problem
        assert openid is not None
        doc, collected = await _collected(openid)
        from storage.privacy import declarations

        decls = declarations()
        tz = cfg.bot.timezone
        found = {(f.decl.table, f.relation): f for f in collected}
        items = []
        for item in doc["items"]:
            d = decls.get(item["table"])
            f = found.get((item["table"], item["relation"]))
            line = texts.summary_line(f, tz).removeprefix("· ") if f is not None else item["label"]
            rows = f.rows if f is not None and item["relation"] != "mention" else []
            shown = texts.display_rows(item["table"], rows[:PAGE_ROWS], tz) if rows else []
            items.append({**item, "line": mask_phones(line.split("：", 1)[-1]),
                          "rows": [[(k, _cell(v)) for k, v in pairs] for pairs in shown if pairs],
                          "more": len(rows) if len(rows) > PAGE_ROWS else 0, "phones": d is not None})
        resp = _page("member/mine.html", title="我的数据", controller=doc["controller"], openid=openid,
                     generated=fmt_local(runtime.clock.now(), tz), items=items, page_rows=PAGE_ROWS,
                     download=f"{texts.MINE_PATH}.json?{urlencode({'t': request.query.get('t', '')})}")
        return _with_cookie(resp, fresh)

    async def mine_json(request: web.Request) -> web.StreamResponse:
        openid, fresh, problem = await _owner(request)
        if problem is not None:
            return problem
        assert openid is not None
        body = export_json(await _document(openid))
        day = fmt_local(runtime.clock.now(), cfg.bot.timezone, "%Y%m%d")
        resp = web.Response(text=body, content_type="application/json", charset="utf-8",
                            headers={**HEADERS, "Content-Disposition": f'attachment; filename="my-data-{day}.json"'})
        return _with_cookie(resp, fresh)

    app.router.add_get(texts.NOTICE_PATH, notice_page)
    app.router.add_get(texts.MINE_PATH, mine_page)
    app.router.add_get(texts.MINE_PATH + ".json", mine_json)
