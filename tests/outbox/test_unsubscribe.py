"""Unfollowing through a real WeChat event cancels the user's pending pushes; they never go out."""

from __future__ import annotations

from datetime import timedelta

from bot.fake_wechat import FakeWeChatServer
from bot.outbox import build_sender
from storage.outbox import Push, enqueue
from tests.helpers import chat_session
from tests.outbox.conftest import calls, outbox_config, rows, uid


async def test_unsubscribe_event_cancels_pending_pushes(db_url: str, fake: FakeWeChatServer) -> None:
    cfg = outbox_config(db_url, fake, bot__fallback_flow="help")
    me, other = uid(500), uid(501)
    async with chat_session(cfg) as chat:
        db, now = chat.runtime.db, chat.clock.now()
        assert await chat.event(me, "subscribe")
        await chat.event(other, "subscribe")
        async with db.session() as s:
            await enqueue(s, [Push(openid=me, purpose="notice", key="later", text="明天的通知",
                                   due_at=now + timedelta(hours=1)),
                              Push(openid=other, purpose="notice", key="later", text="明天的通知",
                                   due_at=now + timedelta(hours=1))], now)
        assert await chat.event(me, "unsubscribe") is None
        mine = [r for r in await rows(db) if r.openid == me]
        assert [(r.status, r.last_error) for r in mine] == [("cancelled", "user unsubscribed")]
        sender = build_sender(cfg, db, chat.clock)
        try:
            report = await sender.deliver_due(now + timedelta(hours=2))
        finally:
            await sender.close()
        assert report.sent == 1
        sent_to = [c["body"]["touser"] for c in calls(fake, "/cgi-bin/message/template/send")]
        sent_to += [c["body"]["touser"] for c in calls(fake, "/cgi-bin/message/custom/send")]
        assert sent_to == [other]
        # Pushes queued after the unfollow (e.g. a call-up fan-out) are cancelled when due, never sent.
        async with db.session() as s:
            await enqueue(s, Push(openid=me, purpose="callup", key="c1", text="集合"), now)
        sender = build_sender(cfg, db, chat.clock)
        try:
            report = await sender.deliver_due(now + timedelta(hours=2))
        finally:
            await sender.close()
        assert report.cancelled == 1 and report.sent == 0
        assert len(fake.state.calls) == len(calls(fake, "/cgi-bin/stable_token")) + 1
