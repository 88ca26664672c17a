"""The staff console's tables: one-time ways in (login links, QR login attempts), sessions, the audit log.

Secrets never rest in the database: a login link's token, a QR login's scene and the browser's poll
secret, and a session id are 256-bit random values of which only the SHA-256 is stored. Their
plain SHA-256 is enough (no slow hash): they are random, not chosen by people, so nothing can be
guessed from the digest. Every way in is single use: its state moves forward with a conditional
``UPDATE … WHERE state = …``, so two requests racing with the same link or poll get one session.

* ``console_logins``: ``kind='link'`` (a one-time link for ``openid``: new → used) or ``kind='qr'``
  (a QR shown on a login page: new → scanned → confirmed → used, or denied when the scanner is no
  staff member). ``client`` keeps the browser's address and agent, shown in the chat confirmation
  so a staff member notices a login they did not start.
* ``console_sessions``: one row per logged-in browser; idle and absolute expiry are checked on
  every request (:func:`load_session`), and removing the staff role ends a member's sessions.
* ``staff_audit``: who did what to which record, when and from where (console, chat, CLI).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Index, Integer, String, Text, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.models import User
from storage.privacy import DELETE, DUTY, Declaration, Retention, declare

#: Roles that may open the console. ``admin`` also manages staff (and, later, the knowledge base).
STAFF_ROLES = frozenset({"staff", "admin"})
LINK, QR = "link", "qr"
NEW, SCANNED, CONFIRMED, DENIED, USED = "new", "scanned", "confirmed", "denied", "used"


def is_staff(roles: set[str] | frozenset[str]) -> bool:
    """True for a user who may open the console."""
    return bool(STAFF_ROLES & set(roles))


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class ConsoleLogin(Base):
    """A one-time way into the console: a login link or a QR login attempt."""

    __tablename__ = "console_logins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))
    # link: the token's digest; qr: the digest of the poll secret the login page's browser holds.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # qr: the digest of the QR code's scene (``login:<scene>``).
    scene_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # link: whom it logs in; qr: who scanned it.
    openid: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=NEW)
    client: Mapped[str] = mapped_column(String(200), default="")
    qr_url: Mapped[str | None] = mapped_column(String(500))
    next_path: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime)


class ConsoleSession(Base):
    """A logged-in browser. ``id_hash`` is the digest of the cookie's value."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    via: Mapped[str] = mapped_column(String(8))
    client: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime)
    # Absolute end (created_at + console.session_max_h), whatever the activity.
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class StaffAudit(Base):
    """One staff action: who (openid or ``cli:<login>``), when, what, on which record, from where."""

    __tablename__ = "staff_audit"
    __table_args__ = (Index("ix_staff_audit_target", "target_type", "target_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    actor_name: Mapped[str] = mapped_column(String(64), default="")
    # console / chat / cli
    via: Mapped[str] = mapped_column(String(16))
    # e.g. broadcast.send, callup.close, memorial.reject, user.grant, console.login
    action: Mapped[str] = mapped_column(String(48), index=True)
    target_type: Mapped[str] = mapped_column(String(32), default="")
    target_id: Mapped[str] = mapped_column(String(64), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)


# ---------------------------------------------------------------------------------------------------
# Login links and QR attempts


async def create_link(session: AsyncSession, openid: str, now: datetime, ttl: timedelta) -> str:
    """A one-time login link token for ``openid`` (the caller checks the role); returns the raw token."""
    raw = new_secret()
    session.add(ConsoleLogin(kind=LINK, secret_hash=digest(raw), openid=openid, state=NEW, client="",
                             created_at=now, expires_at=now + ttl))
    await session.flush()
    return raw


async def use_link(session: AsyncSession, raw: str, now: datetime) -> str | None:
    """Spend a login link: the openid it logs in, or None when it is unknown, used or expired."""
    t = ConsoleLogin.__table__
    row = (await session.execute(
        update(t).where(t.c.kind == LINK, t.c.secret_hash == digest(raw), t.c.state == NEW, t.c.expires_at > now)
        .values(state=USED, used_at=now).returning(t.c.openid),
        execution_options={"synchronize_session": False})).first()
    return row.openid if row is not None else None


async def link_state(session: AsyncSession, raw: str, now: datetime) -> str:
    """'ok' (usable), 'used', 'expired' or 'unknown': what the link page tells the person who opened it."""
    row = (await session.execute(select(ConsoleLogin.state, ConsoleLogin.expires_at).where(
        ConsoleLogin.kind == LINK, ConsoleLogin.secret_hash == digest(raw)))).first()
    if row is None:
        return "unknown"
    if row.state != NEW:
        return "used"
    return "ok" if row.expires_at > now else "expired"


async def create_qr(session: AsyncSession, *, scene: str, poll: str, qr_url: str, client: str,
                    next_path: str | None, now: datetime, ttl: timedelta) -> ConsoleLogin:
    """Record a QR login attempt (the QR code was created with scene ``login:<scene>``)."""
    row = ConsoleLogin(kind=QR, secret_hash=digest(poll), scene_hash=digest(scene), state=NEW,
                       client=client[:200], qr_url=qr_url[:500], next_path=next_path, created_at=now,
                       expires_at=now + ttl)
    session.add(row)
    await session.flush()
    return row


async def qr_by_poll(session: AsyncSession, poll: str) -> ConsoleLogin | None:
    """The QR attempt a login page's browser holds the poll secret of."""
    return (await session.execute(select(ConsoleLogin).where(
        ConsoleLogin.kind == QR, ConsoleLogin.secret_hash == digest(poll)))).scalar_one_or_none()


async def scan_qr(session: AsyncSession, scene: str, openid: str, allowed: bool, now: datetime) -> ConsoleLogin | None:
    """A QR code was scanned in WeChat by ``openid``: the attempt becomes ``scanned`` (``denied`` when
    the scanner may not log in). None when the scene is unknown, already scanned or expired."""
    t = ConsoleLogin.__table__
    row = (await session.execute(
        update(t).where(t.c.kind == QR, t.c.scene_hash == digest(scene), t.c.state == NEW, t.c.expires_at > now)
        .values(state=SCANNED if allowed else DENIED, openid=openid).returning(t.c.id),
        execution_options={"synchronize_session": False})).first()
    if row is None:
        return None
    return await session.get(ConsoleLogin, row.id, populate_existing=True)


async def confirm_qr(session: AsyncSession, login_id: int, openid: str, now: datetime) -> bool:
    """The scanner confirmed the login in chat: ``scanned`` → ``confirmed`` (False when it expired)."""
    t = ConsoleLogin.__table__
    res = await session.execute(
        update(t).where(t.c.id == login_id, t.c.kind == QR, t.c.openid == openid, t.c.state == SCANNED,
                        t.c.expires_at > now).values(state=CONFIRMED),
        execution_options={"synchronize_session": False})
    return bool(res.rowcount)


async def refuse_qr(session: AsyncSession, login_id: int, openid: str) -> bool:
    """The scanner said it was not them: the attempt is ``denied`` (the page shows it)."""
    t = ConsoleLogin.__table__
    res = await session.execute(
        update(t).where(t.c.id == login_id, t.c.openid == openid, t.c.state.in_((NEW, SCANNED)))
        .values(state=DENIED), execution_options={"synchronize_session": False})
    return bool(res.rowcount)


async def take_confirmed(session: AsyncSession, poll: str, now: datetime) -> tuple[str, str | None] | None:
    """Spend a confirmed QR attempt: (openid, next path), once; None otherwise."""
    t = ConsoleLogin.__table__
    row = (await session.execute(
        update(t).where(t.c.kind == QR, t.c.secret_hash == digest(poll), t.c.state == CONFIRMED,
                        t.c.expires_at > now)
        .values(state=USED, used_at=now).returning(t.c.openid, t.c.next_path),
        execution_options={"synchronize_session": False})).first()
    return (row.openid, row.next_path) if row is not None and row.openid else None


# ---------------------------------------------------------------------------------------------------
# Sessions


async def create_session(session: AsyncSession, openid: str, now: datetime, max_age: timedelta, *, via: str,
                         client: str = "") -> str:
    """A new session for ``openid``; returns the raw session id (the cookie's value)."""
    raw = new_secret()
    session.add(ConsoleSession(id_hash=digest(raw), openid=openid, via=via, client=client[:200], created_at=now,
                               last_seen_at=now, expires_at=now + max_age))
    await session.flush()
    return raw


async def load_session(session: AsyncSession, raw: str, now: datetime, idle: timedelta
                       ) -> tuple[ConsoleSession, User] | None:
    """The live session of this cookie value and its user, or None: unknown, idle too long, past its
    absolute end, or its user no longer holds a staff role. Dead sessions are deleted on the way."""
    if not raw or len(raw) > 100:
        return None
    row = (await session.execute(select(ConsoleSession, User).outerjoin(User, User.openid == ConsoleSession.openid)
                                 .where(ConsoleSession.id_hash == digest(raw)))).first()
    if row is None:
        return None
    sess, user = row
    if sess.expires_at <= now or sess.last_seen_at + idle <= now or user is None or not is_staff(user.role_set):
        await session.delete(sess)
        return None
    return sess, user


async def touch_session(session: AsyncSession, sess: ConsoleSession, now: datetime) -> None:
    """Record activity (at most once a minute: the idle clock needs no finer grain)."""
    if now - sess.last_seen_at >= timedelta(seconds=60):
        sess.last_seen_at = now


async def end_session(session: AsyncSession, raw: str) -> None:
    """Log out: the session row goes."""
    await session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == digest(raw)))


async def end_sessions_of(session: AsyncSession, openid: str) -> int:
    """End every console session of ``openid`` (their staff role was removed)."""
    res = await session.execute(delete(ConsoleSession).where(ConsoleSession.openid == openid))
    return max(res.rowcount or 0, 0)


async def purge(session: AsyncSession, now: datetime, idle: timedelta) -> int:
    """Delete sessions past their end or idle too long, and logins expired over a day ago."""
    a = await session.execute(delete(ConsoleSession).where(
        or_(ConsoleSession.expires_at <= now, ConsoleSession.last_seen_at <= now - idle)))
    b = await session.execute(delete(ConsoleLogin).where(ConsoleLogin.expires_at <= now - timedelta(days=1)))
    return max(a.rowcount or 0, 0) + max(b.rowcount or 0, 0)


# ---------------------------------------------------------------------------------------------------
# Roles


async def set_role(session: AsyncSession, user: User, role: str, grant: bool, *, by: str, via: str,
                   now: datetime) -> bool:
    """Grant or revoke ``role`` and record it. ``admin`` includes ``staff`` (granting admin grants
    staff; revoking staff revokes admin), and losing console access ends the user's console sessions at
    once. Returns True when the roles changed."""
    before = set(user.role_set)
    if grant:
        user.add_role(role)
        if role == "admin":
            user.add_role("staff")
    else:
        user.remove_role(role)
        if role == "staff":
            user.remove_role("admin")
    changed = user.role_set != before
    if changed:
        if not is_staff(user.role_set):
            await end_sessions_of(session, user.openid)
        await audit(session, actor=by, via=via, action="user.grant" if grant else "user.revoke", target_type="user",
                    target_id=user.openid, now=now, summary=f"{'授予' if grant else '取消'} {role}（{user.name or user.openid}）",
                    detail={"role": role, "roles_before": sorted(before), "roles_after": sorted(user.role_set)})
    return changed


# ---------------------------------------------------------------------------------------------------
# Audit log


async def audit(session: AsyncSession, *, actor: str, action: str, now: datetime, via: str = "console",
                target_type: str = "", target_id: str | int = "", summary: str = "",
                detail: dict[str, Any] | None = None, actor_name: str = "") -> None:
    """Record one staff action in the caller's transaction (it exists exactly when the action does)."""
    session.add(StaffAudit(at=now, actor=actor[:64], actor_name=(actor_name or "")[:64], via=via[:16],
                           action=action[:48], target_type=target_type[:32], target_id=str(target_id)[:64],
                           summary=summary[:2000], detail=detail or {}))


async def audit_entries(session: AsyncSession, *, limit: int = 50, before_id: int | None = None,
                        actor: str | None = None, action: str | None = None) -> list[StaffAudit]:
    """Newest first; ``before_id`` pages back; ``action`` matches a prefix (``broadcast`` → all of them)."""
    q = select(StaffAudit).order_by(StaffAudit.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(StaffAudit.id < before_id)
    if actor:
        q = q.where(StaffAudit.actor == actor)
    if action:
        q = q.where(StaffAudit.action.startswith(action, autoescape=True))
    return list((await session.execute(q)).scalars())


async def audit_actions(session: AsyncSession) -> list[str]:
    """Every action name recorded so far (for the audit page's filter)."""
    return list((await session.execute(select(StaffAudit.action).group_by(StaffAudit.action)
                                       .order_by(StaffAudit.action))).scalars())


async def audit_count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(StaffAudit))).scalar_one())


declare(
    Declaration(
        "console_logins", label="工作人员后台登录记录", purpose="扫码或链接登录工作人员后台", basis=DUTY,
        subject="openid", on_erase=DELETE, personal=("client",),
        plain=("kind", "secret_hash", "scene_hash", "state", "qr_url", "next_path"),
        retention=(Retention(None, note="过期一天后删除（console_purge 任务）；只保存链接和二维码的散列值"),),
        seen_by="仅系统使用"),
    Declaration(
        "console_sessions", label="工作人员后台会话", purpose="保持工作人员在后台的登录状态", basis=DUTY,
        subject="openid", on_erase=DELETE, personal=("client",), plain=("id_hash", "via"),
        retention=(Retention(None, note="退出、闲置超时或到期后删除（console_purge 任务）"),),
        seen_by="仅系统使用"),
    Declaration(
        "staff_audit", label="工作人员操作记录", purpose="记录工作人员的每一项操作（谁、何时、做了什么）",
        basis=DUTY, refs=("actor", "target_id"), mentions=("actor_name", "summary", "detail"),
        plain=("via", "action", "target_type"), kept="作为工作档案保存；只有管理员能查看",
        seen_by="本局管理员"),
)
