"""End to end through WeChat XML: a turn over the reply budget answers `success`, and its reply
reaches the fake WeChat API as a customer-service message through the outbox, woken by the commit."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bot.dispatcher import Dispatcher
from bot.fake_wechat import FakeWeChatServer
from bot.outbox import OutboxSender
from flows.api import Context
from storage.db import Database
from tests.helpers import chat_session
from tests.outbox.conftest import KEFU_PATH, calls, notice, outbox_config, queue, row_of, uid


async def _wait_for(pred: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return False


async def test_slow_turn_reply_goes_out_as_kefu_message(db_url: str, fake: FakeWeChatServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The poll interval is far longer than the test waits: only the after-commit wake can deliver in time.
    cfg = outbox_config(db_url, fake, bot__fallback_flow="help", server__reply_budget_s="0.3",
                        outbox__poll_interval_s="60", scheduler__enabled="false")
    original = Dispatcher._route

    async def slow_route(self: Dispatcher, ctx: Context, conv: Any) -> None:
        if ctx.inbound.kind == "text" and ctx.text == "帮助慢":
            await asyncio.sleep(0.8)  # stands for a slow database or knowledge-base lookup
            ctx.inbound.text = "帮助"
        await original(self, ctx, conv)

    monkeypatch.setattr(Dispatcher, "_route", slow_route)
    me = uid(900)
    async with chat_session(cfg, background=True) as chat:
        first = await chat.send(me, "帮助")
        assert first  # a normal, fast turn answers passively
        before = len(fake.state.calls)
        late = await chat.send(me, "帮助慢")
        assert late is None  # WeChat got `success` within the budget
        assert not calls(fake, KEFU_PATH)[before:]
        assert await _wait_for(lambda: calls(fake, KEFU_PATH), 5.0), "the late reply never reached WeChat"
        (call,) = calls(fake, KEFU_PATH)
        assert call["body"]["touser"] == me and call["body"]["msgtype"] == "text"
        # The result is committed with the sender's next group (within outbox GROUP_COMMIT_S).
        for _ in range(100):
            row = await row_of(chat.runtime.db, me)
            if row.status == "sent":
                break
            await asyncio.sleep(0.05)
        assert row.purpose == "late_reply" and row.channel == "kefu" and row.status == "sent"
        assert call["body"]["text"]["content"] == row.payload["text"] == first


async def test_commit_of_a_push_wakes_the_sender(db: Database, sender: OutboxSender, clock: Any) -> None:
    sender._wake.clear()
    async with db.session() as s:
        s.info["unrelated"] = True
    assert not sender._wake.is_set()
    await queue(db, clock.now(), notice(uid(901)))
    assert sender._wake.is_set()


async def test_rolled_back_push_does_not_wake(db: Database, sender: OutboxSender, clock: Any) -> None:
    from storage.outbox import enqueue

    sender._wake.clear()
    with pytest.raises(RuntimeError):
        async with db.session() as s:
            await enqueue(s, notice(uid(902)), clock.now())
            raise RuntimeError("the change failed")
    assert not sender._wake.is_set()
    async with db.session() as s:
        s.info["x"] = 1
    assert not sender._wake.is_set()


async def test_background_sender_polls_for_rows_written_elsewhere(db_url: str, fake: FakeWeChatServer) -> None:
    # Rows written without an ORM session of this process (another process, raw SQL) wake nobody:
    # the poll picks them up.
    from sqlalchemy import insert

    from storage.models import OutboxMessage
    from storage.outbox import _row

    cfg = outbox_config(db_url, fake, bot__fallback_flow="help", outbox__poll_interval_s="0.1",
                        scheduler__enabled="false")
    async with chat_session(cfg, background=True) as chat:
        sender = chat.runtime.outbox_sender
        async with chat.runtime.db.engine.begin() as conn:
            await conn.execute(insert(OutboxMessage.__table__), _row(notice(uid(903)), chat.clock.now()))
        assert not sender._wake.is_set()
        assert await _wait_for(lambda: calls(fake, "/cgi-bin/message/template/send"), 5.0)
