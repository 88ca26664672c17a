"""Inbound SMS (短信回复): one row per message the SMS gateway delivered to ``POST /sms/inbound``.

The row is the webhook's replay guard and its record in one: it is written, keyed by the gateway's
message id, in the same transaction as the answer the message carries, so a gateway that retries a
webhook (or an attacker who replays a captured one inside the timestamp window) records nothing twice.
It holds no phone and no text: only which roster member and call-up it concerned and what came of it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base
from storage.privacy import EMERGENCY, Declaration, Retention, declare
from storage.sql import insert_ignore

#: What came of an inbound message.
RECORDED, UNKNOWN, UNCLEAR, CLOSED = "recorded", "unknown", "unclear", "closed"


class SmsInbound(Base):
    """One inbound SMS, by the SHA-256 of the gateway's message id."""

    __tablename__ = "sms_inbound"

    message_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # The roster member whose phone sent it and the call-up it answered (NULL: unknown phone / none open).
    member_id: Mapped[int | None] = mapped_column(Integer)
    callup_id: Mapped[int | None] = mapped_column(Integer)
    # recorded / unknown (no roster member with an open call-up) / unclear (not an answer) / closed
    outcome: Mapped[str] = mapped_column(String(16))
    # What the answer was recorded as (confirmed / late / declined / standby), when it was recorded.
    recorded_as: Mapped[str | None] = mapped_column(String(16))


declare(Declaration(
    "sms_inbound", label="短信回复记录", purpose="收到队员短信回复集结时防止重复记录", basis=EMERGENCY,
    via=("member_id", "callup_members", "id"), plain=("message_key", "outcome", "recorded_as"),
    retention=(Retention("short_lived_days", "received_at", note="{days} 天后删除（回复本身随集结记录保存）"),),
    seen_by="仅系统使用"))


def message_key(message_id: str) -> str:
    """What is stored for a gateway message id (any length, any characters)."""
    return hashlib.sha256(message_id.encode("utf-8")).hexdigest()


async def claim(session: AsyncSession, message_id: str, now: datetime) -> bool:
    """Remember ``message_id`` in the caller's transaction; False when it was seen before (a retry or a
    replay: do nothing). On PostgreSQL a concurrent first claim of the same id is waited for."""
    row = {"message_key": message_key(message_id), "received_at": now, "member_id": None, "callup_id": None,
           "outcome": UNKNOWN, "recorded_as": None}
    return await insert_ignore(session, SmsInbound.__table__, row, index_elements=["message_key"]) == 1


async def settle(session: AsyncSession, message_id: str, outcome: str, *, member_id: int | None = None,
                 callup_id: int | None = None, recorded_as: str | None = None) -> None:
    """Write what came of a claimed message."""
    await session.execute(update(SmsInbound).where(SmsInbound.message_key == message_key(message_id))
                          .values(outcome=outcome, member_id=member_id, callup_id=callup_id, recorded_as=recorded_as)
                          .execution_options(synchronize_session=False))
