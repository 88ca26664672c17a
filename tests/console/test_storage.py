"""storage/console.py on SQLite and PostgreSQL: one-time links and QR attempts are single use (also when
two requests race), sessions expire, roles and their audit entries, housekeeping."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from bot.fake_wechat import fake_openid
from storage import console as store
from storage.db import Database
from storage.models import User
from storage.qa import QAAsk, ask_counts, record_ask
from tests.console.conftest import T0, add_user

A, B = fake_openid(1), fake_openid(2)
TEN = timedelta(minutes=10)


async def test_a_link_logs_in_once_even_when_two_requests_race(db: Database) -> None:
    async with db.session() as s:
        raw = await store.create_link(s, A, T0, TEN)
        assert await store.link_state(s, raw, T0) == "ok"

    async def use() -> str | None:
        async with db.session() as s:
            return await store.use_link(s, raw, T0)

    results = await asyncio.gather(*(use() for _ in range(5)))
    assert sorted(r for r in results if r) == [A] and results.count(None) == 4
    async with db.session() as s:
        assert await store.link_state(s, raw, T0) == "used"
        assert await store.link_state(s, "x" * 43, T0) == "unknown"
        late = await store.create_link(s, A, T0, TEN)
        assert await store.link_state(s, late, T0 + TEN) == "expired"
        assert await store.use_link(s, late, T0 + TEN) is None


async def test_a_qr_attempt_moves_forward_once(db: Database) -> None:
    async with db.session() as s:
        row = await store.create_qr(s, scene="scene1", poll="poll1", qr_url="https://weixin.qq.com/q/x",
                                    client="1.2.3.4 · Chrome / Windows", next_path=None, now=T0, ttl=TEN)
        assert (await store.qr_by_poll(s, "poll1")).state == store.NEW  # type: ignore[union-attr]
        scanned = await store.scan_qr(s, "scene1", A, True, T0)
        assert scanned is not None and scanned.state == store.SCANNED and scanned.openid == A
        assert await store.scan_qr(s, "scene1", B, True, T0) is None  # a second scanner changes nothing
        assert not await store.confirm_qr(s, row.id, B, T0)  # only the one who scanned confirms
        assert await store.take_confirmed(s, "poll1", T0) is None  # not before confirming
        assert await store.confirm_qr(s, row.id, A, T0)

    async def take() -> tuple[str, str | None] | None:
        async with db.session() as s:
            return await store.take_confirmed(s, "poll1", T0)

    results = await asyncio.gather(*(take() for _ in range(4)))
    assert [r for r in results if r] == [(A, None)]
    async with db.session() as s:
        await store.create_qr(s, scene="scene2", poll="poll2", qr_url="u", client="", next_path="/staff/users",
                              now=T0, ttl=TEN)
        denied = await store.scan_qr(s, "scene2", B, False, T0)
        assert denied is not None and denied.state == store.DENIED
        await store.create_qr(s, scene="scene3", poll="poll3", qr_url="u", client="", next_path=None, now=T0, ttl=TEN)
        assert await store.scan_qr(s, "scene3", A, True, T0 + TEN) is None  # expired


async def test_sessions_expire_and_follow_the_role(db: Database) -> None:
    await add_user(db, A, T0, roles="staff")
    idle, max_age = timedelta(minutes=30), timedelta(hours=12)
    async with db.session() as s:
        raw = await store.create_session(s, A, T0, max_age, via="link")
        found = await store.load_session(s, raw, T0 + timedelta(minutes=29), idle)
        assert found is not None and found[1].openid == A
        await store.touch_session(s, found[0], T0 + timedelta(minutes=29))
    async with db.session() as s:
        assert await store.load_session(s, raw, T0 + timedelta(minutes=58), idle) is not None  # touched
        assert await store.load_session(s, raw + "x", T0, idle) is None
        assert await store.load_session(s, "", T0, idle) is None
        assert await store.load_session(s, "y" * 500, T0, idle) is None
    async with db.session() as s:
        assert await store.load_session(s, raw, T0 + timedelta(minutes=90), idle) is None  # idle
        assert (await s.execute(select(func.count()).select_from(store.ConsoleSession))).scalar_one() == 0
    async with db.session() as s:
        raw = await store.create_session(s, A, T0, max_age, via="qr")
        user = await s.get(User, A)
        assert user is not None
        assert await store.set_role(s, user, "staff", False, by=B, via="console", now=T0)
        assert await store.load_session(s, raw, T0, idle) is None  # sessions ended with the role


async def test_roles_admin_includes_staff_and_every_change_is_audited(db: Database) -> None:
    await add_user(db, A, T0)
    async with db.session() as s:
        user = await s.get(User, A)
        assert user is not None
        assert await store.set_role(s, user, "admin", True, by=B, via="cli", now=T0)
        assert user.role_set == {"admin", "staff"}
        assert not await store.set_role(s, user, "admin", True, by=B, via="cli", now=T0)  # no change, no entry
        assert await store.set_role(s, user, "staff", False, by=B, via="console", now=T0 + timedelta(seconds=1))
        assert user.role_set == set()
    async with db.session() as s:
        entries = await store.audit_entries(s)
        assert [(e.action, e.via, e.detail["role"]) for e in entries] == [("user.revoke", "console", "staff"),
                                                                          ("user.grant", "cli", "admin")]
        assert entries[0].detail["roles_before"] == ["admin", "staff"]
        assert [e.action for e in await store.audit_entries(s, action="user.g")] == ["user.grant"]
        assert await store.audit_entries(s, before_id=entries[1].id) == []
        assert await store.audit_actions(s) == ["user.grant", "user.revoke"]
        assert await store.audit_count(s) == 2
        assert await store.audit_entries(s, action="user_%") == []  # LIKE wildcards are text


async def test_housekeeping_and_qa_decisions(db: Database) -> None:
    await add_user(db, A, T0, roles="staff")
    async with db.session() as s:
        await store.create_session(s, A, T0, timedelta(hours=1), via="link")
        await store.create_link(s, A, T0, TEN)
        for d in ("answer", "list", "unknown", "answer"):
            await record_ask(s, d, "x" if d == "answer" else None, T0)
    async with db.session() as s:
        assert await ask_counts(s, T0) == {"answer": 2, "list": 1, "unknown": 1}
        assert await ask_counts(s, T0 + timedelta(seconds=1)) == {"answer": 0, "list": 0, "unknown": 0}
        assert await store.purge(s, T0 + timedelta(minutes=5), timedelta(minutes=30)) == 0
        assert await store.purge(s, T0 + timedelta(days=2), timedelta(minutes=30)) == 2
        assert (await s.execute(select(func.count()).select_from(QAAsk))).scalar_one() == 4


async def test_the_housekeeping_tick(db: Database, db_url: str) -> None:
    from bot.clock import FakeClock
    from bot.scheduler import run_tick
    from flows.api import Services, load_all, ticks
    from tests.console.conftest import console_config

    load_all()
    await add_user(db, A, T0, roles="staff")
    async with db.session() as s:
        await store.create_session(s, A, T0, timedelta(hours=1), via="link")
        await record_ask(s, "answer", None, T0 - timedelta(days=91))
        await record_ask(s, "answer", None, T0)
    clock = FakeClock(T0 + timedelta(hours=2))
    (tick,) = [t for t in ticks() if t.name == "console_purge"]
    await run_tick(tick, db, Services(config=console_config(db_url), clock=clock, db=db))
    async with db.session() as s:
        assert (await s.execute(select(func.count()).select_from(store.ConsoleSession))).scalar_one() == 0
        assert (await s.execute(select(func.count()).select_from(QAAsk))).scalar_one() == 1
