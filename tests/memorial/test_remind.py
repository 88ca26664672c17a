"""提醒我 / 取消提醒 end to end (issue 14 item 14): the confirmation names the real coming days and the hour,
and the campaign tick then reminds exactly the people who asked and did not take it back."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import select

from bot.scheduler import run_tick
from flows.api import ticks
from flows.memorial.remind import day_text, hour_text
from storage.memorial import ensure_campaign
from storage.models import OutboxMessage
from tests.conftest import make_config
from tests.helpers import chat_session


async def _remind_tick(chat) -> None:  # type: ignore[no-untyped-def]
    (t,) = [t for t in ticks() if t.name == "memorial_campaigns"]
    await run_tick(t, chat.runtime.db, chat.runtime.services)


async def test_confirmation_names_the_days_and_the_tick_reminds_who_asked(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(datetime(2026, 3, 20, 2, 0))  # 10:00 in Beijing
        async with chat.runtime.db.session() as s:
            await ensure_campaign(s, code="july1-2026", title="七一·缅怀先烈", kind="custom", day=date(2026, 7, 1),
                                  starts_on=date(2026, 7, 1), ends_on=date(2026, 7, 1), now=chat.clock.now())
        reply = await chat.send("u_stays", "清明节提醒我")
        confirmation, offer = (reply or "").split("\n\n")
        assert confirmation == ("好的，已为您开启祭扫提醒。\n接下来会在这些日子提醒您：\n· 4月5日 清明节\n· 7月1日 七一·缅怀先烈\n"
                                "当天上午8点以后，我们会给您发一条消息，请您来云端祭英烈（献花、寄语）。\n"
                                "不想要了，随时回复“取消提醒”。")
        assert "/notices/" in offer  # the 订阅通知 consent page (flows/notices.py), after the confirmation
        await chat.send("u_leaves", "记得提醒我")
        assert "已关闭祭扫提醒" in (await chat.send("u_leaves", "不要提醒了") or "")
        chat.clock.set(datetime(2026, 4, 5, 0, 30))  # Qingming, 08:30 in Beijing
        await _remind_tick(chat)
        async with chat.runtime.db.session() as s:
            rows = (await s.execute(select(OutboxMessage.openid, OutboxMessage.payload)
                                    .where(OutboxMessage.purpose == "memorial_reminder"))).all()
        assert [o for o, _ in rows] == ["u_stays"]
        assert "清明" in rows[0][1]["text"] and "/m/?t=" in rows[0][1]["url"]
        # On the day, after the reminder went out, the next days are the ones listed.
        reply = await chat.send("u_stays", "提醒我")
        assert reply is not None and "4月5日" not in reply and "· 7月1日 七一·缅怀先烈\n· 9月30日 烈士纪念日" in reply


def test_hour_and_day_texts() -> None:
    assert [hour_text(h) for h in (5, 8, 12, 15, 20)] == ["凌晨5点", "上午8点", "中午12点", "下午3点", "晚上8点"]
    assert day_text(date(2027, 4, 5), date(2026, 12, 4)) == "2027年4月5日"
    assert day_text(date(2026, 12, 30), date(2026, 12, 4)) == "12月30日"
