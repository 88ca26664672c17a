"""Core tables: users, inbound dedup, conversations, tickets, outbox, shared access token.

Feature modules (``storage/callup.py``, ``storage/memorial.py`` …) add their own tables on the same
``Base.metadata``; :func:`import_all` imports them so Alembic and tests see the whole schema.
"""

from __future__ import annotations

import importlib
import pkgutil
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText

#: Every role a user can hold. ``admin`` is for the staff console (bureau administrators); intents,
#: `vetbot users role` refuse names outside this set.
KNOWN_ROLES = ("veteran", "family", "volunteer", "staff", "admin")


class RoleMixin:
    """Role helpers (users.roles is a comma-separated list)."""

    roles: str

    def has_role(self, role: str) -> bool:
        return role in self.role_set

    @property
    def role_set(self) -> set[str]:
        return {r for r in (self.roles or "").split(",") if r}

    def add_role(self, role: str) -> None:
        self.roles = ",".join(sorted(self.role_set | {role}))

    def remove_role(self, role: str) -> None:
        self.roles = ",".join(sorted(self.role_set - {role}))


class User(RoleMixin, Base):
    """Everyone who ever wrote to or followed the account. One row per openid."""

    __tablename__ = "users"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    subscribed_at: Mapped[datetime | None] = mapped_column(DateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(DateTime)
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)
    # Last time the user wrote a message: opens the 48-hour customer-service window (5 messages).
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Last menu click / follow / scan: opens a 1-minute window (3 messages).
    last_event_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Customer-service messages we sent since the last interaction (reset when the user interacts).
    kefu_sent: Mapped[int] = mapped_column(Integer, default=0)
    qr_scene: Mapped[str | None] = mapped_column(String(64))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    location_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Comma-separated roles (KNOWN_ROLES): veteran, family, volunteer, staff, admin.
    roles: Mapped[str] = mapped_column(String(128), default="")
    name: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(20), index=True)
    township: Mapped[str | None] = mapped_column(String(64))
    # veteran / family / other (the profile flow asks).
    kind: Mapped[str | None] = mapped_column(String(16))



class InboundDedup(Base):
    """One row per inbound message/event key: a WeChat retry never runs a turn twice.

    Written in the same transaction as the turn, so a rolled-back turn leaves no row and the retry
    runs it; ``reply`` is the passive reply text (NULL: answered ``success``, reply pushed later).
    """

    __tablename__ = "inbound_dedup"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Conversation(Base):
    """Where a user is in a multi-step flow; survives restarts."""

    __tablename__ = "conversations"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    flow: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[str | None] = mapped_column(String(64))
    slots: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    # Previous (step, slots) pairs for 返回.
    stack: Mapped[list[Any]] = mapped_column(JSONText, default=list)
    # Numbered options the user may answer with a digit: [{"label": …, "value": …}].
    choices: Mapped[list[Any]] = mapped_column(JSONText, default=list)
    choice_kind: Mapped[str | None] = mapped_column(String(32))
    reasks: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # Set when an idle conversation was ended by the expiry tick; the next message says so.
    expired: Mapped[bool] = mapped_column(Boolean, default=False)


class Ticket(Base):
    """A message left for staff (人工), or a question the bot could not answer."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    staff_reply: Mapped[str | None] = mapped_column(Text)


class OutboxMessage(Base):
    """A push waiting to be delivered. Written in the same transaction as the change that causes it.

    ``payload`` holds what every channel needs: ``text`` (customer-service and SMS), template
    ``data`` fields and ``url``. The channel is decided when the row is sent, not when it is queued.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "priority", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Unique: the same purpose never creates two rows for one recipient.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(32))
    # 0 = emergency (call-ups) … 9 = low (digests); lower goes first.
    priority: Mapped[int] = mapped_column(Integer, default=5)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    # pending -> sending -> sent | failed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="pending")
    channel: Mapped[str | None] = mapped_column(String(16))
    # Channels already tried and refused (e.g. kefu after 45015).
    skipped_channels: Mapped[list[str]] = mapped_column(JSONText, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime] = mapped_column(DateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    wechat_msgid: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # From TEMPLATESENDJOBFINISH: success / failed:user block / failed: system failed.
    delivery_status: Mapped[str | None] = mapped_column(String(64))
    ref_type: Mapped[str | None] = mapped_column(String(32))
    ref_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class WeChatToken(Base):
    """The one access_token every process shares (refreshed by one process at a time)."""

    __tablename__ = "wechat_tokens"

    appid: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_token: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime)


def import_all() -> None:
    """Import every ``storage`` module so all feature tables are registered on the metadata."""
    import storage

    for mod in pkgutil.iter_modules(storage.__path__):
        if mod.name not in ("migrations",) and not mod.name.startswith("_"):
            importlib.import_module(f"storage.{mod.name}")
