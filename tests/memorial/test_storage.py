"""Memorial storage on SQLite and PostgreSQL: the counting rule, exact counters under 200 concurrent
tributes, re-import, search, moderation, campaigns, reminder recipients and per-day statistics."""

from __future__ import annotations

import asyncio
from datetime import date, datetime

from sqlalchemy import func, select

from flows.memorial.roll import parse_roll
from storage.db import Database
from storage.memorial import (
    APPROVED,
    MEMORIAL,
    PENDING,
    REJECTED,
    MemorialTribute,
    NotPending,
    add_message,
    approved_messages,
    claim_campaign,
    counts,
    day_stats,
    decide_message,
    due_campaigns,
    ensure_campaign,
    opt_in,
    opt_out,
    record_tribute,
    reminder_recipients,
    search_martyrs,
    totals,
    upsert_martyrs,
)
from storage.models import User
from tests.memorial.conftest import SAMPLE

NOW = datetime(2026, 4, 4, 2, 0)
DAY = date(2026, 4, 4)


async def _seed(db: Database) -> None:
    roll = parse_roll(SAMPLE.read_text(encoding="utf-8"), DAY)
    async with db.session() as s:
        await upsert_martyrs(s, roll.rows, NOW)


async def test_one_counted_action_per_user_target_kind_and_day(db: Database) -> None:
    async with db.session() as s:
        first = await record_tribute(s, "u1", 5, "flower", DAY)
        again = await record_tribute(s, "u1", 5, "flower", DAY)
        other_kind = await record_tribute(s, "u1", 5, "salute", DAY)
        other_target = await record_tribute(s, "u1", MEMORIAL, "flower", DAY)
        next_day = await record_tribute(s, "u1", 5, "flower", date(2026, 4, 5))
        second_user = await record_tribute(s, "u2", 5, "flower", DAY)
    assert (first.counted, first.n, first.new_participant) == (True, 1, True)
    assert (again.counted, again.n) == (False, None)
    assert other_kind.n == 1 and other_target.n == 1 and not other_kind.new_participant
    assert next_day.n == 2 and second_user.n == 3 and second_user.new_participant
    async with db.session() as s:
        assert (await counts(s, 5))["flower"] == 3
        assert (await totals(s))["flower"] == 4 and (await totals(s))["people"] == 2


async def test_200_concurrent_tributes_are_counted_exactly(db: Database) -> None:
    """200 sessions at once (each its own transaction) on one hot counter: no lost increment, every
    counted action its own ordinal; the same user tapping 10 times at once counts once."""

    async def one(openid: str) -> int | None:
        async with db.session() as s:
            return (await record_tribute(s, openid, 7, "candle", DAY)).n

    ordinals = await asyncio.gather(*[one(f"user{i:03d}") for i in range(200)])
    assert sorted(ordinals) == list(range(1, 201))  # type: ignore[type-var]
    taps = await asyncio.gather(*[one(f"tapper{i % 20}") for i in range(200)])
    assert sum(1 for n in taps if n is not None) == 20
    async with db.session() as s:
        assert (await counts(s, 7))["candle"] == 220
        rows = (await s.execute(select(func.count()).select_from(MemorialTribute)
                                .where(MemorialTribute.martyr_id == 7))).scalar_one()
        assert rows == 220
        assert (await totals(s))["people"] == 220


async def test_reimport_updates_never_duplicates(db: Database) -> None:
    await _seed(db)
    text = SAMPLE.read_text(encoding="utf-8").replace("示例部队第一团三连,示例高地", "示例部队第九团,示例高地", 1)
    roll = parse_roll(text, DAY)
    async with db.session() as s:
        inserted, updated = await upsert_martyrs(s, roll.rows, NOW)
        total, page = await search_martyrs(s, "张建国", letters=False, limit=5)
    assert (inserted, updated) == (0, 12)
    assert total == 1 and page[0].unit == "示例部队第九团" and page[0].id == 1


async def test_search_ranks_exact_then_partial_and_finds_initials_hometown_unit(db: Database) -> None:
    await _seed(db)
    async with db.session() as s:
        total, page = await search_martyrs(s, "张海", letters=False, limit=5)
        assert (total, page[0].name) == (1, "张海")
        total, page = await search_martyrs(s, "张", letters=False, limit=3, offset=3)
        assert total == 6 and len(page) == 3
        assert [m.name for m in (await search_martyrs(s, "zjg", letters=True, limit=5))[1]] == ["张建国"]
        assert [m.name for m in (await search_martyrs(s, "slx", letters=True, limit=5))[1]] == ["单立新"]
        assert [m.name for m in (await search_martyrs(s, "zhangjian", letters=True, limit=5))[1]] == ["张建国"]
        assert (await search_martyrs(s, "河口乡", letters=False, limit=5))[0] == 2
        assert (await search_martyrs(s, "第二团一营", letters=False, limit=5))[0] == 2
        assert (await search_martyrs(s, "100%_", letters=False, limit=5))[0] == 0  # wildcards are literal


async def test_moderation_is_decided_once(db: Database) -> None:
    async with db.session() as s:
        m = await add_message(s, openid="u1", martyr_id=3, text="永远怀念", preset=False, status=PENDING,
                              now=NOW, day=DAY)
        await add_message(s, openid="u2", martyr_id=3, text="英雄永垂不朽", preset=True, status=APPROVED,
                          now=NOW, day=DAY)
        await add_message(s, openid="u3", martyr_id=3, text="广告", preset=False, status=REJECTED, now=NOW,
                          day=DAY, reason="敏感词")
    async with db.session() as s:
        assert [x.text for x in await approved_messages(s, 3)] == ["英雄永垂不朽"]
        decided = await decide_message(s, m.id, True, by="staff", now=NOW)
        assert decided.status == APPROVED and decided.decided_by == "staff"
    async with db.session() as s:
        try:
            await decide_message(s, m.id, False, by="staff2", now=NOW)
        except NotPending as e:
            assert "already approved" in str(e)
        else:
            raise AssertionError("decided twice")
        assert [x.text for x in await approved_messages(s, 3)] == ["英雄永垂不朽", "永远怀念"]  # newest first


async def test_campaign_due_once_and_recipients_skip_unfollowers(db: Database) -> None:
    async with db.session() as s:
        assert await ensure_campaign(s, code="qingming-2026", title="清明", kind="qingming", day=date(2026, 4, 5),
                                     starts_on=date(2026, 3, 30), ends_on=date(2026, 4, 6), now=NOW)
        assert not await ensure_campaign(s, code="qingming-2026", title="x", kind="qingming",
                                         day=date(2026, 4, 5), starts_on=date(2026, 4, 5),
                                         ends_on=date(2026, 4, 5), now=NOW)
        for o, subscribed in (("a", True), ("b", False), ("c", True)):
            s.add(User(openid=o, subscribed=subscribed, first_seen=NOW, last_seen=NOW, kefu_sent=0, roles=""))
        for o in ("a", "b", "c", "d"):
            assert await opt_in(s, o, NOW)
        assert not await opt_in(s, "a", NOW)
        assert await opt_out(s, "d") and not await opt_out(s, "d")
    async with db.session() as s:
        assert await reminder_recipients(s, "", 10) == ["a", "c"]
        assert await reminder_recipients(s, "a", 10) == ["c"]
        due = await due_campaigns(s, date(2026, 4, 5))
        assert [c.code for c in due] == ["qingming-2026"]
        assert await claim_campaign(s, due[0].id, NOW)
        assert not await claim_campaign(s, due[0].id, NOW)
        assert await due_campaigns(s, date(2026, 4, 5)) == []


async def test_day_stats(db: Database) -> None:
    async with db.session() as s:
        for openid, mid, action, day in [("a", 0, "flower", DAY), ("a", 1, "flower", DAY), ("b", 0, "salute", DAY),
                                         ("a", 0, "flower", date(2026, 4, 5)), ("c", 2, "message", DAY)]:
            await record_tribute(s, openid, mid, action, day)
    async with db.session() as s:
        days, overall = await day_stats(s, date(2026, 4, 3), date(2026, 4, 5))
    assert [(d.day.day, d.participants, d.total) for d in days] == [(3, 0, 0), (4, 3, 4), (5, 1, 1)]
    assert days[1].actions == {"flower": 2, "salute": 1, "candle": 0, "silence": 0, "message": 1}
    assert overall == 3
