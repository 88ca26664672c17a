"""Alerts on import and the daily digest, on SQLite and PostgreSQL: who gets what, when, and never twice."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

from sqlalchemy import func, select, update

from bot.config import Config
from bot.links import JOBS_KIND
from flows.api import Services
from flows.jobs.alerts import expire_due, run_digests
from storage import linktokens
from storage.db import Database
from storage.jobs import JobDigest, JobPosting, JobSent, JobSubscription, expire_postings
from storage.models import OutboxMessage, User
from storage.outbox import LOW
from tests.jobs.util import add_sub, posting, store

# 10:00 on 4 April 2026 in Shanghai.
T0 = datetime(2026, 4, 4, 2, 0)


async def pushes(db: Database, openid: str | None = None) -> list[OutboxMessage]:
    async with db.session() as s:
        q = select(OutboxMessage).where(OutboxMessage.purpose == "job_alert").order_by(OutboxMessage.id)
        if openid:
            q = q.where(OutboxMessage.openid == openid)
        return list((await s.execute(q)).scalars())


async def sub_of(db: Database, openid: str) -> JobSubscription:
    async with db.session() as s:
        return (await s.execute(select(JobSubscription).where(JobSubscription.openid == openid))).scalar_one()


async def digests(db: Database, now: datetime, config: Config) -> None:
    async with db.session() as s:
        await run_digests(s, now, config)


async def test_instant_alert_goes_only_to_matching_active_followers(db: Database, config: Config) -> None:
    await add_sub(db, "a_any", T0)
    await add_sub(db, "b_paused", T0, status="paused")
    await add_sub(db, "c_cancelled", T0, status="cancelled")
    await add_sub(db, "d_unfollowed", T0, follow=False)
    await add_sub(db, "e_daily", T0, mode="daily")
    await add_sub(db, "f_elsewhere", T0, places=["庙坝镇"])
    await add_sub(db, "g_guard", T0, categories=["保安"], min_salary=3500)
    rep = await store(db, config, [posting(title="保安队长", salary_min=4000, salary_max=5000, veteran_priority=True)], T0)
    assert (rep.new, rep.subscribers, rep.instant_pushes, rep.digests_scheduled) == (1, 4, 2, 1)
    got = {p.openid: p for p in await pushes(db)}
    assert set(got) == {"a_any", "g_guard"}
    p = got["g_guard"]
    pid = rep.new_ids[0]
    assert p.idempotency_key == f"g_guard:job:{pid}" and p.due_at == T0
    assert (p.ref_type, p.ref_id) == ("job_posting", pid)
    data = p.payload["data"]
    assert data["title"] == "新岗位：保安队长" and "4000-5000元" in data["content"] and data["veteran_priority"] == "是"
    assert "保安队长" in p.payload["text"] and "退役军人优先" in p.payload["text"]
    token, query = p.payload["url"].split("/jobs/p/")[1].split("?")
    assert query == f"p={pid}"
    async with db.session() as s:  # an opaque token naming its person in the database only
        row = await linktokens.resolve(s, token, JOBS_KIND, T0)
    assert row.openid == "g_guard" and "g_guard" not in p.payload["url"]
    # The daily subscriber waits for tomorrow 08:00 local (00:00 UTC).
    assert (await sub_of(db, "e_daily")).next_digest_at == datetime(2026, 4, 5, 0, 0)


async def test_daily_cap_rolls_the_rest_into_the_next_digest(db: Database, config: Config) -> None:
    await add_sub(db, "u", T0)
    first = [posting(title=f"岗位{i}", veteran_priority=i in (3, 4)) for i in range(5)]
    rep = await store(db, config, first, T0)
    assert rep.instant_pushes == 3
    sent = await pushes(db, "u")
    titles = [p.payload["data"]["job"] for p in sent]
    assert titles[:2] == ["岗位4", "岗位3"]  # best first: 退役军人优先, then newest
    assert (await sub_of(db, "u")).next_digest_at == datetime(2026, 4, 5, 0, 0)
    # Later the same local day: the cap is used up.
    rep = await store(db, config, [posting(title="岗位5"), posting(title="岗位6")], T0 + timedelta(hours=1))
    assert rep.instant_pushes == 0 and len(await pushes(db, "u")) == 3
    # Next morning 08:00: one digest with the four not yet pushed.
    morning = datetime(2026, 4, 5, 0, 0)
    await digests(db, morning - timedelta(minutes=1), config)
    assert len(await pushes(db, "u")) == 3
    await digests(db, morning, config)
    all_pushes = await pushes(db, "u")
    assert len(all_pushes) == 4
    d = all_pushes[-1]
    assert d.idempotency_key == "u:jobdigest:2026-04-05" and d.priority == LOW
    assert "4 个新岗位" in d.payload["text"]
    async with db.session() as s:
        n_sent = (await s.execute(select(func.count()).select_from(JobSent).where(JobSent.openid == "u"))).scalar()
        dig = (await s.execute(select(JobDigest))).scalar_one()
    assert n_sent == 7 and dig.total == 4 and len(dig.shown_ids) == 4 and set(titles).isdisjoint(
        {p.title for p in await _postings(db, dig.shown_ids)})
    # Nothing is due any more; a second run sends nothing.
    await digests(db, morning + timedelta(minutes=5), config)
    assert len(await pushes(db, "u")) == 4
    # A new local day has a fresh cap.
    rep = await store(db, config, [posting(title="岗位7")], morning + timedelta(hours=1))
    assert rep.instant_pushes == 1


async def _postings(db: Database, ids: list[int]) -> list[JobPosting]:
    async with db.session() as s:
        return list((await s.execute(select(JobPosting).where(JobPosting.id.in_(ids)))).scalars())


async def test_quiet_hours_defer_alerts_to_their_end(db: Database, config: Config) -> None:
    await add_sub(db, "q", T0)  # quiet 22:00-07:00
    await add_sub(db, "night_owl", T0, quiet_start=0, quiet_end=0)
    late = datetime(2026, 4, 4, 15, 30)  # 23:30 local
    today_only = posting(title="今天截止", deadline=date(2026, 4, 4), expires_at=datetime(2026, 4, 4, 16, 0))
    rep = await store(db, config, [posting(title="夜里导入"), today_only], late)
    by_user: dict[str, list[OutboxMessage]] = {}
    for p in await pushes(db):
        by_user.setdefault(p.openid, []).append(p)
    # 07:00 local next morning; the posting that closes at midnight is not pushed to the sleeper at all.
    assert [(p.payload["data"]["job"], p.due_at) for p in by_user["q"]] == [("夜里导入", datetime(2026, 4, 4, 23, 0))]
    assert sorted(p.payload["data"]["job"] for p in by_user["night_owl"]) == ["今天截止", "夜里导入"]
    assert rep.instant_pushes == 3
    async with db.session() as s:
        day = (await s.execute(select(JobSent.day).where(JobSent.openid == "q"))).scalar_one()
    assert day == date(2026, 4, 5)  # counts against the day it is delivered


async def test_digest_at_the_users_time_with_the_best_n(db: Database, config: Config) -> None:
    await add_sub(db, "d", T0, mode="daily", digest_minute=19 * 60, keywords=["保安"])
    rows = [posting(title=f"保安{i}", salary_min=3000 + 100 * i, salary_max=3000 + 100 * i) for i in range(7)]
    rows.append(posting(title="厨师"))
    await store(db, config, rows, T0)
    assert await pushes(db) == []
    due = datetime(2026, 4, 4, 11, 0)  # 19:00 local
    assert (await sub_of(db, "d")).next_digest_at == due
    await digests(db, due - timedelta(seconds=1), config)
    assert await pushes(db) == []
    await digests(db, due, config)
    (d,) = await pushes(db, "d")
    text = d.payload["text"]
    assert "7 个新岗位" in text and "精选" in text and "厨师" not in text
    assert text.count("\n") == 6  # header, 5 postings, footer
    assert "保安6" in text.split("\n")[1]  # best pay first
    assert d.payload["data"]["count"] == "7" and "/jobs/d/" in d.payload["url"]
    sub = await sub_of(db, "d")
    assert sub.next_digest_at is None and sub.cursor > 0
    # Tomorrow: only postings imported after this digest, never the two left on the "see all" page.
    await store(db, config, [posting(title="保安新")], due + timedelta(hours=1))
    tomorrow = datetime(2026, 4, 5, 11, 0)
    assert (await sub_of(db, "d")).next_digest_at == tomorrow
    await digests(db, tomorrow, config)
    latest = (await pushes(db, "d"))[-1]
    assert latest.idempotency_key == "d:jobdigest:2026-04-05" and "1 个新岗位" in latest.payload["text"]


async def test_digest_waits_out_quiet_hours_and_skips_unfollowed(db: Database, config: Config) -> None:
    await add_sub(db, "late", T0, mode="daily", digest_minute=8 * 60, quiet_start=0, quiet_end=9 * 60)
    await add_sub(db, "gone", T0, mode="daily")
    await store(db, config, [posting()], T0)
    async with db.session() as s:
        await s.execute(update(User).where(User.openid == "gone").values(subscribed=False))
    # The digest time (08:00) lies inside this user's quiet hours (00:00-09:00): due at 09:00.
    assert (await sub_of(db, "late")).next_digest_at == datetime(2026, 4, 5, 1, 0)
    # Whatever was scheduled: a digest found due inside quiet hours is deferred, not sent.
    async with db.session() as s:
        await s.execute(update(JobSubscription).where(JobSubscription.openid == "late")
                        .values(next_digest_at=datetime(2026, 4, 4, 23, 0)))
    await digests(db, datetime(2026, 4, 5, 0, 30), config)  # 08:30 local
    assert await pushes(db) == []
    assert (await sub_of(db, "late")).next_digest_at == datetime(2026, 4, 5, 1, 0)
    await digests(db, datetime(2026, 4, 5, 1, 0), config)
    assert [p.openid for p in await pushes(db)] == ["late"]


async def test_one_digest_a_day(db: Database, config: Config) -> None:
    await add_sub(db, "d", T0, mode="daily", digest_minute=12 * 60)
    await store(db, config, [posting(title="一")], T0)
    noon = datetime(2026, 4, 4, 4, 0)
    await digests(db, noon, config)
    await store(db, config, [posting(title="二")], noon + timedelta(minutes=5))
    async with db.session() as s:  # e.g. the user moved the time to later today
        await s.execute(update(JobSubscription).values(next_digest_at=noon + timedelta(hours=2)))
    await digests(db, noon + timedelta(hours=2), config)
    assert len(await pushes(db, "d")) == 1
    assert (await sub_of(db, "d")).next_digest_at == datetime(2026, 4, 5, 4, 0)
    await digests(db, datetime(2026, 4, 5, 4, 0), config)
    texts = [p.payload["text"] for p in await pushes(db, "d")]
    assert len(texts) == 2 and "1. 二" in texts[1]


async def test_reimport_updates_and_never_pushes_twice(db: Database, config: Config) -> None:
    await add_sub(db, "u", T0)
    rows = [posting(title="保安"), posting(title="司机")]
    rep = await store(db, config, rows, T0)
    assert (rep.new, rep.instant_pushes) == (2, 2)
    changed = [posting(title="保安", salary_min=3500), posting(title="司机")]
    rep = await store(db, config, changed, T0 + timedelta(hours=1))
    assert (rep.new, rep.updated, rep.unchanged, rep.instant_pushes) == (0, 1, 1, 0)
    async with db.session() as s:
        n = (await s.execute(select(func.count()).select_from(JobPosting))).scalar()
        pay = (await s.execute(select(JobPosting.salary_min).where(JobPosting.title == "保安"))).scalar()
    assert (n, pay) == (2, 3500)
    assert len(await pushes(db, "u")) == 2


async def test_concurrent_imports_of_the_same_file_store_each_posting_once(db: Database, config: Config) -> None:
    await add_sub(db, "u", T0)
    rows = [posting(title=f"岗位{i}") for i in range(3)]
    reps = await asyncio.gather(store(db, config, rows, T0), store(db, config, [dict(r) for r in rows], T0))
    assert sorted(r.new for r in reps) == [0, 3]
    assert len(await pushes(db, "u")) == 3


async def test_expired_postings_are_never_pushed(db: Database, config: Config) -> None:
    await add_sub(db, "u", T0, quiet_start=0, quiet_end=0)
    await add_sub(db, "sleeper", T0)
    await add_sub(db, "d", T0, mode="daily", digest_minute=20 * 60)
    old = posting(title="已截止", deadline=date(2026, 4, 3), expires_at=datetime(2026, 4, 3, 16, 0))
    rep = await store(db, config, [old], T0)
    assert rep.instant_pushes == 0 and rep.digests_scheduled == 0
    # Queued at night for the sleeper, then the fair ends before 07:00: the alert is cancelled.
    night = datetime(2026, 4, 4, 15, 0)  # 23:00 local
    await store(db, config, [posting(title="招聘会岗位", source="春季招聘会")], night)
    async with db.session() as s:
        assert await expire_postings(s, night + timedelta(hours=1), source="春季招聘会") == 1
        assert await expire_due(s, night + timedelta(hours=1)) == 2  # both still queued here
    states = {p.openid: p.status for p in await pushes(db) if p.payload["data"]["job"] == "招聘会岗位"}
    assert states == {"u": "cancelled", "sleeper": "cancelled"}
    # The daily digest skips it too.
    await digests(db, datetime(2026, 4, 5, 12, 0), config)
    assert await pushes(db, "d") == []
    assert (await sub_of(db, "d")).next_digest_at is None


async def test_digest_tick_runs_through_the_scheduler_api(db: Database, config: Config) -> None:
    from bot.clock import FakeClock
    from bot.scheduler import run_tick
    from flows.api import ticks

    await add_sub(db, "d", T0, mode="daily", digest_minute=19 * 60)
    await store(db, config, [posting()], T0)
    clock = FakeClock(datetime(2026, 4, 4, 11, 0))
    tick = next(t for t in ticks() if t.name == "jobs_digest")
    await run_tick(tick, db, Services(config=config, clock=clock, db=db))
    assert [p.idempotency_key for p in await pushes(db)] == ["d:jobdigest:2026-04-04"]
