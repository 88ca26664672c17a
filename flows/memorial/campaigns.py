"""Campaign days: built-in campaigns are written for this year and the next, and on a campaign's day
(from ``memorial.reminder_hour`` local time) every opted-in follower gets one reminder through the outbox.

Each reminder carries the user's own link to the memorial page (a token valid until the end of the
campaign's day, see :func:`reminder_ttl`). The state is in tables: a campaign row with ``reminded_at`` NULL on its day is due; each recipient's push
has the idempotency key ``memorial:remind:<code>``, so a run interrupted half-way (a restart, a crash)
simply runs again and queues only what is missing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from flows.api import TickContext, from_local, tick, to_local
from flows.memorial import service
from flows.memorial.calendar import builtin_campaigns
from storage import linktokens
from storage import memorial as store
from storage.outbox import Push, enqueue

log = logging.getLogger("vetbot.memorial")

#: Recipients queued per transaction.
FANOUT_BATCH = 2000


async def ensure_builtins(session: object, year: int, now: datetime) -> int:
    """Write the built-in campaigns of ``year`` (Qingming, 9·30) unless present; returns how many were new."""
    new = 0
    for c in builtin_campaigns(year):
        new += await store.ensure_campaign(session, code=c.code, title=c.title, kind=c.kind, day=c.day,  # type: ignore[arg-type]
                                           starts_on=c.starts_on, ends_on=c.ends_on, now=now, message=c.message)
    return new


def reminder_push(config: Any, campaign: store.MemorialCampaign, openid: str, url: str | None = None) -> Push:
    """One reminder: the campaign's words and ``url`` (the user's own link to the memorial page; the
    public page when None)."""
    url = url or service.public_link(config, store.MEMORIAL)
    text = f"【{campaign.title}】{campaign.message or '今天是祭扫纪念日。'}\n回复“祭英烈”即可献花、寄语。"
    return Push(openid=openid, purpose="memorial_reminder", key=f"memorial:remind:{campaign.code}", text=text,
                url=url, ref_type="memorial_campaign", ref_id=campaign.id,
                data={"title": campaign.title, "content": campaign.message or "今天是祭扫纪念日。",
                      "time": f"{campaign.day.month}月{campaign.day.day}日", "url": url})


def reminder_ttl(config: Any, campaign: store.MemorialCampaign, now: datetime) -> timedelta:
    """A reminder's link lasts until the end of the campaign's day (local) — people read it over the
    day — and at least ``memorial.link_ttl_h``."""
    tz = config.bot.timezone
    end = from_local(datetime.combine(campaign.day + timedelta(days=1), datetime.min.time()), tz)
    return max(service.link_ttl(config), end - now)


async def reminder_links(session: Any, config: Any, campaign: store.MemorialCampaign, openids: list[str],
                         now: datetime) -> list[str]:
    """Personal memorial links for a batch of reminders (one token each, one INSERT for the batch)."""
    tokens = await linktokens.issue_many(session, service.LINK_KIND, [(o, None) for o in openids],
                                         reminder_ttl(config, campaign, now), now=now)
    base = service.public_link(config, store.MEMORIAL)
    return [f"{base}?t={t}" for t in tokens]


async def send_reminders(t: TickContext) -> int:
    """Queue the reminders of every campaign due today (local); returns how many pushes were queued."""
    cfg = t.services.config
    local = to_local(t.now, cfg.bot.timezone)
    today = local.date()
    async with t.db.session() as s:
        for year in (today.year, today.year + 1):
            await ensure_builtins(s, year, t.now)
        due = [] if local.hour < cfg.memorial.reminder_hour else await store.due_campaigns(s, today)
    queued = 0
    for campaign in due:
        after, recipients, new = "", 0, 0
        while True:
            async with t.db.session() as s:
                openids = await store.reminder_recipients(s, after, FANOUT_BATCH)
                if not openids:
                    break
                links = await reminder_links(s, cfg, campaign, openids, t.now)
                new += await enqueue(s, [reminder_push(cfg, campaign, o, u) for o, u in zip(openids, links, strict=True)],
                                     t.now)
                recipients += len(openids)
                after = openids[-1]
        async with t.db.session() as s:
            if await store.claim_campaign(s, campaign.id, t.now):
                await store.set_reminders_queued(s, campaign.id, recipients)
        log.info("campaign %s: reminders for %d followers (%d newly queued)", campaign.code, recipients, new)
        queued += new
    return queued


@tick("memorial_campaigns", 60)
async def memorial_campaigns(t: TickContext) -> None:
    """Every minute: built-in campaigns exist; today's campaign reminders are queued once."""
    await send_reminders(t)
