"""End to end through WeChat XML: subscribe in chat, postings imported, alerts queued; digests by the
tick at the user's time; 退订 and unfollowing stop everything (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime

from bot.chat import ChatSession
from bot.scheduler import run_tick
from flows.api import ticks
from tests.conftest import make_config
from tests.helpers import chat_session
from tests.jobs.util import posting, store

# 10:00 local, 4 April 2026.
T0 = datetime(2026, 4, 4, 2, 0)


async def subscribe(chat: ChatSession, who: str, answers: list[str]) -> None:
    assert "第1步" in (await chat.send(who, "订阅岗位") or "")
    for a in answers:
        await chat.send(who, a)
    assert "订阅成功" in (await chat.send(who, "1") or "")


async def test_subscribe_in_chat_then_alerts_and_digest(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        db = chat.runtime.db
        # Instant, guards in 大竹, any pay, full time, no quiet hours.
        await subscribe(chat, "inst", ["大竹", "2", "1", "2", "1", "3"])
        # Daily at 19:00, anything anywhere, default quiet hours.
        await subscribe(chat, "daily", ["1", "1", "1", "1", "2", "3", "1"])
        rep = await store(db, cfg, [posting(title="保安队长", location="大竹县城关镇"),
                                    posting(title="厨师", location="大竹县城关镇"),
                                    posting(title="兼职保安", job_type="兼职")], T0)
        assert (rep.instant_pushes, rep.digests_scheduled) == (1, 1)
        (alert,) = await chat.pushes("inst")
        assert alert.purpose == "job_alert" and "【新岗位】保安队长" in alert.payload["text"]
        assert await chat.pushes("daily") == []

        tick = next(t for t in ticks() if t.name == "jobs_digest")
        chat.clock.set(datetime(2026, 4, 4, 10, 59))
        await run_tick(tick, db, chat.runtime.services)
        assert await chat.pushes("daily") == []
        chat.clock.set(datetime(2026, 4, 4, 11, 0))  # 19:00 local
        await run_tick(tick, db, chat.runtime.services)
        (digest,) = await chat.pushes("daily")
        assert "为您找到 3 个新岗位" in digest.payload["text"]

        # 退订 in chat: nothing more, and queued alerts are dropped.
        chat.clock.set(datetime(2026, 4, 4, 15, 0))  # 23:00 local, still fine for "inst" (no quiet hours)
        await store(db, cfg, [posting(title="夜班保安", location="大竹县")], chat.clock.now())
        assert [p.status for p in await chat.pushes("inst")] == ["pending", "pending"]
        assert "确定退订" in (await chat.send("inst", "退订") or "")
        assert "已退订" in (await chat.send("inst", "1") or "")
        assert [p.status for p in await chat.pushes("inst")] == ["cancelled", "cancelled"]  # not yet delivered

        # Unfollowing: the daily subscriber gets no further digest.
        await chat.event("daily", "unsubscribe")
        await store(db, cfg, [posting(title="新岗位")], datetime(2026, 4, 5, 2, 0))
        chat.clock.set(datetime(2026, 4, 5, 11, 0))
        await run_tick(tick, db, chat.runtime.services)
        assert len(await chat.pushes("daily")) == 1
        assert len(await chat.pushes("inst")) == 2
