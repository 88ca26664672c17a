"""Retention and unfollow erasure on the injected clock: `privacy_retention` deletes or clears what is older
than its privacy.*_days; `privacy_unfollow` erases people who unfollowed privacy.unfollow_erase_days ago,
unless a team roster has them; `privacy_compact` keeps to privacy.compact_hour."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select

from bot.clock import FakeClock
from bot.scheduler import run_tick
from flows.api import Services, load_all, ticks
from storage.db import Database
from storage.jobs import JobDigest, JobSent, JobSubscription
from storage.memorial import MemorialMessage
from storage.models import PURGED_PAYLOAD, Conversation, OutboxMessage, Ticket, User
from storage.privacy import Erasure, declarations, purge
from storage.qa import QAGap
from tests.conftest import make_config
from tests.helpers import chat_session
from tests.privacy.conftest import OTHER, PERSON, T0, say, seed_team, tick

D = timedelta(days=1)
_created = iter(range(1_700_000_000, 1_800_000_000))


async def _event(chat, who: str, event: str) -> None:  # type: ignore[no-untyped-def]
    """An event with its own CreateTime (two events of one user in the same second would be one event to
    the dedup, as WeChat's retries are)."""
    from bot.sim import event_xml

    await chat.send_xml(event_xml(who, event, create_time=next(_created)))


def _tick(name: str):  # type: ignore[no-untyped-def]
    (t,) = [t for t in ticks() if t.name == name]
    return t


async def _seed(db: Database) -> None:
    async with db.session() as s:
        s.add_all([
            Conversation(openid="c_old", slots={"x": "旧"}, stack=[], choices=[], reasks=0, updated_at=T0 - 31 * D,
                         expired=False),
            Conversation(openid="c_new", slots={}, stack=[], choices=[], reasks=0, updated_at=T0 - 29 * D, expired=False),
            Ticket(openid="t1", text="旧留言", context={}, status="closed", created_at=T0 - 400 * D, closed_at=T0 - 366 * D),
            Ticket(openid="t2", text="新留言", context={}, status="closed", created_at=T0 - 20 * D, closed_at=T0 - 10 * D),
            Ticket(openid="t3", text="没人回的留言", context={}, status="open", created_at=T0 - 500 * D),
            QAGap(norm="旧问题", example="旧问题", kind="unknown", count=1, first_at=T0 - 400 * D, last_at=T0 - 366 * D),
            QAGap(norm="新问题", example="新问题", kind="unknown", count=1, first_at=T0 - 400 * D, last_at=T0 - 10 * D),
            JobSent(openid="j1", posting_id=1, kind="instant", day=date(2025, 12, 1), created_at=T0 - 181 * D),
            JobSent(openid="j1", posting_id=2, kind="instant", day=date(2026, 6, 1), created_at=T0 - 10 * D),
            JobDigest(openid="j1", day=date(2026, 4, 1), after_id=0, upto_id=1, criteria={}, shown_ids=[1], total=1,
                      created_at=T0 - 61 * D),
            JobSubscription(openid="j_gone", status="cancelled", places=[], keywords=[], categories=[],
                            created_at=T0 - 100 * D, updated_at=T0 - 31 * D),
            JobSubscription(openid="j_on", status="active", places=[], keywords=[], categories=[],
                            created_at=T0 - 100 * D, updated_at=T0 - 100 * D),
        ])
        for status, text, created in (("rejected", "被拒的寄语", T0 - 91 * D), ("approved", "公开的寄语", T0 - 200 * D),
                                      ("pending", "待审的寄语", T0 - 100 * D)):
            s.add(MemorialMessage(martyr_id=0, openid="m1", text=text, preset=False, status=status,
                                  day=created.date(), created_at=created))
        for key, status, created in (("sent_old", "sent", T0 - 31 * D), ("sent_new", "sent", T0 - 10 * D),
                                     ("failed_old", "failed", T0 - 31 * D), ("pending_old", "pending", T0 - 31 * D),
                                     ("sent_ancient", "sent", T0 - 401 * D), ("cancelled_old", "cancelled", T0 - 40 * D)):
            s.add(OutboxMessage(idempotency_key=f"o1:{key}", openid="o1", purpose="notice", priority=5,
                                payload={"text": f"正文 {key}", "data": {}}, status=status, skipped_channels=[],
                                attempts=0, due_at=created, created_at=created))


async def test_retention_purges_what_is_older_than_its_days(db_url: str) -> None:
    load_all()
    cfg = make_config(db_url)
    db = Database(db_url)
    try:
        await _seed(db)
        services = Services(config=cfg, clock=FakeClock(T0), db=db)
        await run_tick(_tick("privacy_retention"), db, services)
        async with db.session() as s:
            convs = set((await s.execute(select(Conversation.openid))).scalars())
            assert convs == {"c_new"}
            assert set((await s.execute(select(Ticket.text))).scalars()) == {"新留言", "没人回的留言"}
            assert set((await s.execute(select(QAGap.norm))).scalars()) == {"新问题"}
            assert set((await s.execute(select(JobSent.posting_id))).scalars()) == {2}
            assert (await s.execute(select(func.count()).select_from(JobDigest))).scalar_one() == 0
            assert set((await s.execute(select(JobSubscription.openid))).scalars()) == {"j_on"}
            assert set((await s.execute(select(MemorialMessage.text))).scalars()) == {"公开的寄语", "待审的寄语"}
            out = {o.idempotency_key.split(":")[1]: o for o in (await s.execute(select(OutboxMessage))).scalars()}
            assert set(out) == {"sent_old", "sent_new", "failed_old", "pending_old", "cancelled_old"}
            assert out["sent_old"].payload == PURGED_PAYLOAD and out["sent_old"].status == "sent"
            assert out["cancelled_old"].payload == PURGED_PAYLOAD
            assert out["sent_new"].payload["text"] == "正文 sent_new"
            assert out["pending_old"].payload["text"] == "正文 pending_old"  # scheduled work is not retention's
            # a failed push loses its text and can no longer be retried into an empty message
            assert (out["failed_old"].status, out["failed_old"].payload) == ("cancelled", PURGED_PAYLOAD)
        async with db.session() as s:
            assert await purge(s, T0, cfg.privacy.retention_days()) == {}  # nothing left to do: idempotent
    finally:
        await db.close()


async def test_zero_days_keeps_and_every_rule_is_valid_sql(db_url: str) -> None:
    cfg = make_config(db_url, privacy__ticket_days="0")
    db = Database(db_url)
    try:
        await _seed(db)
        async with db.session() as s:
            done = await purge(s, T0, cfg.privacy.retention_days())
            assert "tickets:ticket_days" not in done and "conversations:conversation_days" in done
            assert (await s.execute(select(func.count()).select_from(Ticket))).scalar_one() == 3
        # every declared rule runs on this database (a rule a branch adds is checked here too)
        keys = {r.key: 1 for d in declarations().values() for r in d.retention if r.key}
        async with db.session() as s:
            await purge(s, T0 + 1000 * D, keys)
    finally:
        await db.close()


async def test_unfollowed_people_are_erased_after_the_grace_period_unless_on_a_roster(db_url: str) -> None:
    await seed_team(db_url, T0)  # OTHER is a bound roster member
    cfg = make_config(db_url, bot__fallback_flow="help", privacy__unfollow_erase_days="30")
    async with chat_session(cfg) as chat:
        clock = chat.clock
        clock.set(T0)
        for who in (PERSON, OTHER, "u_back", "u_later"):
            await _event(chat, who, "subscribe")
            await say(chat, "人工", who=who)
            await say(chat, f"{who} 的留言", who=who)
        for who in (PERSON, OTHER, "u_back"):
            await _event(chat, who, "unsubscribe")
        clock.advance(days=5)
        await _event(chat, "u_later", "unsubscribe")
        clock.advance(days=10)
        await _event(chat, "u_back", "subscribe")  # came back within the grace period
        clock.advance(days=15, seconds=1)  # PERSON and OTHER unfollowed 30 days ago, u_later 25
        await tick(chat, "privacy_unfollow")
        async with chat.runtime.db.session() as s:
            users = set((await s.execute(select(User.openid))).scalars())
            assert PERSON not in users and {OTHER, "u_back", "u_later"} <= users
            tickets = set((await s.execute(select(Ticket.openid))).scalars())
            assert tickets == {OTHER, "u_back", "u_later"}
            (log,) = list((await s.execute(select(Erasure))).scalars())
            assert log.by == "unfollow" and log.counts["users"] == {"deleted": 1}
        clock.advance(days=5)
        await tick(chat, "privacy_unfollow")
        async with chat.runtime.db.session() as s:
            users = set((await s.execute(select(User.openid))).scalars())
            assert "u_later" not in users and {OTHER, "u_back"} <= users
            assert (await s.execute(select(func.count()).select_from(Erasure))).scalar_one() == 2


async def test_unfollow_erasure_can_be_switched_off(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help", privacy__unfollow_erase_days="0")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        await _event(chat, PERSON, "subscribe")
        await _event(chat, PERSON, "unsubscribe")
        chat.clock.advance(days=400)
        await tick(chat, "privacy_unfollow")
        async with chat.runtime.db.session() as s:
            assert await s.get(User, PERSON) is not None


async def test_compaction_waits_for_its_hour(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help", privacy__compact_hour="3")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)  # 10:00 local
        await say(chat, "注销")
        await say(chat, "确认")
        await tick(chat, "privacy_compact")
        async with chat.runtime.db.session() as s:
            (log,) = list((await s.execute(select(Erasure))).scalars())
            assert log.compacted_at is None
        chat.clock.set(T0 + timedelta(hours=17))  # 03:00 local the next day
        await tick(chat, "privacy_compact")
        async with chat.runtime.db.session() as s:
            (log,) = list((await s.execute(select(Erasure))).scalars())
            assert log.compacted_at == T0 + timedelta(hours=17)
