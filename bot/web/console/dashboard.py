"""``/staff/``: today at a glance.

Where each figure comes from (all "today" = since local midnight, ``bot.timezone``):

* messages: ``inbound_dedup`` rows of messages (key ``m:…``; kept ``bot.dedup_ttl_h``, 48 h by default),
  and the people who wrote (``users.last_message_at``); follows and unfollows from ``users``;
* questions answered / offered a list / declined: ``qa_asks`` (one row per question the Q&A decided);
* open 人工 tickets: ``tickets``; 寄语 waiting for review: ``memorial_messages``;
* open call-ups: ``callups`` with their live roster; the outbox: ``outbox`` by status and channel;
* last errors: the latest failed pushes (with their reason) and this process's last ERROR log lines.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select

from bot.web.console.base import Console, recent_errors
from flows.broadcast.service import CHANNEL_WORDS, reason_text
from flows.callup import service as callups
from storage.memorial import PENDING, MemorialMessage
from storage.models import InboundDedup, OutboxMessage, Ticket, User
from storage.qa import ask_counts

PURPOSE_WORDS = {"late_reply": "迟到的回复", "callup": "集结通知", "callup_progress": "集结进度", "job_alert": "岗位推送",
                 "memorial_reminder": "祭英烈提醒", "broadcast": "群发通知", "ticket_reply": "留言回复", "notice": "通知"}


async def figures(c: Console) -> dict[str, Any]:
    """Every figure of the dashboard, read in one session."""
    start = c.today_start()
    now = c.now()
    T = OutboxMessage.__table__
    async with c.db.session() as s:
        messages = (await s.execute(select(func.count()).select_from(InboundDedup).where(
            InboundDedup.key.startswith("m:"), InboundDedup.created_at >= start))).scalar_one()
        writers = (await s.execute(select(func.count()).select_from(User).where(User.last_message_at >= start))).scalar_one()
        followers = (await s.execute(select(func.count()).select_from(User).where(User.subscribed.is_(True)))).scalar_one()
        followed = (await s.execute(select(func.count()).select_from(User).where(User.subscribed_at >= start))).scalar_one()
        unfollowed = (await s.execute(select(func.count()).select_from(User).where(User.unsubscribed_at >= start))).scalar_one()
        qa = await ask_counts(s, start)
        open_tickets = (await s.execute(select(func.count()).select_from(Ticket).where(Ticket.status == "open"))).scalar_one()
        new_tickets = (await s.execute(select(func.count()).select_from(Ticket).where(Ticket.created_at >= start))).scalar_one()
        review = (await s.execute(select(func.count()).select_from(MemorialMessage).where(
            MemorialMessage.status == PENDING))).scalar_one()
        active = await callups.active_callups(s)
        boards = []
        for cu in active[:10]:
            boards.append((cu, await callups.roster(s, c.rt.services, cu, now)))
        by_status = dict((await s.execute(select(T.c.status, func.count()).group_by(T.c.status))).all())
        due_now = (await s.execute(select(func.count()).select_from(T).where(T.c.status == "pending",
                                                                          T.c.due_at <= now))).scalar_one()
        today_rows = (await s.execute(select(T.c.status, T.c.channel, func.count()).where(T.c.created_at >= start)
                                   .group_by(T.c.status, T.c.channel))).all()
        failures = (await s.execute(select(T.c.created_at, T.c.purpose, T.c.last_error).where(T.c.status == "failed")
                                 .order_by(T.c.id.desc()).limit(8))).all()
    today: dict[str, int] = {}
    sent_by_channel: dict[str, int] = {}
    for status, channel, n in today_rows:
        today[status] = today.get(status, 0) + int(n)
        if status == "sent":
            sent_by_channel[CHANNEL_WORDS.get(channel or "", channel or "")] = int(n)
    return {
        "messages": messages, "writers": writers, "followers": followers, "followed": followed,
        "unfollowed": unfollowed, "qa": qa, "qa_total": sum(qa.values()), "open_tickets": open_tickets,
        "new_tickets": new_tickets, "review": review, "boards": boards, "more_callups": max(0, len(active) - 10),
        "outbox": {"pending": int(by_status.get("pending", 0)), "due_now": due_now,
                   "scheduled": int(by_status.get("pending", 0)) - due_now, "sending": int(by_status.get("sending", 0)),
                   "failed": int(by_status.get("failed", 0))},
        "today": today, "sent_by_channel": sent_by_channel,
        "failures": [(at, PURPOSE_WORDS.get(p, p), reason_text(r), r) for at, p, r in failures],
        "errors": recent_errors(),
    }


def routes(app: web.Application, c: Console) -> None:
    async def dashboard(request: web.Request) -> web.Response:
        return c.page(request, "console/dashboard.html", title="首页", f=await figures(c), start=c.today_start())

    app.router.add_get("/staff/", dashboard)
