"""Opaque link tokens: a random string in a link stands for (kind, openid, data) kept in the database.

A link that lets someone act without logging in (a memorial page's tribute buttons; later a console login
link or an SMS answer link) carries one of these instead of signed claims: the token says nothing about
whom it belongs to (a signed token's claims are base64 anyone can read), can be revoked, can be single
use, and expires. Only the SHA-256 of a token is stored, so a copy of the database (a backup, a read
replica) holds no usable link.

::

    token = await issue(session, "memorial", openid, {"m": 12}, ttl=timedelta(hours=6), now=now)
    link = f"{public_url}/m/12?t={token}"
    …
    row = await resolve(session, token, "memorial", now)          # LinkTokenError: unknown / expired / used
    row.openid, row.data
    await resolve(session, token, "console_login", now, consume=True)   # single use: the second try is "used"
    await claim(session, row, holder_hash)                          # bind to the first client that acts

``kind`` keeps the uses apart (a memorial token never opens the console). ``holder`` binds a token to the
first client that used it (the hash of a random cookie, say): the feature decides what a different client
may then do. Expired rows are deleted by the ``purge_link_tokens`` tick (a day after expiry, so an expired
link still gets the "expired" page rather than "unknown" for a while).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.privacy import DELETE, DUTY, Declaration, Retention, declare

#: Random bytes per token (32 URL-safe characters): unguessable, short enough for an SMS.
TOKEN_BYTES = 24
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
#: How long expired rows are kept (they answer "expired" instead of "unknown" meanwhile).
KEEP_EXPIRED = timedelta(days=1)


class LinkToken(Base):
    """One issued token, by the SHA-256 (hex) of the token itself."""

    __tablename__ = "link_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    openid: Mapped[str] = mapped_column(String(64), index=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    single_use: Mapped[bool] = mapped_column(Boolean, default=False)
    used_at: Mapped[datetime | None] = mapped_column(DateTime)
    #: Hash of whatever identifies the first client that acted with the token (see :func:`claim`).
    holder: Mapped[str | None] = mapped_column(String(64))


declare(Declaration(
    "link_tokens", label="专属网页链接", purpose="让您不用登录就能在网页上操作（祭扫、查看我的数据、从短信打开集结回复页）", basis=DUTY,
    subject="openid", on_erase=DELETE, personal=("data",), plain=("token_hash", "kind", "holder"),
    retention=(Retention(None, note="过期一天后删除（purge_link_tokens 任务）；只保存链接的散列值"),),
    seen_by="仅系统使用"))


class GateAttempts(Base):
    """Wrong answers at a page's check (the last four digits of a phone) per key, in a window: a key
    (``m:<member id>``) with too many is locked until its window ends. Rows go when the window does."""

    __tablename__ = "page_gate_attempts"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_end: Mapped[datetime] = mapped_column(DateTime, index=True)


declare(Declaration(
    "page_gate_attempts", label="网页验证错误次数",
    no_personal_data="a count of wrong phone digits per roster member id and its one-hour window (deleted after)"))


async def gate_locked(session: AsyncSession, key: str, now: datetime, limit: int) -> bool:
    """Whether ``key`` has used up its ``limit`` wrong answers in the current window."""
    row = await session.get(GateAttempts, key)
    return row is not None and row.window_end > now and row.failures >= limit


async def gate_failed(session: AsyncSession, key: str, now: datetime, window: timedelta) -> int:
    """Count one wrong answer for ``key``; returns the failures in the window so far."""
    row = (await session.execute(select(GateAttempts).where(GateAttempts.key == key)
                                 .with_for_update())).scalar_one_or_none()
    if row is None:
        session.add(GateAttempts(key=key, failures=1, window_end=now + window))
        await session.flush()
        return 1
    if row.window_end <= now:
        row.failures, row.window_end = 1, now + window
    else:
        row.failures += 1
    await session.flush()
    return row.failures


class LinkTokenError(Exception):
    """A token that cannot be used; ``reason`` is ``unknown`` (never issued, revoked, another kind or
    malformed), ``expired`` or ``used`` (a single-use token already consumed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def token_hash(token: str) -> str:
    """What is stored for ``token`` (also how a holder's secret is kept: :func:`claim`)."""
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(token: str | None) -> bool:
    """Whether ``token`` has the shape of a token this module issues (checked before any lookup)."""
    return bool(token) and _TOKEN_RE.match(token or "") is not None


def _ttl(ttl: timedelta | float) -> timedelta:
    return ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)


async def issue(session: AsyncSession, kind: str, openid: str, data: dict[str, Any] | None = None,
                ttl: timedelta | float = timedelta(hours=1), *, now: datetime, single_use: bool = False) -> str:
    """A new token for (``kind``, ``openid``, ``data``), valid ``ttl`` (a timedelta or seconds) from ``now``,
    written in the caller's transaction. Returns the token; only its hash is stored."""
    (token,) = await issue_many(session, kind, [(openid, data)], ttl, now=now, single_use=single_use)
    return token


async def issue_many(session: AsyncSession, kind: str, items: Sequence[tuple[str, dict[str, Any] | None]],
                     ttl: timedelta | float, *, now: datetime, single_use: bool = False) -> list[str]:
    """One token per (openid, data), in order, written in one statement (a fan-out of reminders)."""
    if not items:
        return []
    expires = now + _ttl(ttl)
    tokens = [secrets.token_urlsafe(TOKEN_BYTES) for _ in items]
    rows = [{"token_hash": token_hash(t), "kind": kind, "openid": openid, "data": data, "created_at": now,
             "expires_at": expires, "single_use": single_use, "used_at": None, "holder": None}
            for t, (openid, data) in zip(tokens, items, strict=True)]
    await session.execute(insert(LinkToken), rows)
    return tokens


async def resolve(session: AsyncSession, token: str | None, kind: str, now: datetime, *,
                  consume: bool = False) -> LinkToken:
    """The live token row of ``token`` for ``kind``; :class:`LinkTokenError` otherwise.

    With ``consume`` a single-use token is marked used (a conditional update: of two requests with the
    same token, one wins and the other gets ``used``)."""
    if not looks_like_token(token):
        raise LinkTokenError("unknown")
    assert token is not None
    row = await session.get(LinkToken, token_hash(token))
    if row is None or row.kind != kind:
        raise LinkTokenError("unknown")
    if row.expires_at <= now:
        raise LinkTokenError("expired")
    if row.single_use and row.used_at is not None:
        raise LinkTokenError("used")
    if consume and row.single_use:
        res = await session.execute(update(LinkToken).where(LinkToken.token_hash == row.token_hash,
                                                            LinkToken.used_at.is_(None))
                                    .values(used_at=now).execution_options(synchronize_session=False))
        if not res.rowcount:
            raise LinkTokenError("used")
        row.used_at = now
    return row


async def claim(session: AsyncSession, row: LinkToken, holder: str) -> bool:
    """Bind ``row`` to ``holder`` (a hash: never store a client's secret itself) unless it is bound
    already. True when ``holder`` holds the token now (it was free, or it was theirs); False when another
    client claimed it first. Conditional, so two clients racing for a fresh token cannot both win."""
    if row.holder is not None:
        return row.holder == holder
    res = await session.execute(update(LinkToken).where(LinkToken.token_hash == row.token_hash,
                                                        LinkToken.holder.is_(None))
                                .values(holder=holder).execution_options(synchronize_session=False))
    if res.rowcount:
        row.holder = holder
        return True
    await session.refresh(row, ["holder"])
    return row.holder == holder


async def revoke(session: AsyncSession, kind: str, openid: str) -> int:
    """Delete every token of ``kind`` issued to ``openid`` (log out everywhere, a user who unfollowed)."""
    res = await session.execute(delete(LinkToken).where(LinkToken.kind == kind, LinkToken.openid == openid))
    return int(res.rowcount or 0)


async def purge(session: AsyncSession, now: datetime, keep: timedelta = KEEP_EXPIRED) -> int:
    """Delete tokens that expired more than ``keep`` ago; returns how many."""
    res = await session.execute(delete(LinkToken).where(LinkToken.expires_at < now - keep))
    await session.execute(delete(GateAttempts).where(GateAttempts.window_end < now))
    return int(res.rowcount or 0)
