"""Call-up pages: the member's answer page (``/r/<token>``) and the staff roster (``/callup/roster/<token>``).

The answer link carries an opaque token kept in the database (:func:`bot.links.answer_links`) naming a
call-up and a member. The link alone does not let anyone answer: :func:`bot.web.viewer.gate` first learns
who opens it (WeChat OAuth inside WeChat; the last four digits of the member's phone outside it, or for a
member without WeChat) and a forwarded link opened by someone else shows "此链接是发给别人的" and records
nothing. Answers are POSTs to the same URL (plain forms, no JavaScript) followed by a redirect, so a
refresh never answers twice.

The roster link names no one (signed claims: call-up id); the page shows every member's phone, so only
staff see it: a staff member's WeChat (OAuth) inside WeChat; elsewhere the link leads to the console's
call-up board, which needs a console login.

A bad or expired token, or a call-up that no longer exists, gets a clear page with a 4xx status, never a 500.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.clock import fmt_local
from bot.links import ANSWER_KIND, LinkError, verify
from bot.web import viewer
from bot.web.notices import subscribe_button
from bot.web.render import member
from flows.callup import service, texts
from flows.callup.parse import parse_eta
from storage import linktokens
from storage.callup import CLOSED, CallUp, CallUpTarget, Member

STATUS_ORDER = ("pending", "confirmed", "late", "standby", "declined")
EXPIRED = "这个链接已经过期。如仍需回复，请直接回复短信，或在公众号里回复数字：1 到 / 2 晚到 / 3 不能到。"
BROKEN = "这个链接不完整或已损坏。请从公众号消息或短信里重新点开，或直接在公众号里回复。"


def _details(c: CallUp, tz: str) -> dict[str, Any]:
    return {"c": c, "when": texts.when(c, tz), "need": texts.need_text(c),
            "state": texts.STATE_WORDS.get(c.state, c.state)}


class _Gone(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def _answer_target(runtime: Any, s: AsyncSession, token: str) -> tuple[CallUp, CallUpTarget, Member]:
    """The call-up, target row and member of an answer token; :class:`_Gone` with the page otherwise."""
    if "." in token:  # a signed link of earlier releases: its claims were readable and forgeable by key
        raise _Gone(viewer.problem(410, "链接已过期", EXPIRED))
    try:
        row = await linktokens.resolve(s, token, ANSWER_KIND, runtime.clock.now())
    except linktokens.LinkTokenError as e:
        if e.reason == "expired":
            raise _Gone(viewer.problem(410, "链接已过期", EXPIRED)) from None
        raise _Gone(viewer.problem(404 if linktokens.looks_like_token(token) else 400, "链接无效", BROKEN)) from None
    data = row.data or {}
    c = await s.get(CallUp, data.get("c")) if isinstance(data.get("c"), int) else None
    m = await s.get(Member, data.get("m")) if isinstance(data.get("m"), int) else None
    t = None
    if c is not None and m is not None:
        t = (await s.execute(select(CallUpTarget).where(CallUpTarget.callup_id == c.id,
                                                        CallUpTarget.member_id == m.id))).scalar_one_or_none()
    if c is None or m is None or t is None:
        raise _Gone(viewer.problem(404, "没有找到这次集结", "这次集结或您的记录已不存在，请联系队长或工作人员。"))
    return c, t, m


def setup(app: web.Application, runtime: Any) -> None:
    """Add the answer page and the staff roster page."""
    tz = runtime.config.bot.timezone

    async def _person(token: str) -> tuple[CallUp, CallUpTarget, Member, viewer.Person] | web.Response:
        async with runtime.db.session() as s:
            try:
                c, t, m = await _answer_target(runtime, s, token)
            except _Gone as g:
                return g.response
        return c, t, m, viewer.Person(m.openid, m.id, m.phone)

    async def answer_page(request: web.Request) -> web.Response:
        found = await _person(request.match_info["token"])
        if isinstance(found, web.Response):
            return found
        c, t, m, person = found
        seen = await viewer.gate(runtime, request, person)
        if isinstance(seen, web.Response):
            return seen
        message = ""
        if c.state != CLOSED and t.status != "pending":
            message = service.answer_message(runtime.services, c, service.AnswerResult(c, t.status), t.eta_min)
        # 订阅通知 consent for call-ups, where WeChat can ask for it (bot/web/notices.py).
        button = await subscribe_button(request, runtime, ["callup"]) if c.state != CLOSED else ""
        return member("member/answer.html", request=request, tz=tz, title=c.title, name=m.name,
                      closed=c.state == CLOSED, message=message, subscribe=Markup(button), **_details(c, tz))

    async def answer_post(request: web.Request) -> web.Response:
        found = await _person(request.match_info["token"])
        if isinstance(found, web.Response):
            return found
        c, _, m, person = found
        try:
            form = await request.post()
        except Exception:
            return viewer.problem(400, "提交有误", "提交的内容无法读取，请返回重新选择。")
        if form.get("gate") == "digits":
            return await viewer.check_digits(runtime, request, person, str(form.get("digits", "")))
        seen = await viewer.gate(runtime, request, person)
        if isinstance(seen, web.Response):
            return seen  # not the member (or not yet known): nothing is recorded
        answer = str(form.get("a", ""))
        eta_raw = str(form.get("eta", "") or "").strip()
        if answer not in service.ANSWERS:
            return viewer.problem(400, "提交有误", "请点“到”、“晚到”或“不能到”按钮回复。")
        eta = parse_eta(eta_raw) if eta_raw else None  # the chat's reader: 1..1440 minutes, or None
        now = runtime.clock.now()

        async def record(s: AsyncSession) -> Any:
            return await service.record_answer(s, runtime.services, c.id, m.id, answer, now, eta_min=eta,
                                               via="web" if m.openid else "sms_link")

        try:
            # On SQLite answers join the chat turns' group commit: one fsync for all that arrive together.
            # On PostgreSQL one member tapping different answers at the same instant can deadlock (their
            # row vs the call-up row): db.transaction runs it again; a conflict that outlives its retries
            # gets the app's Chinese "tap again" page (bot.app._translate), never a 500.
            r = await runtime.db.transaction(record)
        except service.CallupError as e:
            return viewer.problem(404, "没有找到这次集结", str(e))
        if r.recorded_as is None:
            return viewer.problem(409, "集结已结束", r.message)
        return web.Response(status=303, headers={"Location": request.path})

    async def roster_page(request: web.Request) -> web.Response:
        try:
            claims = verify(runtime.config, request.match_info.get("token", ""),
                            now=service.epoch(runtime.clock.now()))
        except LinkError as e:
            if e.reason == "expired":
                return viewer.problem(410, "链接已过期", "这个名单链接已过期。请在公众号回复“集结状态”获取新的链接。")
            return viewer.problem(400, "链接无效", "这个链接不完整或已损坏。请从公众号消息里重新点开。")
        if not isinstance(claims.get("c"), int) or claims.get("s") != "roster":
            return viewer.problem(400, "链接无效", "这个链接不是集结名单的链接。")
        seen = await viewer.current(runtime, request)
        if not viewer.in_wechat(request) and (seen is None or not seen.openid):
            # A browser outside WeChat: the console's board shows the same, behind the console login.
            return web.Response(status=303, headers={"Location": f"/staff/callups/{claims['c']}"})
        staff = await viewer.staff_viewer(runtime, request)
        if isinstance(staff, web.Response):
            return staff
        async with runtime.db.session() as s:
            c = await s.get(CallUp, claims["c"])
            if c is None:
                return viewer.problem(404, "没有找到这次集结", "这次集结已不存在。")
            r = await service.roster(s, runtime.services, c, runtime.clock.now())
            people = await service.roster_members(s, c)
        # Where late arrivals count, the first figure is what the quorum counts (到 + 晚到), as in chat.
        first = ("counted", f"到+晚到（需 {r['needed']}）") if r["late_counts"] else ("confirmed", f"到（需 {r['needed']}）")
        counts = [(r[k], label) for k, label in (first, ("late", "晚到"), ("declined", "不能到"),
                                                  ("no_answer", "未回复"), ("standby", "备用"))]
        skills = [(sk, v) for sk, v in r["by_skill"].items() if v["needed"]]
        rows = []
        for p in sorted(people, key=lambda p: (STATUS_ORDER.index(p["status"]), p["team"], p["name"])):
            word = texts.STATUS_WORDS.get(p["status"], p["status"])
            if p["status"] == "late" and p["eta_min"]:
                word += f"（{p['eta_min']}分）"
            if not p["bound"] and p["status"] == "pending":
                word += "（未绑定，已发短信）" if p.get("sms") in ("sent", "pending", "sending") else "（未绑定，请电话通知）"
            elif p.get("by_sms"):
                word += "（短信回复）"
            rows.append({**p, "word": word})
        return member("member/roster.html", request=request, tz=tz, title=f"集结名单 #{c.id}", refresh=30,
                      counts=counts, skills=skills, people=rows,
                      updated=fmt_local(runtime.clock.now(), tz, "%H:%M:%S"), **_details(c, tz))

    app.router.add_get("/r/{token}", answer_page)
    app.router.add_post("/r/{token}", answer_post)
    app.router.add_get("/callup/roster/{token}", roster_page)
