"""人工 tickets as conversations: the thread of a ticket and who of the staff is on duty.

* ``tickets`` (:class:`storage.models.Ticket`): one per 人工 request. ``text`` is the person's first
  message, ``context`` what the bot knew when they asked (the feature they were in, an unanswered question),
  ``status`` open / closed, ``staff_reply`` the latest staff answer (kept for 我的数据 and the CLI).
* ``ticket_messages``: the thread, in order: what the person wrote while the ticket was open (text, or a
  note for an image or a voice message), staff replies (from the console, from WeChat chat or the CLI) with
  the outbox row that carries each, and notes (closed by whom).
* ``staff_duty``: staff members on leave. A staff member without a row, or with ``on_leave`` false, is on
  duty: new tickets are pushed to them.

The functions here only read and write rows; queueing the pushes that go with them is the flows' business
(:mod:`flows.tickets`), in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, Text, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base
from storage.models import InboundDedup, Ticket, User
from storage.privacy import DELETE, DUTY, Declaration, Retention, declare

OPEN, CLOSED = "open", "closed"
#: Who wrote a thread message.
PERSON, STAFF, NOTE = "person", "staff", "note"
#: A thread message longer than this is cut (WeChat's own text messages stop at 2048 bytes anyway).
MAX_TEXT = 2000


class TicketMessage(Base):
    """One message of a ticket's thread (see the module docstring)."""

    __tablename__ = "ticket_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(Integer, index=True)
    # The person the ticket is about (erasure and 我的数据 find their rows by it).
    openid: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    # person / staff / note
    author: Mapped[str] = mapped_column(String(8))
    # The staff member who wrote a staff message or closed the ticket.
    staff_openid: Mapped[str | None] = mapped_column(String(64))
    # text / image / voice / link / other: what the person sent (a note stands for media).
    kind: Mapped[str] = mapped_column(String(8), default="text")
    text: Mapped[str] = mapped_column(Text)
    # console / chat / cli: where a staff message was written.
    via: Mapped[str | None] = mapped_column(String(8))
    # The push that carries a staff reply to the person (its delivery shows on the inbox page).
    outbox_id: Mapped[int | None] = mapped_column(Integer)


class StaffDuty(Base):
    """A staff member's duty state; no row means on duty."""

    __tablename__ = "staff_duty"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    on_leave: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(DateTime)
    changed_by: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True)
class Waiting:
    """An open ticket as the inbox lists it."""

    ticket: Ticket
    user: User | None
    #: When the person's oldest unanswered message arrived (None: staff answered the last one).
    waiting_since: datetime | None
    last_at: datetime
    messages: int


async def open_ticket_of(session: AsyncSession, openid: str) -> Ticket | None:
    """The person's open ticket, newest first (normally there is at most one)."""
    return (await session.execute(select(Ticket).where(Ticket.openid == openid, Ticket.status == OPEN)
                                  .order_by(Ticket.id.desc()).limit(1))).scalar_one_or_none()


async def create(session: AsyncSession, openid: str, text: str, context: dict[str, object], now: datetime,
                 kind: str = "text") -> Ticket:
    """A new open ticket whose thread starts with the person's first message."""
    ticket = Ticket(openid=openid, text=text[:MAX_TEXT], context=context, status=OPEN, created_at=now)
    session.add(ticket)
    await session.flush()
    await add(session, ticket, PERSON, text, now, kind=kind)
    return ticket


async def add(session: AsyncSession, ticket: Ticket, author: str, text: str, now: datetime, *, kind: str = "text",
              staff_openid: str | None = None, via: str | None = None, outbox_id: int | None = None) -> TicketMessage:
    """Append a message to the ticket's thread."""
    msg = TicketMessage(ticket_id=ticket.id, openid=ticket.openid, at=now, author=author, kind=kind[:8],
                        text=text[:MAX_TEXT], staff_openid=staff_openid, via=via, outbox_id=outbox_id)
    session.add(msg)
    await session.flush()
    return msg


async def thread(session: AsyncSession, ticket_id: int, limit: int = 200) -> list[TicketMessage]:
    """The ticket's messages, oldest first (the last ``limit``)."""
    rows = (await session.execute(select(TicketMessage).where(TicketMessage.ticket_id == ticket_id)
                                  .order_by(TicketMessage.id.desc()).limit(limit))).scalars()
    return list(reversed(list(rows)))


async def close(session: AsyncSession, ticket: Ticket, now: datetime, note: str, staff_openid: str | None = None,
                via: str | None = None) -> bool:
    """Close an open ticket with a note in its thread; False when it was closed already."""
    if ticket.status != OPEN:
        return False
    ticket.status, ticket.closed_at = CLOSED, now
    await add(session, ticket, NOTE, note, now, staff_openid=staff_openid, via=via)
    return True


async def last_staff(session: AsyncSession, ticket_id: int) -> str | None:
    """The staff member who last answered the ticket (follow-ups are pushed to them)."""
    return (await session.execute(select(TicketMessage.staff_openid).where(
        TicketMessage.ticket_id == ticket_id, TicketMessage.author == STAFF, TicketMessage.staff_openid.is_not(None))
        .order_by(TicketMessage.id.desc()).limit(1))).scalar_one_or_none()


async def waiting(session: AsyncSession, limit: int = 100) -> list[Waiting]:
    """Open tickets, the longest-waiting first (those staff answered last come after)."""
    tickets = list((await session.execute(select(Ticket).where(Ticket.status == OPEN).order_by(Ticket.id)
                                          .limit(limit))).scalars())
    if not tickets:
        return []
    ids = [t.id for t in tickets]
    msgs = (await session.execute(select(TicketMessage.ticket_id, TicketMessage.author, TicketMessage.at)
                                  .where(TicketMessage.ticket_id.in_(ids)).order_by(TicketMessage.id))).all()
    since: dict[int, datetime | None] = {}
    last: dict[int, datetime] = {}
    count: dict[int, int] = {}
    for tid, author, at in msgs:
        count[tid] = count.get(tid, 0) + 1
        last[tid] = at
        if author == STAFF:
            since[tid] = None
        elif author == PERSON and since.get(tid) is None:
            since[tid] = at
    users = {u.openid: u for u in (await session.execute(
        select(User).where(User.openid.in_({t.openid for t in tickets})))).scalars()}
    out = [Waiting(t, users.get(t.openid), since.get(t.id, t.created_at) if t.id not in count else since.get(t.id),
                   last.get(t.id, t.created_at), count.get(t.id, 0)) for t in tickets]
    far = datetime.max
    out.sort(key=lambda w: (w.waiting_since is None, w.waiting_since or far, w.ticket.id))
    return out


async def recent_replies(session: AsyncSession, openid: str, limit: int = 4) -> list[dict[str, str]]:
    """The bot's last replies to ``openid`` as the dedup table still holds them (``bot.dedup_ttl_h``, 48 h by
    default; the person's own words are not stored anywhere), oldest first: what staff see of the recent
    conversation. Read by key range (``m:<openid>:…`` messages, ``e:<openid>:…`` events) on the primary key."""
    rows: list[tuple[datetime, str]] = []
    for prefix in (f"m:{openid}:", f"e:{openid}:"):
        rows += [(r.created_at, r.reply) for r in (await session.execute(
            select(InboundDedup.created_at, InboundDedup.reply).where(
                InboundDedup.key >= prefix, InboundDedup.key < prefix[:-1] + ";", InboundDedup.reply.is_not(None))
            .order_by(InboundDedup.created_at.desc()).limit(limit))).all()]
    rows.sort(key=lambda r: r[0])
    return [{"at": at.isoformat(timespec="seconds"), "bot": text[:600]} for at, text in rows[-limit:]]


async def earlier(session: AsyncSession, openid: str, before_id: int, limit: int = 3) -> list[Ticket]:
    """The person's earlier tickets (newest first), for what was asked before."""
    return list((await session.execute(select(Ticket).where(Ticket.openid == openid, Ticket.id < before_id)
                                       .order_by(Ticket.id.desc()).limit(limit))).scalars())


async def count_open(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Ticket).where(Ticket.status == OPEN)))
               .scalar_one())


# ---------------------------------------------------------------------------------------------------
# Duty


async def on_leave(session: AsyncSession) -> set[str]:
    """Openids of staff members on leave."""
    return set((await session.execute(select(StaffDuty.openid).where(StaffDuty.on_leave.is_(True)))).scalars())


async def on_duty(session: AsyncSession) -> list[User]:
    """Staff members (staff or admin role) who follow the account and are not on leave."""
    away = await on_leave(session)
    rows = (await session.execute(select(User).where(
        (User.roles.contains("staff")) | (User.roles.contains("admin")), User.subscribed.is_(True))
        .order_by(User.openid))).scalars()
    return [u for u in rows if (u.has_role("staff") or u.has_role("admin")) and u.openid not in away]


async def set_leave(session: AsyncSession, openid: str, leave: bool, *, by: str, now: datetime) -> bool:
    """Put a staff member on leave or back on duty; False when nothing changed."""
    row = await session.get(StaffDuty, openid)
    if row is None:
        if not leave:
            return False
        session.add(StaffDuty(openid=openid, on_leave=True, changed_at=now, changed_by=by[:64]))
        await session.flush()
        return True
    if row.on_leave == leave:
        return False
    row.on_leave, row.changed_at, row.changed_by = leave, now, by[:64]
    return True


declare(
    Declaration(
        "ticket_messages", label="人工对话记录", purpose="您和工作人员在“人工”里的往来消息",
        basis=DUTY, subject="openid", on_erase=DELETE, personal=("text",), refs=("staff_openid",),
        plain=("author", "kind", "via"),
        retention=(Retention("ticket_days", "at", note="{days} 天后删除（与人工留言相同）"),)),
    Declaration(
        "staff_duty", label="工作人员值班状态", purpose="新的人工留言只推送给在岗的工作人员",
        basis=DUTY, subject="openid", on_erase=DELETE, refs=("changed_by",),
        kept="直到取消工作人员身份或注销", seen_by="本局工作人员"),
)
