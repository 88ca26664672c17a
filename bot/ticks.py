"""Housekeeping jobs of the core: idle conversations end, old dedup records and callback nonces go."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update

from flows.api import TickContext, tick
from storage.models import Conversation, InboundDedup
from storage.replay import purge as purge_nonces


@tick("expire_conversations", 60)
async def expire_conversations(t: TickContext) -> None:
    """Mark conversations idle past ``bot.conversation_timeout_min``; the next message says so."""
    cutoff = t.now - timedelta(minutes=t.services.config.bot.conversation_timeout_min)
    async with t.db.session() as s:
        await s.execute(
            update(Conversation)
            .where(Conversation.flow.is_not(None), Conversation.updated_at < cutoff, Conversation.expired.is_(False))
            .values(expired=True)
        )


@tick("purge_dedup", 600)
async def purge_dedup(t: TickContext) -> None:
    """Drop dedup records past their expiry (WeChat retries within seconds; we keep them for hours)."""
    async with t.db.session() as s:
        await s.execute(delete(InboundDedup).where(InboundDedup.expires_at < t.now))


@tick("purge_link_tokens", 3600)
async def purge_link_tokens(t: TickContext) -> None:
    """Drop link tokens a day past their expiry (see :mod:`storage.linktokens`)."""
    from storage.linktokens import purge

    async with t.db.session() as s:
        await purge(s, t.now)


@tick("purge_callback_nonces", 60)
async def purge_callback_nonces(t: TickContext) -> None:
    """Drop (timestamp, nonce) pairs whose timestamps left the window (PostgreSQL; SQLite keeps them in
    the serving process's memory, see bot/replay.py)."""
    if not t.db.is_sqlite:
        await purge_nonces(t.db, t.now)
