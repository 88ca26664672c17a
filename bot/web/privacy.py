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

import html
import re
import secrets
from typing import Any

from aiohttp import web

from bot.clock import fmt_local
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
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
}
_MOBILE = re.compile(r"(?<!\d)(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?!\d)")

CSS = """
*{box-sizing:border-box}body{margin:0;font-family:-apple-system,"PingFang SC","Noto Sans CJK SC","Microsoft YaHei",
sans-serif;font-size:19px;line-height:1.6;color:#222;background:#f4f5f7}
main{max-width:680px;margin:0 auto;padding:12px}h1{font-size:25px;margin:8px 0}h2{font-size:21px;margin:0 0 6px}
section{background:#fff;border-radius:10px;padding:14px 16px;margin:12px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.meta{color:#555;font-size:16px;margin:2px 0}.text{white-space:pre-wrap}
details{margin-top:8px}summary{color:#1a73e8;cursor:pointer}dl{margin:8px 0;padding:8px 0;border-top:1px solid #eee;
font-size:16px}dt{color:#666;font-size:14px}dd{margin:0 0 4px;word-break:break-all}
.btn{display:block;text-align:center;background:#1a73e8;color:#fff;border-radius:10px;padding:14px;font-size:20px;
text-decoration:none;margin:12px 0}.err{background:#fdecea;border-left:6px solid #c62828}
footer{text-align:center;color:#777;font-size:15px;padding:20px}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def mask_phones(text: str) -> str:
    """Every mobile number in ``text`` as 139****5678 (pages never show a whole phone number)."""
    return _MOBILE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    doc = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)}</title>'
           f"<style>{CSS}</style></head><body><main>{body}</main>"
           f'<footer><a href="{texts.NOTICE_PATH}">个人信息保护提示</a></footer></body></html>')
    return web.Response(text=doc, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def _problem(status: int, title: str, text: str) -> web.Response:
    return _page(title, f"<h1>{_e(title)}</h1><section class=err>{_e(text)}</section>", status)


def _cell(label: str, value: str, phone_columns: set[str]) -> str:
    """A value for the page: phone numbers masked (the download has them whole), long texts cut."""
    text = value if len(value) <= 300 else value[:300] + "…"
    return _e(mask_phones(text))


def setup(app: web.Application, runtime: Any) -> None:
    """Routes: GET /privacy, /privacy/mine, /privacy/mine.json."""
    cfg = runtime.config

    async def notice_page(_: web.Request) -> web.Response:
        notice = load_notice(cfg)
        body = f"<h1>{_e(notice.title)}</h1><p class=meta>版本 {_e(notice.version)} · {_e(notice.controller)}</p>"
        body += "".join(f"<section><h2>{_e(t)}</h2><div class=text>{_e(x)}</div></section>"
                        for t, x in notice.page_sections())
        return _page(notice.title, body)

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
        parts = [f"<h1>我的数据</h1><p class=meta>{_e(doc['controller'])}保存的与您有关的全部信息，"
                 f"生成于 {_e(fmt_local(runtime.clock.now(), tz))}。您的微信编号（openid）：{_e(openid)}</p>",
                 f'<a class=btn href="{texts.MINE_PATH}.json?t={_e(request.query.get("t", ""))}">下载全部数据（JSON）</a>']
        if not doc["items"]:
            parts.append("<section>除了这次查看，没有保存您的信息。</section>")
        found = {(f.decl.table, f.relation): f for f in collected}
        for item in doc["items"]:
            d = decls.get(item["table"])
            phones = set(d.phone) if d is not None else set()
            f = found.get((item["table"], item["relation"]))
            line = texts.summary_line(f, tz).removeprefix("· ") if f is not None else item["label"]
            head = (f"<section><h2>{_e(item['label'])}</h2><p>{_e(mask_phones(line.split('：', 1)[-1]))}</p>"
                    f"<p class=meta>{_e(item['relation_zh'])}</p>"
                    + (f"<p class=meta>用途：{_e(item['purpose'])}</p>" if item["purpose"] else "")
                    + (f"<p class=meta>依据：{_e(item['legal_basis'])}</p>" if item["legal_basis"] else "")
                    + f"<p class=meta>保存：{_e(item['retention'])}</p><p class=meta>谁能看到：{_e(item['seen_by'])}</p>")
            if item["relation"] == "mention":
                parts.append(head + "</section>")
                continue
            rows = f.rows if f is not None else []
            shown = texts.display_rows(item["table"], rows[:PAGE_ROWS], tz)
            body = "".join("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_cell(k, v, phones)}</dd>" for k, v in pairs) + "</dl>"
                           for pairs in shown if pairs)
            more = f"<p class=meta>共 {len(rows)} 条，页面显示前 {PAGE_ROWS} 条，下载文件里有全部。</p>" if len(rows) > PAGE_ROWS else ""
            details = f"<details><summary>查看内容</summary>{body}</details>" if body else ""
            parts.append(head + details + more + "</section>")
        parts.append("<section>修改：在公众号回复“我的信息”。删除全部：在公众号回复“注销”。</section>")
        return _with_cookie(_page("我的数据", "".join(parts)), fresh)

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
