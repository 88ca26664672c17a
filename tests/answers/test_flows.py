"""Own-words answers end to end: what a loosely typed township becomes, and who a broadcast then reaches."""

from __future__ import annotations

from flows.broadcast import service as broadcasts
from tests.conftest import make_config
from tests.helpers import chat_session


async def test_broadcast_by_township_finds_people_who_typed_it_loosely(db_url: str) -> None:
    """`vetbot broadcast --township 城关镇` must reach the user who answered 我的信息 with 俺是城关的 (and the
    one who typed 成关 and confirmed it), not the one in 竹阳街道."""
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        for who, town, confirm in (("u_a", "俺是城关的", None), ("u_b", "成关", "是的"), ("u_c", "竹阳", None)):
            await chat.send(who, "我的信息")
            await chat.send(who, "同意")  # the 个人信息保护提示 comes first (issue 18)
            await chat.send(who, "王秀英")
            assert "乡镇" in (await chat.send(who, "13800001111") or "")
            reply = (await chat.send(who, town) or "")
            if confirm:
                assert "您是说 城关镇 吗" in reply
                reply = (await chat.send(who, confirm) or "")
            assert "请选择您的身份" in reply
            assert "已保存" in (await chat.send(who, "1") or "")
        db, now = chat.runtime.db, chat.clock.now()
        async with db.session() as s:
            for town, reached in (("城关镇", 2), ("竹阳街道", 1)):
                q = await broadcasts.queue(s, now, title="通知", text="明天开会",
                                           audience=broadcasts.Audience(township=town), dry_run=True)
                assert q.recipients == reached, town
