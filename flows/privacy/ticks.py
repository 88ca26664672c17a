"""Scheduled privacy work: retention purge, erasure after unfollowing, removing erased bytes from the file."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, exists, select

from flows.api import TickContext, tick, to_local
from flows.privacy.service import compact, erase_person
from storage import privacy as store
from storage.models import User

log = logging.getLogger("vetbot.privacy")
#: Unfollowed users erased per run (each in its own transaction); the rest wait for the next run.
UNFOLLOW_BATCH = 200


@tick("privacy_retention", 3600)
async def privacy_retention(t: TickContext) -> None:
    """Delete (or clear) what is older than its ``privacy.*_days`` (the declarations' retention rules)."""
    async with t.db.session() as s:
        done = await store.purge(s, t.now, t.services.config.privacy.retention_days())
    if done:
        log.info("retention: %s", ", ".join(f"{k} {n}" for k, n in sorted(done.items())))


async def unfollowed_due(session: object, now: object, days: int, limit: int) -> list[str]:
    """Openids that unfollowed more than ``days`` ago and are on no roster (oldest first)."""
    q = select(User.openid).where(User.subscribed.is_(False), User.unsubscribed_at.is_not(None),
                                  User.unsubscribed_at <= now - timedelta(days=days))  # type: ignore[operator]
    for d in store.declarations().values():
        if d.subject and d.on_erase == store.UNBIND:
            tbl = store.Base.metadata.tables[d.table]
            q = q.where(~exists().where(and_(tbl.c[d.subject] == User.openid)))
    return list((await session.execute(q.order_by(User.unsubscribed_at).limit(limit))).scalars())  # type: ignore[attr-defined]


@tick("privacy_unfollow", 3600)
async def privacy_unfollow(t: TickContext) -> None:
    """Erase people who unfollowed ``privacy.unfollow_erase_days`` ago (0 = never), unless a team roster
    has them: WeChat's documentation asks to delete an unfollowed user's data."""
    days = t.services.config.privacy.unfollow_erase_days
    if days <= 0:
        return
    async with t.db.session() as s:
        due = await unfollowed_due(s, t.now, days, UNFOLLOW_BATCH)
    for openid in due:
        async with t.db.session() as s:
            await erase_person(s, openid, by="unfollow", now=t.now)
    if due:
        log.info("unfollow erasure: %d people", len(due))


@tick("privacy_compact", 60)
async def privacy_compact(t: TickContext) -> None:
    """After erasures, rebuild the SQLite file (VACUUM + WAL checkpoint); at ``privacy.compact_hour``
    only, when set (VACUUM holds every turn while it runs)."""
    hour = t.services.config.privacy.compact_hour
    if hour >= 0 and to_local(t.now, t.services.config.bot.timezone).hour != hour:
        return
    n = await compact(t.db, t.now)
    if n:
        log.info("compacted the database after %d erasure(s)", n)
