"""人工 with a real handoff: while a ticket is open the person talks to staff, not to the bot.

How it goes, for the person:

1. 人工 (or "请工作人员回答" after an unanswered question) — their next message opens a ticket (its first
   message) and they are told ONCE that a staff member will reply here and how to end it;
2. from then on everything they send — text, a note for an image or a voice message — goes into the ticket's
   thread (:func:`forward`, a :func:`flows.api.takeover` hook: before 帮助 / 取消 and every flow), silently;
3. 结束人工 (or 结束 / 退出 / 返回 / 取消) ends it; so does staff closing the ticket, after which the next
   message goes to the bot again.

For staff: a new ticket is pushed to every staff member on duty (:func:`storage.tickets.on_duty`) with its
number and how to answer; they reply from the console's 人工 page or in WeChat chat with ``回复 12 内容`` /
``结束 12`` (:func:`staff_command`); the person's follow-ups are pushed to the staff member who answered last.
:func:`reply` and :func:`close` are the one service the console, the chat and the CLI share: the thread
message, the push through the outbox (channel chosen when it is sent: kefu inside the 48-hour window,
otherwise 订阅通知 / template / SMS) and the audit record are written in the caller's transaction.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import Context, Flow, before_route, flow, get_flow, plain_text, takeover
from storage import tickets as store
from storage.console import audit
from storage.models import OutboxMessage, Ticket, User
from storage.outbox import HIGH, Push, enqueue

#: The conversation state of a person in a handoff: flow ``human``, step ``live``, slot ``ticket``.
FLOW, LIVE = "human", "live"
#: Words (the whole message) that end a handoff from the person's side.
END_WORDS = frozenset({"结束人工", "结束", "退出", "返回", "取消", "结束对话", "退出人工", "结束服务", "不聊了"})
KIND_NOTES = {
    "image": "［图片］对方发来一张图片（后台看不到图片，请在微信公众平台“消息管理”查看，或请对方用文字说明）",
    "voice": "［语音］对方发来一段语音，没能转成文字（请在微信公众平台“消息管理”收听，或请对方打字）",
    "video": "［视频］对方发来一段视频（请在微信公众平台“消息管理”查看）",
    "shortvideo": "［视频］对方发来一段小视频（请在微信公众平台“消息管理”查看）",
    "link": "［链接］对方发来一个链接（请在微信公众平台“消息管理”查看）",
    "file": "［文件］对方发来一个文件（请在微信公众平台“消息管理”查看）",
    "location": "［位置］对方发来一个位置（本服务号不保存位置信息）",
}
#: What staff read in chat: how to answer a ticket.
STAFF_HELP = ("【人工留言 回复方法】\n"
              "回复 编号 内容：例如“回复 12 您好，补贴明天发放”\n"
              "结束 编号：例如“结束 12”，结束这次人工服务\n"
              "留言 列表：查看待回复的留言\n"
              "也可以在电脑上打开工作人员后台的“人工”页面回复。")
_REPLY = re.compile(r"^\s*回复\s*[#＃]?\s*(\d{1,9})\s*[:：,，\s]\s*(.+)$", re.S)
_REPLY_NO_TEXT = re.compile(r"^\s*回复\s*[#＃]?\s*(\d{1,9})\s*$")
_CLOSE = re.compile(r"^\s*结束\s*[#＃]?\s*(\d{1,9})\s*$")
_LIST = frozenset({"留言列表", "留言 列表", "待回复", "人工列表", "回复帮助", "人工帮助"})


# ---------------------------------------------------------------------------------------------------
# The person's side


async def open_ticket(ctx: Context, text: str, *, kind: str = "text", source: dict[str, Any] | None = None) -> Ticket:
    """Open a ticket with the person's first message, hand the conversation over (flow ``human``, step
    ``live``), tell the person once, and push the ticket to staff on duty. An open ticket of theirs is
    reused (a second 人工 adds to the same thread)."""
    existing = await store.open_ticket_of(ctx.session, ctx.openid)
    if existing is not None:
        await store.add(ctx.session, existing, store.PERSON, text, ctx.now, kind=kind)
        ticket = existing
    else:
        context: dict[str, Any] = {"from": source or {},
                                   "recent": await store.recent_replies(ctx.session, ctx.openid)}
        ticket = await store.create(ctx.session, ctx.openid, text, context, ctx.now, kind=kind)
        await _notify_staff_new(ctx.session, ticket, ctx.user, text, ctx.now)
    ctx.enter(FLOW, step=LIVE, slots={"ticket": ticket.id})
    ctx.say(f"已收到您的留言，已转给工作人员（编号 {ticket.id}）。工作人员会在这里回复您，请稍候。\n"
            "在这期间您发的消息都会转给工作人员。\n回复“结束人工”结束对话。")
    return ticket


def source_of(ctx: Context) -> dict[str, Any]:
    """What the person was doing when they asked for 人工 (the flow they were in), for staff."""
    flow, step = ctx.began
    if not flow or flow == FLOW:
        return {}
    try:
        title = get_flow(flow).title or flow
    except Exception:  # a flow renamed since: the name is still a hint
        title = flow
    return {"flow": flow, "title": title, "step": step}


@takeover
async def forward(ctx: Context) -> bool:
    """While the person's conversation is handed over, their messages go to the ticket (see module doc)."""
    if ctx.state.flow != FLOW:
        return False
    if ctx.state.step != LIVE:
        # Waiting for the first message: a photo or a voice message opens the ticket too (text goes the
        # normal way, so that 取消 still leaves and Human.step reads it).
        if ctx.inbound.kind in KIND_NOTES and ctx.inbound.kind != "location":
            await open_ticket(ctx, KIND_NOTES[ctx.inbound.kind], kind=ctx.inbound.kind,
                              source=ctx.state.slots.get("from") or {})
            return True
        return False
    ticket_id = ctx.state.slots.get("ticket")
    ticket = await ctx.session.get(Ticket, ticket_id) if isinstance(ticket_id, int) else None
    if ticket is None or ticket.status != store.OPEN:
        ctx.clear()  # staff closed it (the person was told by a push): the bot listens again
        return False
    text = ctx.text
    if ctx.inbound.kind == "text" and _norm(text) in END_WORDS:
        await store.close(ctx.session, ticket, ctx.now, "对方结束了人工服务")
        staff = await store.last_staff(ctx.session, ticket.id)
        if staff:
            await enqueue(ctx.session, Push(openid=staff, purpose="notice", key=f"ticket:{ticket.id}:ended",
                                            text=f"人工留言 {ticket.id} 号：对方已结束对话。", ref_type="ticket",
                                            ref_id=ticket.id), ctx.now)
        ctx.clear()
        ctx.say(f"已结束人工服务（编号 {ticket.id}）。谢谢您！\n回复“帮助”查看功能，回复“人工”可再次联系工作人员。")
        return True
    if ctx.inbound.kind == "text" and text:
        kind = "voice" if ctx.inbound.extra.get("voice") else "text"
        body = text if kind == "text" else f"［语音转文字］{text}"
    else:
        kind = ctx.inbound.kind
        body = KIND_NOTES.get(kind, f"［{kind}］对方发来一条暂不支持的消息")
    msg = await store.add(ctx.session, ticket, store.PERSON, body, ctx.now, kind=kind)
    staff = await store.last_staff(ctx.session, ticket.id)
    if staff:
        name = ctx.user.name or "对方"
        await enqueue(ctx.session, Push(
            openid=staff, purpose="notice", key=f"ticket:{ticket.id}:in:{msg.id}",
            text=f"人工留言 {ticket.id} 号，{name}说：\n{plain_text(body)[:600]}\n\n回复“回复 {ticket.id} 内容”答复。",
            priority=HIGH, ref_type="ticket", ref_id=ticket.id), ctx.now)
    return True  # silence: the person was told once that staff answer here


@before_route
async def end_when_not_live(ctx: Context) -> bool:
    """结束人工 when no staff conversation is open: say so (instead of a puzzled fallback answer)."""
    if ctx.text != "结束人工":
        return False
    if ctx.state.flow == FLOW:  # asked 人工 but wrote nothing yet: no ticket to end, just leave
        ctx.clear()
        ctx.say("好的，已退出“人工留言”。回复“帮助”查看功能。")
        return True
    ctx.say("您现在没有在和工作人员对话。回复“人工”可以联系工作人员，回复“帮助”查看功能。")
    return True


def _norm(text: str) -> str:
    return re.sub(r"[\s。.!！~～]+", "", text)


# ---------------------------------------------------------------------------------------------------
# The staff side: one service for console, chat and CLI


class TicketProblem(Exception):
    """A staff action that cannot be done (unknown number, closed ticket, empty reply): ``str()`` is the
    Chinese sentence to show."""


async def reply(session: AsyncSession, ticket_id: int, text: str, *, staff: str, via: str, now: datetime,
                staff_name: str = "") -> tuple[Ticket, store.TicketMessage]:
    """A staff reply: into the thread, out to the person through the outbox (purpose ``ticket_reply``),
    and into the audit log. Raises :class:`TicketProblem`."""
    body = plain_text(text).strip()
    if not body:
        raise TicketProblem("回复内容是空的，请写上要回复的话。")
    if len(body) > 600:
        raise TicketProblem(f"回复太长了（{len(body)} 字），请控制在 600 字以内，分几条发送。")
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        raise TicketProblem(f"没有 {ticket_id} 号人工留言，请核对编号。")
    if ticket.status != store.OPEN:
        raise TicketProblem(f"{ticket_id} 号人工留言已经结束，不能再回复。")
    msg = await store.add(session, ticket, store.STAFF, body, now, staff_openid=staff, via=via)
    push = Push(openid=ticket.openid, purpose="ticket_reply", key=f"ticket:{ticket.id}:reply:{msg.id}",
                text=f"工作人员回复（编号 {ticket.id}）：\n{body}\n\n直接回复即可继续对话；回复“结束人工”结束。",
                priority=HIGH, data={"title": "留言回复", "content": body}, ref_type="ticket", ref_id=ticket.id)
    await enqueue(session, push, now)
    msg.outbox_id = (await session.execute(select(OutboxMessage.id).where(
        OutboxMessage.idempotency_key == f"{push.openid}:{push.key}"[:200]))).scalar_one_or_none()
    ticket.staff_reply = body
    await audit(session, actor=staff, actor_name=staff_name, action="ticket.reply", now=now, via=via,
                target_type="ticket", target_id=ticket.id, summary=f"回复人工留言 {ticket.id} 号",
                detail={"chars": len(body)})
    return ticket, msg


async def close(session: AsyncSession, ticket_id: int, *, staff: str, via: str, now: datetime,
                staff_name: str = "", notify: bool = True) -> Ticket:
    """Staff end a ticket: a note in the thread, the person told (``notify``; their next message goes to the
    bot again), the audit log. Raises :class:`TicketProblem`."""
    ticket = await session.get(Ticket, ticket_id)
    if ticket is None:
        raise TicketProblem(f"没有 {ticket_id} 号人工留言，请核对编号。")
    if not await store.close(session, ticket, now, f"{staff_name or '工作人员'}结束了人工服务", staff_openid=staff,
                             via=via):
        raise TicketProblem(f"{ticket_id} 号人工留言已经结束了。")
    if notify:
        await enqueue(session, Push(
            openid=ticket.openid, purpose="ticket_reply", key=f"ticket:{ticket.id}:closed",
            text=f"工作人员已结束本次人工服务（编号 {ticket.id}）。\n如还有问题，回复“人工”再联系我们；回复“帮助”查看功能。",
            data={"title": "人工服务已结束", "content": f"编号 {ticket.id}"}, ref_type="ticket", ref_id=ticket.id), now)
    await audit(session, actor=staff, actor_name=staff_name, action="ticket.close", now=now, via=via,
                target_type="ticket", target_id=ticket.id, summary=f"结束人工留言 {ticket.id} 号")
    return ticket


def window_open(user: User | None, now: datetime, window_h: int = 48) -> bool:
    """Whether a customer-service (kefu) message can still reach the person: they wrote in the last
    ``window_h`` hours (the outbox checks the quota when it sends)."""
    return bool(user and user.subscribed and user.last_message_at and now - user.last_message_at <= timedelta(hours=window_h))


async def _notify_staff_new(session: AsyncSession, ticket: Ticket, person: Any, text: str, now: datetime) -> int:
    """Push a new ticket to every staff member on duty (not the person themselves)."""
    who = " ".join(x for x in (getattr(person, "name", None), getattr(person, "township", None)) if x) or "一位用户"
    body = (f"【新的人工留言 {ticket.id} 号】\n{who}：\n{plain_text(text)[:500]}\n\n"
            f"回复“回复 {ticket.id} 内容”答复，“结束 {ticket.id}”结束。")
    n = 0
    for u in await store.on_duty(session):
        if u.openid == ticket.openid:
            continue
        await enqueue(session, Push(openid=u.openid, purpose="notice", key=f"ticket:{ticket.id}:new",
                                    text=body, priority=HIGH, ref_type="ticket", ref_id=ticket.id), now)
        n += 1
    return n


@before_route
async def staff_command(ctx: Context) -> bool:
    """Staff in WeChat chat: ``回复 12 内容``, ``结束 12``, ``留言列表`` (and help for a malformed one)."""
    roles = ctx.user.role_set
    if "staff" not in roles and "admin" not in roles:
        return False
    text = ctx.text
    if not (text.startswith("回复") or text.startswith("结束") or text in _LIST):
        return False
    staff_name = ctx.user.name or ""
    try:
        if m := _REPLY.match(text):
            ticket, _ = await reply(ctx.session, int(m.group(1)), m.group(2), staff=ctx.openid, via="chat",
                                    now=ctx.now, staff_name=staff_name)
            person = await ctx.session.get(User, ticket.openid)
            note = "" if window_open(person, ctx.now, ctx.config.outbox.kefu_window_h) else \
                "\n（对方超过 48 小时没有发消息，将改用模板消息/短信送达。）"
            ctx.say(f"已回复 {ticket.id} 号。{note}\n结束请回复“结束 {ticket.id}”。")
            return True
        if m := _CLOSE.match(text):
            ticket = await close(ctx.session, int(m.group(1)), staff=ctx.openid, via="chat", now=ctx.now,
                                 staff_name=staff_name)
            ctx.say(f"已结束 {ticket.id} 号人工留言，已通知对方。")
            return True
    except TicketProblem as e:
        ctx.say(f"{e}\n\n{STAFF_HELP}")
        return True
    if m := _REPLY_NO_TEXT.match(text):
        ctx.say(f"请把回复内容写在编号后面，例如“回复 {m.group(1)} 您好，……”。\n\n{STAFF_HELP}")
        return True
    if text in _LIST or text in ("回复", "结束人工帮助"):
        await _list_waiting(ctx)
        return True
    return False  # 回复/结束 followed by something else: an ordinary message


async def _list_waiting(ctx: Context) -> None:
    waiting = await store.waiting(ctx.session, limit=10)
    lines = [f"{w.ticket.id} 号 · {(w.user.name if w.user and w.user.name else '未登记姓名')} · "
             f"{plain_text(w.ticket.text)[:20]}" for w in waiting]
    ctx.say(("待回复的人工留言：\n" + "\n".join(lines)) if lines else "现在没有待回复的人工留言。")
    ctx.say(STAFF_HELP)


@flow
class StaffTickets(Flow):
    """回复留言 (staff menu): the waiting tickets and how to answer them in chat."""

    name = "staff_tickets"
    title = "回复留言"
    roles = frozenset({"staff", "admin"})

    async def start(self, ctx: Context) -> None:
        await _list_waiting(ctx)
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)
