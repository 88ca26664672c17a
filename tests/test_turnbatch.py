"""SQLite group commit: turns in one batch are isolated by SAVEPOINTs and committed together."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.app import build_runtime
from bot.clock import FakeClock
from bot.dispatcher import TurnControl
from flows.api import Context, Flow, Inbound, flow
from storage.models import InboundDedup, Ticket, User
from tests.conftest import database_url, make_config


async def _write_ticket(ctx: Context, text: str) -> None:
    """A write through the flow's ORM session that the turn's failure must roll back."""
    ctx.session.add(Ticket(openid=ctx.openid, text=text, context={}, status="open", created_at=ctx.now))
    await ctx.session.flush()


@flow
class _Boom(Flow):
    """Writes a ticket through the ORM session, then fails: the ticket must not survive."""

    name = "test_boom"

    async def start(self, ctx: Context) -> None:
        await _write_ticket(ctx, "half-done")
        ctx.user.name = "不该保存"
        raise RuntimeError("flow bug")


@pytest.fixture
def sqlite_url(tmp_path):  # type: ignore[no-untyped-def]
    return database_url("sqlite", tmp_path)[0]


async def test_a_failing_turn_rolls_back_alone_and_the_batch_commits(sqlite_url: str) -> None:
    cfg = make_config(sqlite_url, bot__fallback_flow="test_boom")
    rt = await build_runtime(cfg, clock=FakeClock())
    try:
        d = rt.dispatcher
        results = await asyncio.gather(
            d.handle("u_ok1", Inbound(kind="text", text="帮助"), "k1", TurnControl()),
            d.handle("u_bad", Inbound(kind="text", text="子女上学有什么优待政策吗"), "k2", TurnControl()),
            d.handle("u_ok2", Inbound(kind="text", text="人工"), "k3", TurnControl()),
            d.handle("u_ok1", Inbound(kind="text", text="帮助"), "k1", TurnControl()),  # a retry in the same batch
            return_exceptions=True,
        )
        assert "您可以回复数字办理" in results[0]
        assert isinstance(results[1], RuntimeError)
        assert "请直接输入" in results[2]
        assert results[3] == results[0], "the retry must get the stored reply"
        assert rt.db.batcher.batches <= 2
        async with rt.db.session() as s:
            assert (await s.execute(select(func.count(Ticket.id)))).scalar() == 0
            bad = await s.get(User, "u_bad")
            assert bad is None, "the failed turn's user row must be rolled back too"
            keys = set((await s.execute(select(InboundDedup.key))).scalars())
            assert keys == {"k1", "k3"}
    finally:
        await rt.close()


async def test_user_changes_from_a_flow_persist_on_the_fast_path(sqlite_url: str) -> None:
    cfg = make_config(sqlite_url, bot__fallback_flow="help")
    rt = await build_runtime(cfg, clock=FakeClock())
    try:
        d = rt.dispatcher
        for i, text in enumerate(["我的信息", "1", "李秀英", "13912345678", "城关镇", "2"]):
            await d.handle("u_fast", Inbound(kind="text", text=text), f"f{i}", TurnControl())
        async with rt.db.session() as s:
            u = await s.get(User, "u_fast")
            assert (u.name, u.phone, u.township, u.kind, u.roles) == ("李秀英", "13912345678", "城关镇", "family",
                                                                     "family")
    finally:
        await rt.close()


@flow
class _Stuck(Flow):
    """Writes a ticket, then hangs (a remote call that never answers): the batch must not wait for it."""

    name = "test_stuck"

    async def start(self, ctx: Context) -> None:
        await _write_ticket(ctx, "stuck")
        await asyncio.sleep(3600)


async def test_a_stuck_turn_times_out_alone_and_the_batch_commits(sqlite_url: str) -> None:
    cfg = make_config(sqlite_url, bot__fallback_flow="test_stuck")
    rt = await build_runtime(cfg, clock=FakeClock())
    try:
        d = rt.dispatcher
        rt.db.batcher.turn_timeout = 0.2
        results = await asyncio.wait_for(asyncio.gather(
            d.handle("u_stuck", Inbound(kind="text", text="子女上学有什么优待政策吗"), "s1", TurnControl()),
            d.handle("u_ok", Inbound(kind="text", text="帮助"), "s2", TurnControl()),
            return_exceptions=True,
        ), 10)
        assert isinstance(results[0], TimeoutError)
        assert "您可以回复数字办理" in results[1]
        # The worker is still good for the next batch.
        again = await asyncio.wait_for(d.handle("u_ok", Inbound(kind="text", text="帮助"), "s3", TurnControl()), 10)
        assert "您可以回复数字办理" in again
        async with rt.db.session() as s:
            assert (await s.execute(select(func.count(Ticket.id)))).scalar() == 0
            assert set((await s.execute(select(InboundDedup.key))).scalars()) == {"s2", "s3"}
    finally:
        await rt.close()


async def test_close_stops_a_turn_that_swallows_the_cancellation(sqlite_url: str) -> None:
    """Shutdown cancels the worker mid-turn; a turn that catches CancelledError must not keep it alive
    (the batch rolls back, the turn's future is cancelled and close() returns)."""
    from storage.db import Database

    db = Database(sqlite_url)
    started = asyncio.Event()

    async def swallowing(turn):  # type: ignore[no-untyped-def]
        raw = turn.raw
        raw.execute("CREATE TABLE IF NOT EXISTS t (x)")
        raw.execute("INSERT INTO t VALUES (1)")
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    try:
        fut = db.batcher.enqueue(swallowing)
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.wait_for(db.batcher.close(), 2)
        assert fut.cancelled()
    finally:
        await db.close()
    import sqlite3

    con = sqlite3.connect(sqlite_url.split("///", 1)[1])
    try:
        assert con.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone() is None, \
            "the cancelled batch must have rolled back"
    finally:
        con.close()
