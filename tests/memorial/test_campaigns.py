"""Campaign reminders: built-in campaigns appear, reminders go out once on the day (from the configured
local hour) to followers who opted in, through the outbox; a re-run or a restart queues nothing twice."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from bot.scheduler import run_tick
from flows.api import ticks
from storage.memorial import campaign_by_code, ensure_campaign, opt_in
from storage.models import OutboxMessage, User
from tests.conftest import make_config
from tests.helpers import app_client


async def _tick(runtime) -> None:  # type: ignore[no-untyped-def]
    (t,) = [t for t in ticks() if t.name == "memorial_campaigns"]
    await run_tick(t, runtime.db, runtime.services)


async def _reminders(runtime) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    async with runtime.db.session() as s:
        q = select(OutboxMessage).where(OutboxMessage.purpose == "memorial_reminder").order_by(OutboxMessage.openid)
        return list((await s.execute(q)).scalars())


async def test_reminders_go_out_once_on_the_day(db_url: str) -> None:
    from bot.clock import FakeClock

    clock = FakeClock(datetime(2026, 4, 4, 23, 30))  # 2026-04-05 07:30 in Beijing: Qingming, before 8:00
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with app_client(cfg, clock) as (_, runtime):
        now = clock.now()
        async with runtime.db.session() as s:
            for openid, followed in (("fan_1", True), ("fan_2", True), ("gone", False), ("quiet", True)):
                s.add(User(openid=openid, subscribed=followed, first_seen=now, last_seen=now, kefu_sent=0, roles=""))
            for openid in ("fan_1", "fan_2", "gone"):
                await opt_in(s, openid, now)
        await _tick(runtime)
        async with runtime.db.session() as s:
            q = await campaign_by_code(s, "qingming-2026")
            assert q is not None and str(q.day) == "2026-04-05" and q.reminded_at is None
            assert await campaign_by_code(s, "martyrs-day-2027") is not None
        assert await _reminders(runtime) == [], "not before memorial.reminder_hour"
        clock.advance(minutes=31)  # 08:01 local
        await _tick(runtime)
        rows = await _reminders(runtime)
        assert [r.openid for r in rows] == ["fan_1", "fan_2"]
        assert rows[0].idempotency_key == "fan_1:memorial:remind:qingming-2026"
        assert "清明" in rows[0].payload["text"] and "/m/?t=" in rows[0].payload["url"]
        assert rows[0].payload["data"]["title"] == "2026年清明·云端祭英烈"
        clock.advance(hours=3)
        await _tick(runtime)
        assert len(await _reminders(runtime)) == 2
        async with runtime.db.session() as s:
            q = await campaign_by_code(s, "qingming-2026")
            assert q is not None and q.reminded_at is not None and q.reminders_queued == 2


async def test_custom_campaign_and_a_run_interrupted_half_way(db_url: str) -> None:
    from bot.clock import FakeClock

    clock = FakeClock(datetime(2026, 7, 1, 1, 0))  # 09:00 in Beijing
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with app_client(cfg, clock) as (_, runtime):
        now = clock.now()
        async with runtime.db.session() as s:
            await ensure_campaign(s, code="july1-2026", title="七一·缅怀先烈", kind="custom",
                                  day=datetime(2026, 7, 1).date(), starts_on=datetime(2026, 6, 28).date(),
                                  ends_on=datetime(2026, 7, 1).date(), now=now, message="建党纪念日，缅怀先烈。")
            for i in range(5):
                await opt_in(s, f"fan_{i}", now)
        # A crash after part of the fan-out: one reminder already queued, the campaign not marked.
        from flows.memorial.campaigns import reminder_push
        from storage.outbox import enqueue

        async with runtime.db.session() as s:
            c = await campaign_by_code(s, "july1-2026")
            await enqueue(s, reminder_push(cfg, c, "fan_0"), now)  # type: ignore[arg-type]
        await _tick(runtime)
        rows = await _reminders(runtime)
        assert [r.openid for r in rows] == [f"fan_{i}" for i in range(5)]
        assert "建党纪念日" in rows[0].payload["text"]
