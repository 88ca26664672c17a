"""The outbox repository: claiming, the kefu quota counter, status counts and retry (SQLite and PG)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bot.clock import FakeClock
from storage.db import Database
from storage.outbox_repo import claim_due, reserve_kefu, retry_failed, status_counts
from tests.outbox.conftest import add_user, notice, queue, rows, uid, user_of


async def test_claim_takes_exactly_limit_rows_regression_pg_semi_join_claimed_all(db: Database,
                                                                                  clock: FakeClock) -> None:
    now = clock.now()
    await queue(db, now, *[notice(uid(i), key="c") for i in range(300)])
    claimed, _ = await claim_due(db, now, 50, "w1")
    assert len(claimed) == 50
    statuses = [r.status for r in await rows(db)]
    assert statuses.count("sending") == 50 and statuses.count("pending") == 250


async def test_concurrent_claims_are_disjoint(db_url: str, clock: FakeClock) -> None:
    now = clock.now()
    # Separate engines stand for separate processes (PostgreSQL: SKIP LOCKED; SQLite: BEGIN IMMEDIATE).
    dbs = [Database(db_url) for _ in range(3)]
    try:
        await queue(dbs[0], now, *[notice(uid(i), key="d") for i in range(400)])

        async def drain(db: Database, name: str) -> list[int]:
            got: list[int] = []
            while True:
                claimed, _ = await claim_due(db, now, 25, name)
                if not claimed:
                    return got
                got += [r.id for r in claimed]
                await asyncio.sleep(0)

        if dbs[0].is_sqlite:  # inline sqlite3 cannot wait for another engine in the same loop
            results = [await drain(d, f"w{i}") for i, d in enumerate(dbs)]
        else:
            results = await asyncio.gather(*(drain(d, f"w{i}") for i, d in enumerate(dbs)))
        ids = [i for r in results for i in r]
        assert len(ids) == 400 and len(set(ids)) == 400
    finally:
        for d in dbs:
            await d.close()


async def test_claim_reads_the_recipients(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(1), now, phone="13900000001", last_message_at=now, kefu_sent=2)
    await queue(db, now, notice(uid(1)), notice(uid(2)))
    claimed, users = await claim_due(db, now, 10, "w")
    assert {r.openid for r in claimed} == {uid(1), uid(2)}
    u = users[uid(1)]
    assert u.known and u.subscribed and u.phone == "13900000001" and u.kefu_sent == 2 and u.last_message_at == now
    assert uid(2) not in users


async def test_kefu_reservation_is_exact_under_concurrency(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(3), now, last_message_at=now - timedelta(hours=1))
    got = await asyncio.gather(*(reserve_kefu(db, uid(3), now, window_h=48, quota_after_message=5,
                                              event_window_s=60, quota_after_event=3) for _ in range(12)))
    assert got.count(True) == 5
    assert (await user_of(db, uid(3))).kefu_sent == 5


async def test_kefu_reservation_needs_an_open_window(db: Database, clock: FakeClock) -> None:
    now = clock.now()
    await add_user(db, uid(4), now, last_message_at=now - timedelta(hours=49))
    await add_user(db, uid(5), now, last_event_at=now - timedelta(seconds=10), kefu_sent=3)
    await add_user(db, uid(6), now, last_message_at=now, subscribed=False)
    kw = {"window_h": 48, "quota_after_message": 5, "event_window_s": 60, "quota_after_event": 3}
    assert not await reserve_kefu(db, uid(4), now, **kw)
    assert not await reserve_kefu(db, uid(5), now, **kw)
    assert not await reserve_kefu(db, uid(6), now, **kw)
    assert not await reserve_kefu(db, uid(7), now, **kw)  # no such user


async def test_status_counts_and_retry(db: Database, clock: FakeClock) -> None:
    from storage.outbox_repo import Outcome, record_outcomes

    now = clock.now()
    await queue(db, now, *[notice(uid(i), key="s") for i in range(5)])
    await queue(db, now + timedelta(hours=1), notice(uid(9), key="later", purpose="broadcast"))
    claimed, _ = await claim_due(db, now, 4, "w")
    a, b, c, d = claimed
    await record_outcomes(db, "w", [
        Outcome(a.id, "sent", 1, now, channel="template", sent_at=now),
        Outcome(b.id, "failed", 1, now, last_error="template: 43004 require subscribe"),
        Outcome(c.id, "failed", 1, now, last_error="template: 43004 require subscribe"),
        Outcome(d.id, "cancelled", 0, now, last_error="user unsubscribed"),
    ])
    st = await status_counts(db, now)
    assert st["total"] == 6
    assert st["by_status"] == {"pending": 2, "sending": 0, "sent": 1, "failed": 2, "cancelled": 1}
    assert st["by_channel"] == {"template": 1}
    assert st["by_purpose"]["notice"] == {"sent": 1, "failed": 2, "cancelled": 1, "pending": 1}
    assert st["by_purpose"]["broadcast"] == {"pending": 1}
    assert st["failure_reasons"] == [{"reason": "template: 43004 require subscribe", "count": 2}]
    assert st["cancel_reasons"] == [{"reason": "user unsubscribed", "count": 1}]
    assert st["pending_due_now"] == 1 and st["oldest_pending_due_at"] == now

    done, refused = await retry_failed(db, now, [b.id, a.id, d.id, 999])
    assert done == 1 and refused == [a.id, d.id, 999]
    again = {r.id: r for r in await rows(db)}[b.id]
    assert again.status == "pending" and again.attempts == 0 and again.last_error is None
    done, refused = await retry_failed(db, now)
    assert (done, refused) == (1, [])


async def test_enqueue_counts_multi_row_inserts_regression_asyncpg_rowcount(db: Database, clock: FakeClock) -> None:
    # asyncpg's executemany reports no rowcount: enqueue said 0 rows were queued on PostgreSQL.
    now = clock.now()
    assert await queue(db, now, *[notice(uid(i), key="m") for i in range(3)]) == 3
    assert await queue(db, now, *[notice(uid(i), key="m") for i in range(5)]) == 2
    assert await queue(db, now, notice(uid(0), key="m")) == 0


async def test_touch_claims_keeps_a_slow_senders_rows(db: Database, clock: FakeClock) -> None:
    from storage.outbox_repo import reclaim_stale, touch_claims

    now = clock.now()
    await queue(db, now, notice(uid(60)), notice(uid(61)))
    await claim_due(db, now, 10, "slow")
    assert await touch_claims(db, "slow", now + timedelta(seconds=100)) == 2
    assert await touch_claims(db, "other", now + timedelta(seconds=100)) == 0
    assert await reclaim_stale(db, now + timedelta(seconds=150), 120, 8) == 0
    assert await reclaim_stale(db, now + timedelta(seconds=221), 120, 8) == 2


async def test_a_dead_senders_rows_come_back_at_once_and_a_live_ones_stay(db: Database, clock: FakeClock) -> None:
    # Issue 14.10: rows of a killed sender stayed 'sending' for claim_timeout_s (120 s) before anyone
    # sent them. Claims are bound to the sender's life now: its lock (PostgreSQL) / the lock file (SQLite).
    from storage.outbox_repo import SenderLease, reclaim_orphans

    now = clock.now()
    await queue(db, now, *[notice(uid(i), key="o") for i in range(6)])
    live, other = SenderLease(db, "live"), SenderLease(db, "other")
    await live.acquire()
    await claim_due(db, now, 3, "live")
    await claim_due(db, now, 3, "killed")  # a sender that is gone (it holds no lock)
    await other.acquire()
    try:
        if db.is_sqlite:
            # One sender per SQLite database: the first to hold the lock file is alone and takes back every
            # row another name left; a second sender beside it is not alone and takes nothing.
            assert live.sole and not other.sole
            assert await reclaim_orphans(db, other, 8) == 0
            assert await reclaim_orphans(db, live, 8) == 3
        else:
            assert await reclaim_orphans(db, other, 8) == 3  # "killed" only; "live" holds its lock
            assert await reclaim_orphans(db, other, 8) == 0
            await live.release()  # what a SIGKILL does to its connection
            assert await reclaim_orphans(db, other, 8) == 3
        statuses = sorted(r.status for r in await rows(db))
        assert statuses == ["pending"] * 3 + ["sending"] * 3 if db.is_sqlite else ["pending"] * 6
    finally:
        await live.release()
        await other.release()


async def test_two_senders_with_one_name_get_two_leases(db: Database) -> None:
    from storage.outbox_repo import SenderLease

    if db.is_sqlite:
        pytest.skip("names only matter for PostgreSQL's per-sender locks")
    a, b = SenderLease(db, "same"), SenderLease(db, "same")
    try:
        assert await a.acquire() == "same"
        assert (await b.acquire()).startswith("same:")
        assert await a.alive() and await b.alive()
    finally:
        await a.release()
        await b.release()
