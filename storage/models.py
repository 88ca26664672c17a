"""Core tables: users, inbound dedup, conversations, tickets, outbox, shared access token.

Feature modules (``storage/callup.py``, ``storage/memorial.py`` …) add their own tables on the same
``Base.metadata``; :func:`import_all` imports them so Alembic and tests see the whole schema.
"""

from __future__ import annotations

import importlib
import pkgutil
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text, type_coerce
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.privacy import CONSENT, DELETE, DUTY, Declaration, Retention, declare

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
    # No location columns: LOCATION reports are 行踪轨迹 (sensitive) and no feature uses them (issue 18).
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
    # ix_outbox_ref: a feature's pushes (a call-up's audit trail, a notice's delivery report).
    __table_args__ = (Index("ix_outbox_due", "status", "priority", "due_at"), Index("ix_outbox_ref", "ref_type", "ref_id"))

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


#: What a push's payload becomes once its text is past ``privacy.push_text_days``.
PURGED_PAYLOAD: dict[str, Any] = {"text": "", "data": {}, "purged": True}
_PURGED_TEXT = '{"text":"","data":{},"purged":true}'


def _unpurged(t: Any) -> Any:
    return type_coerce(t.c.payload, Text()) != _PURGED_TEXT


declare(
    Declaration(
        "users", label="我的信息", purpose="识别您、办理您申请的服务、按乡镇发送通知、短信兜底联系您",
        basis=CONSENT + "；履行法定职责", subject="openid", on_erase=DELETE, name=("name",), phone=("phone",),
        personal=("qr_scene", "roles", "township", "kind"),
        kept="直到您注销；取消关注满 {unfollow_erase_days} 天后自动删除（应急队伍名册上的队员除外）"),
    Declaration(
        "inbound_dedup", label="消息去重记录", purpose="微信重发同一条消息时不重复办理，并回复同样的内容",
        basis=DUTY, mentions=("key", "reply"), mention_action="delete",
        retention=(Retention(None, note="{dedup_ttl_h} 小时后删除（bot.dedup_ttl_h，purge_dedup 任务）"),),
        seen_by="仅系统使用"),
    Declaration(
        "conversations", label="对话进度", purpose="记住您办到哪一步（例如正在填写的订阅条件）",
        basis=DUTY, subject="openid", on_erase=DELETE, personal=("slots", "stack", "choices"),
        plain=("flow", "step", "choice_kind"),
        retention=(Retention("conversation_days", "updated_at", note="最后一次对话 {days} 天后删除"),),
        seen_by="仅系统使用"),
    Declaration(
        "tickets", label="人工留言", purpose="工作人员阅读并回复您的留言、没能回答的问题",
        basis=DUTY, subject="openid", on_erase=DELETE, personal=("text", "context", "staff_reply"),
        plain=("status",),
        retention=(Retention("ticket_days", "closed_at", where=lambda t: t.c.status == "closed",
                             note="回复并关闭 {days} 天后删除；未回复的留言保留到回复为止"),)),
    Declaration(
        "outbox", label="发给您的消息", purpose="把通知、回复、集结和岗位提醒可靠地发到您的微信（或短信）",
        basis=DUTY, subject="openid", on_erase=DELETE, personal=("idempotency_key",),
        mentions=("payload", "last_error"),
        plain=("purpose", "status", "channel", "skipped_channels", "claimed_by", "delivery_status", "ref_type"),
        retention=(
            Retention("push_text_days", "created_at", values={"payload": PURGED_PAYLOAD},
                      where=lambda t: t.c.status.in_(("sent", "cancelled")) & _unpurged(t),
                      note="已发出的消息正文 {days} 天后清除（只留发送状态用于统计）"),
            Retention("push_text_days", "created_at",
                      values={"payload": PURGED_PAYLOAD, "status": "cancelled",
                              "last_error": "retention: text removed"},
                      where=lambda t: t.c.status == "failed",
                      note="发送失败的消息 {days} 天后清除正文并不再重发"),
            Retention("push_row_days", "created_at", where=lambda t: t.c.status.in_(("sent", "failed", "cancelled")),
                      note="发送记录 {days} 天后删除"),
        )),
    Declaration("wechat_tokens", label="微信接口凭证", no_personal_data="the account's access token only"),
)


def import_all() -> None:
    """Import every ``storage`` module so all feature tables are registered on the metadata."""
    import storage

    for mod in pkgutil.iter_modules(storage.__path__):
        if mod.name not in ("migrations",) and not mod.name.startswith("_"):
            importlib.import_module(f"storage.{mod.name}")
