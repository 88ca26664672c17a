"""Call-up pages: the member's answer page (``/r/<token>``) and the staff roster (``/callup/roster/<token>``).

No login: the token is HMAC-signed (:mod:`bot.links`) per call-up and member and expires. Answers are
POSTs to the same URL (plain forms, no JavaScript) followed by a redirect, so a refresh never answers
twice. A bad or expired token, or a call-up that no longer exists, gets a clear page with a 4xx
status, never a 500.
"""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import fmt_local
from bot.links import LinkError, verify
from bot.web import stylesheet
from bot.web.notices import subscribe_button
from bot.web.sms import answer_claims as sms_answer_claims
from flows.callup import service, texts
from flows.callup.parse import parse_eta
from storage.callup import CLOSED, CallUp, CallUpTarget, Member

CSS = """
body{margin:0;font-family:-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;font-size:20px;
line-height:1.5;background:#f4f5f7;color:#1d1d1f}
main{max-width:560px;margin:0 auto;padding:16px}
h1{font-size:26px;margin:8px 0 12px}
.card{background:#fff;border-radius:12px;padding:16px;margin:12px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.drill{display:inline-block;background:#ff9500;color:#fff;border-radius:6px;padding:2px 10px;font-size:18px}
.row{margin:6px 0}.k{color:#666}
form{margin:12px 0}
button{width:100%;font-size:26px;padding:18px;border:0;border-radius:12px;color:#fff;font-weight:600}
.yes{background:#1a7f37}.late{background:#d97706}.no{background:#6b7280}
select{font-size:22px;padding:10px;width:100%;margin:0 0 8px;border-radius:8px}
.msg{background:#e8f5e9;border-left:6px solid #1a7f37;padding:12px;border-radius:8px;white-space:pre-line}
.err{background:#fdecea;border-left:6px solid #c62828;padding:12px;border-radius:8px}
table{width:100%;border-collapse:collapse;font-size:18px}td,th{padding:8px 4px;border-bottom:1px solid #eee;
text-align:left}a.tel{display:inline-block;padding:4px 10px;border:1px solid #1a73e8;border-radius:8px;
color:#1a73e8;text-decoration:none}
.counts{display:flex;flex-wrap:wrap;gap:8px}.counts div{flex:1 1 40%;background:#fff;border-radius:10px;
padding:10px;text-align:center}.counts b{display:block;font-size:28px}
"""

STATUS_ORDER = ("pending", "confirmed", "late", "standby", "declined")


def _page(title: str, body: str, status: int = 200, refresh: int | None = None) -> web.Response:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    doc = (f'<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
           f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
           f"<title>{html.escape(title)}</title>{stylesheet(__name__, CSS)}</head><body><main>{body}"
           '<p class=row><small><a href="/privacy">个人信息保护提示</a></small></p></main></body></html>')
    return web.Response(text=doc, status=status, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _error(status: int, title: str, text: str) -> web.Response:
    return _page(title, f'<h1>{html.escape(title)}</h1><div class="err">{html.escape(text)}</div>', status)


def _claims(request: web.Request, runtime: Any, kind: str) -> dict[str, Any] | web.Response:
    token = request.match_info.get("token", "")
    try:
        claims = verify(runtime.config, token, now=service.epoch(runtime.clock.now()))
    except LinkError as e:
        if e.reason == "expired":
            return _error(410, "链接已过期", "这个链接已经过期。如仍需回复，请直接在公众号里回复数字：1 到 / 2 晚到 / 3 不能到。")
        return _error(400, "链接无效", "这个链接不完整或已损坏。请从公众号消息里重新点开，或直接在公众号里回复。")
    ok = (kind == "answer" and isinstance(claims.get("c"), int) and isinstance(claims.get("m"), int)) or \
         (kind == "roster" and isinstance(claims.get("c"), int) and claims.get("s") == "roster")
    if not ok:
        return _error(400, "链接无效", "这个链接不是集结链接。请从公众号消息里重新点开。")
    return claims


def _details(c: CallUp, tz: str) -> str:
    drill = f'<span class="drill">{texts.DRILL.strip("【】")}</span> ' if c.drill else ""
    return (f"<h1>{drill}{html.escape(c.title)}</h1><div class=card>"
            f'<div class=row><span class=k>地点：</span>{html.escape(c.place)}</div>'
            f'<div class=row><span class=k>集合：</span>{html.escape(texts.when(c, tz))}</div>'
            f'<div class=row><span class=k>需要：</span>{html.escape(texts.need_text(c))}</div>'
            f'<div class=row><span class=k>状态：</span>{html.escape(texts.STATE_WORDS.get(c.state, c.state))}</div>'
            "</div>")


def _buttons() -> str:
    etas = "".join(f'<option value="{m}">约晚 {m} 分钟</option>' for m in (15, 30, 60, 120))
    return ('<div class=card><div class=row>请选择您的回复：</div>'
            '<form method=post><input type=hidden name=a value=yes><button class=yes>到</button></form>'
            f'<form method=post><input type=hidden name=a value=late><select name=eta aria-label="晚到多久">'
            f'<option value="">晚到（时间不确定）</option>{etas}</select><button class=late>晚到</button></form>'
            '<form method=post><input type=hidden name=a value=no><button class=no>不能到</button></form></div>')


def setup(app: web.Application, runtime: Any) -> None:
    """Add the answer page and the staff roster page."""
    tz = runtime.config.bot.timezone
    async def _load(s: Any, claims: dict[str, Any]) -> tuple[CallUp, CallUpTarget, Member] | web.Response:
        c = await s.get(CallUp, claims["c"])
        m = await s.get(Member, claims["m"])
        t = None
        if c is not None and m is not None:
            from sqlalchemy import select

            t = (await s.execute(select(CallUpTarget).where(CallUpTarget.callup_id == c.id,
                                                            CallUpTarget.member_id == m.id))).scalar_one_or_none()
        if c is None or m is None or t is None:
            return _error(404, "没有找到这次集结", "这次集结或您的记录已不存在，请联系队长或工作人员。")
        return c, t, m

    async def _answer_claims(request: web.Request) -> dict[str, Any] | web.Response:
        # An SMS link carries an opaque token (bot/web/sms.py), a WeChat link a signed one.
        sms = await sms_answer_claims(request, runtime)
        return _claims(request, runtime, "answer") if sms is None else sms

    async def answer_page(request: web.Request) -> web.Response:
        claims = await _answer_claims(request)
        if isinstance(claims, web.Response):
            return claims
        async with runtime.db.session() as s:
            loaded = await _load(s, claims)
            if isinstance(loaded, web.Response):
                return loaded
            c, t, m = loaded
            body = _details(c, tz) + f"<div class=row>{html.escape(m.name)}，您好！</div>"
            if c.state == CLOSED:
                body += '<div class=msg>本次集结已结束，无需再回复。谢谢！</div>'
                return _page(c.title, body)
            if t.status != "pending":
                r = service.AnswerResult(c, t.status)
                body += f"<div class=msg>{html.escape(service.answer_message(runtime.services, c, r, t.eta_min))}</div>"
                body += "<div class=row>如有变化，可以重新选择：</div>"
            # 订阅通知 consent for call-ups, where WeChat can ask for it (bot/web/notices.py).
            return _page(c.title, body + _buttons() + await subscribe_button(request, runtime, ["callup"]))

    async def answer_post(request: web.Request) -> web.Response:
        claims = await _answer_claims(request)
        if isinstance(claims, web.Response):
            return claims
        try:
            form = await request.post()
        except Exception:
            return _error(400, "提交有误", "提交的内容无法读取，请返回重新选择。")
        answer = str(form.get("a", ""))
        eta_raw = str(form.get("eta", "") or "").strip()
        if answer not in service.ANSWERS:
            return _error(400, "提交有误", "请点“到”、“晚到”或“不能到”按钮回复。")
        eta = parse_eta(eta_raw) if eta_raw else None  # the chat's reader: 1..1440 minutes, or None
        now = runtime.clock.now()

        async def record(s: AsyncSession) -> Any:
            return await service.record_answer(s, runtime.services, claims["c"], claims["m"], answer, now,
                                               eta_min=eta, via=claims.get("via", "web"))

        try:
            # On SQLite answers join the chat turns' group commit: one fsync for all that arrive together.
            # On PostgreSQL one member tapping different answers at the same instant can deadlock (their
            # row vs the call-up row): db.transaction runs it again; a conflict that outlives its retries
            # gets the app's Chinese "tap again" page (bot.app._translate), never a 500.
            r = await runtime.db.transaction(record)
        except service.CallupError as e:
            return _error(404, "没有找到这次集结", str(e))
        if r.recorded_as is None:
            return _error(409, "集结已结束", r.message)
        raise web.HTTPSeeOther(location=request.path)

    async def roster_page(request: web.Request) -> web.Response:
        claims = _claims(request, runtime, "roster")
        if isinstance(claims, web.Response):
            return claims
        async with runtime.db.session() as s:
            c = await s.get(CallUp, claims["c"])
            if c is None:
                return _error(404, "没有找到这次集结", "这次集结已不存在。")
            r = await service.roster(s, runtime.services, c, runtime.clock.now())
            people = await service.roster_members(s, c)
        # Where late arrivals count, the first figure is what the quorum counts (到 + 晚到), as in chat.
        first = ("counted", f"到+晚到（需 {r['needed']}）") if r["late_counts"] else ("confirmed", f"到（需 {r['needed']}）")
        counts = "".join(f"<div><b>{r[k]}</b>{label}</div>" for k, label in (
            first, ("late", "晚到"), ("declined", "不能到"), ("no_answer", "未回复"), ("standby", "备用")))
        skills = "".join(f"<div class=row>{html.escape(sk)}：{v['confirmed']}/{v['needed']}</div>"
                         for sk, v in r["by_skill"].items() if v["needed"])
        rows = []
        for p in sorted(people, key=lambda p: (STATUS_ORDER.index(p["status"]), p["team"], p["name"])):
            word = texts.STATUS_WORDS.get(p["status"], p["status"])
            if p["status"] == "late" and p["eta_min"]:
                word += f"（{p['eta_min']}分）"
            if not p["bound"] and p["status"] == "pending":
                word += "（未绑定，已发短信）" if p.get("sms") in ("sent", "pending", "sending") else "（未绑定，请电话通知）"
            elif p.get("by_sms"):
                word += "（短信回复）"
            tel = html.escape(p["phone"])
            rows.append(f"<tr><td>{html.escape(p['name'])}<br><small>{html.escape(p['team'])}·"
                        f"{html.escape('、'.join(p['skills']))}</small></td><td>{html.escape(word)}</td>"
                        f'<td><a class=tel href="tel:{tel}">拨打</a></td></tr>')
        body = (_details(c, tz) + f'<div class=counts>{counts}</div>'
                + (f"<div class=card><b>按技能</b>{skills}</div>" if skills else "")
                + f"<div class=card><table><tr><th>姓名</th><th>回复</th><th></th></tr>{''.join(rows)}</table></div>"
                + f"<div class=row><small>更新于 {html.escape(fmt_local(runtime.clock.now(), tz, '%H:%M:%S'))}，"
                  "每 30 秒自动刷新</small></div>")
        return _page(f"集结名单 #{c.id}", body, refresh=30)

    app.router.add_get("/r/{token}", answer_page)
    app.router.add_post("/r/{token}", answer_post)
    app.router.add_get("/callup/roster/{token}", roster_page)
