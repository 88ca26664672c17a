"""Staff notices (群发通知): one row per notice, its pushes are outbox rows (``ref_type='broadcast'``).

A notice to many people is queued in chunks (:func:`flows.broadcast.service.fan_out`); ``queued_at`` says
when that finished. The notice's ``key`` is its idempotency key (the same notice for the same day or send time is queued
once, see :func:`flows.broadcast.service.notice_key`); each recipient's push is the outbox row
``<openid>:<key>``. Delivery results live on the outbox rows; :func:`delivery` aggregates them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String, Text, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.models import OutboxMessage, User
from storage.outbox_repo import CANCELLED_BY_STAFF
from storage.privacy import DUTY, Declaration, declare

REF = "broadcast"


class Broadcast(Base):
    """One notice as staff wrote it, with the audience it went to."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(500))
    # {"role": …, "township": …, "team_id": …}; empty = everyone who follows.
    audience: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    audience_label: Mapped[str] = mapped_column(String(200), default="")
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    due_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # When every recipient's push was queued; NULL while a large notice is still being fanned out (in
    # chunks, so no transaction holds the database for long; the broadcast_fanout tick finishes it).
    queued_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    # console / chat / cli
    via: Mapped[str] = mapped_column(String(16), default="cli")
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime)
    cancelled_by: Mapped[str | None] = mapped_column(String(64))
    # A fault or disaster warning (``vetbot broadcast --warning``): WeChat allows a template message that
    # nobody asked for only for these, so only these go out as templates to everyone.
    warning: Mapped[bool] = mapped_column(Boolean, default=False)


async def by_key(session: AsyncSession, key: str) -> Broadcast | None:
    return (await session.execute(select(Broadcast).where(Broadcast.key == key))).scalar_one_or_none()


async def recent(session: AsyncSession, limit: int = 50, before_id: int | None = None) -> list[Broadcast]:
    """Newest first."""
    q = select(Broadcast).order_by(Broadcast.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(Broadcast.id < before_id)
    return list((await session.execute(q)).scalars())


async def status_of(session: AsyncSession, ids: list[int]) -> dict[int, dict[str, int]]:
    """Per notice: how many of its pushes are in each outbox status (``taken_back``: cancelled by staff)."""
    out: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    T = OutboxMessage.__table__
    rows = await session.execute(select(T.c.ref_id, T.c.status, func.count()).where(
        T.c.ref_type == REF, T.c.ref_id.in_(ids)).group_by(T.c.ref_id, T.c.status))
    for ref_id, status, n in rows:
        out.setdefault(ref_id, {})[status] = int(n)
    taken_back = await session.execute(select(T.c.ref_id, func.count()).where(
        T.c.ref_type == REF, T.c.ref_id.in_(ids), T.c.status == "cancelled", T.c.last_error == CANCELLED_BY_STAFF)
        .group_by(T.c.ref_id))
    for ref_id, n in taken_back:
        out.setdefault(ref_id, {})["taken_back"] = int(n)
    return out


async def delivery(session: AsyncSession, broadcast_id: int, limit: int = 500) -> dict[str, Any]:
    """The delivery of one notice: counts by status and channel, WeChat's receipts of template messages,
    and the people not reached (failed, cancelled, or refused by WeChat after sending) with the reason.

    ``by_channel`` maps a channel (kefu / template / sms, ``""`` when none was tried yet) to counts per
    status; ``not_reached`` lists at most ``limit`` people (name, township, phone from their profile)."""
    T = OutboxMessage.__table__
    cond = [T.c.ref_type == REF, T.c.ref_id == broadcast_id]
    by_status: dict[str, int] = {}
    by_channel: dict[str, dict[str, int]] = {}
    for channel, status, n in await session.execute(
            select(T.c.channel, T.c.status, func.count()).where(*cond).group_by(T.c.channel, T.c.status)):
        by_status[status] = by_status.get(status, 0) + int(n)
        by_channel.setdefault(channel or "", {})[status] = int(n)
    by_status["taken_back"] = int((await session.execute(select(func.count()).select_from(T).where(
        *cond, T.c.status == "cancelled", T.c.last_error == CANCELLED_BY_STAFF))).scalar_one())
    receipts = {d: int(n) for d, n in await session.execute(
        select(T.c.delivery_status, func.count()).where(*cond, T.c.delivery_status.is_not(None))
        .group_by(T.c.delivery_status))}
    reasons: dict[str, int] = {}
    for reason, status, n in await session.execute(
            select(T.c.last_error, T.c.status, func.count()).where(*cond, T.c.status.in_(("failed", "cancelled")))
            .group_by(T.c.last_error, T.c.status)):
        key = reason or status
        reasons[key] = reasons.get(key, 0) + int(n)
    q = (select(T.c.openid, T.c.status, T.c.channel, T.c.last_error, T.c.delivery_status, T.c.attempts,
                User.name, User.township, User.phone)
         .select_from(T.outerjoin(User.__table__, User.__table__.c.openid == T.c.openid))
         .where(*cond, (T.c.status.in_(("failed", "cancelled"))) | T.c.delivery_status.like("failed%"))
         .order_by(T.c.status, T.c.openid).limit(limit))
    people = [dict(r._mapping) for r in await session.execute(q)]
    return {"by_status": by_status, "by_channel": by_channel, "receipts": receipts,
            "reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])), "not_reached": people,
            "total": sum(n for k, n in by_status.items() if k != "taken_back")}


declare(Declaration(
    "broadcasts", label="群发通知", purpose="工作人员发出的通知及其送达报告", basis=DUTY,
    refs=("created_by", "cancelled_by"), mentions=("title", "text"),
    plain=("key", "url", "audience", "audience_label", "via"),
    kept="作为工作档案保存（通知本身不含收件人；送达情况在“发给您的消息”里）"))
