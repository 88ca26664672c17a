"""人工: the inbox of open tickets — who is waiting and for how long — and one ticket's conversation, where
staff reply and end it.

A reply goes through :func:`flows.tickets.reply` — the service the chat's ``回复 12 …`` and
``vetbot tickets reply`` use: into the thread, out through the outbox as a customer-service (kefu) message
while the person's 48-hour window is open, otherwise by the fallback channels the outbox has (订阅通知,
template message, SMS), and into the audit log. The page says which before staff write. The list and
the thread refresh themselves (``refresh.js``; a 刷新 link without JavaScript).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select

from bot.web.console.base import Console, field, form, int_or_none, see_other, staff_of
from flows.tickets import TicketProblem, close, reply, window_open
from storage import tickets as store
from storage.models import OutboxMessage, Ticket, User

#: How a reply's push went, in words.
DELIVERY = {"pending": "等待发送", "sending": "正在发送", "sent": "已送达微信", "failed": "发送失败",
            "cancelled": "已取消（对方已取消关注）"}
CHANNELS = {"kefu": "客服消息", "subscribe": "订阅通知", "template": "模板消息", "sms": "短信"}
SOURCE_STEPS = {"policy_qa": "政策问答里没查到答案的问题"}


def waited(now: Any, since: Any) -> str:
    """'不到 1 分钟', '3 分钟', '2 小时 5 分', '1 天 3 小时': how long someone has been waiting."""
    if since is None:
        return ""
    mins = max(0, int((now - since).total_seconds() // 60))
    if mins < 1:
        return "不到 1 分钟"
    if mins < 60:
        return f"{mins} 分钟"
    hours, mins = divmod(mins, 60)
    if hours < 24:
        return f"{hours} 小时 {mins} 分" if mins else f"{hours} 小时"
    days, hours = divmod(hours, 24)
    return f"{days} 天 {hours} 小时" if hours else f"{days} 天"


def routes(app: web.Application, c: Console) -> None:
    window_h = c.cfg.outbox.kefu_window_h

    async def _list() -> dict[str, Any]:
        async with c.db.session() as s:
            rows = await store.waiting(s)
            closed = list((await s.execute(select(Ticket).where(Ticket.status == store.CLOSED)
                                           .order_by(Ticket.closed_at.desc(), Ticket.id.desc()).limit(10))).scalars())
            names = dict((await s.execute(select(User.openid, User.name).where(
                User.openid.in_({t.openid for t in closed})))).all()) if closed else {}
        return {"rows": rows, "closed": closed, "names": names, "waited": waited}

    async def index(request: web.Request) -> web.Response:
        return c.page(request, "console/inbox.html", title="人工", done=request.query.get("done", ""),
                      **await _list())

    async def list_part(request: web.Request) -> web.Response:
        return c.page(request, "console/_inbox_list.html", **await _list())

    async def _ticket(request: web.Request) -> dict[str, Any] | web.Response:
        tid = int_or_none(request.match_info["id"])
        async with c.db.session() as s:
            ticket = await s.get(Ticket, tid) if tid is not None else None
            if ticket is None:
                return c.message(request, 404, "没有这条留言", "没有找到这条人工留言，可能已被删除。", back="/staff/inbox")
            person = await s.get(User, ticket.openid)
            thread = await store.thread(s, ticket.id)
            pushes = {o.id: o for o in (await s.execute(select(OutboxMessage).where(
                OutboxMessage.id.in_({m.outbox_id for m in thread if m.outbox_id})))).scalars()} \
                if any(m.outbox_id for m in thread) else {}
            staff_ids = {m.staff_openid for m in thread if m.staff_openid}
            staff_names = dict((await s.execute(select(User.openid, User.name).where(
                User.openid.in_(staff_ids)))).all()) if staff_ids else {}
            earlier = await store.earlier(s, ticket.openid, ticket.id)
        source = (ticket.context or {}).get("from") or {}
        recent = [(datetime.fromisoformat(r["at"]), str(r.get("bot") or ""))
                  for r in (ticket.context or {}).get("recent") or [] if isinstance(r, dict) and r.get("at")]
        return {"t": ticket, "person": person, "thread": thread, "pushes": pushes, "staff_names": staff_names,
                "earlier": earlier, "recent": recent, "source": source if isinstance(source, dict) else {},
                "in_window": window_open(person, c.now(), int(window_h)), "window_h": int(window_h),
                "delivery": DELIVERY, "channels": CHANNELS, "live": ticket.status == store.OPEN,
                "waited": waited}

    async def detail(request: web.Request) -> web.Response:
        ctx = await _ticket(request)
        if isinstance(ctx, web.Response):
            return ctx
        return c.page(request, "console/inbox_ticket.html", title=f"人工 {ctx['t'].id} 号",
                      done=request.query.get("done", ""), error="", draft="", **ctx)

    async def thread_part(request: web.Request) -> web.Response:
        ctx = await _ticket(request)
        if isinstance(ctx, web.Response):
            return ctx
        return c.page(request, "console/_inbox_thread.html", **ctx)

    async def do_reply(request: web.Request) -> web.Response:
        tid = int_or_none(request.match_info["id"]) or 0
        data = await form(request)
        text = field(data, "text", 2000)
        staff = staff_of(request)
        try:
            async with c.db.session() as s:
                await reply(s, tid, text, staff=staff.openid, staff_name=staff.name, via="console", now=c.now())
        except TicketProblem as e:
            ctx = await _ticket(request)
            if isinstance(ctx, web.Response):
                return ctx
            return c.page(request, "console/inbox_ticket.html", status=400, title=f"人工 {tid} 号", done="",
                          error=str(e), draft=text, **ctx)
        return see_other(f"/staff/inbox/{tid}?done=replied#reply")

    async def do_close(request: web.Request) -> web.Response:
        tid = int_or_none(request.match_info["id"]) or 0
        staff = staff_of(request)
        try:
            async with c.db.session() as s:
                await close(s, tid, staff=staff.openid, staff_name=staff.name, via="console", now=c.now())
        except TicketProblem as e:
            return c.message(request, 400, "无法结束", str(e), back=f"/staff/inbox/{tid}")
        return see_other(f"/staff/inbox?done=closed-{tid}")

    app.router.add_get("/staff/inbox", index)
    app.router.add_get("/staff/inbox/list", list_part)
    app.router.add_get("/staff/inbox/{id}", detail)
    app.router.add_get("/staff/inbox/{id}/thread", thread_part)
    app.router.add_post("/staff/inbox/{id}/reply", do_reply)
    app.router.add_post("/staff/inbox/{id}/close", do_close)
