"""In chat: 删除我的信息 reaches 注销 (not the profile's edit menu); 注销 needs a clear 确认 and a no keeps
everything; the 个人信息保护 menu item; LOCATION reports and location messages are not stored."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.sim import event_xml
from storage.models import Ticket, User
from storage.privacy import Erasure
from tests.conftest import make_config
from tests.helpers import chat_session
from tests.privacy.conftest import NAME, PERSON, PHONE, T0, say, search_database


async def _register(chat: object) -> None:
    for text in ("我的信息", "1", NAME, PHONE, "城关镇", "1"):
        await say(chat, text)


async def _erasures(chat: object) -> int:
    async with chat.runtime.db.session() as s:  # type: ignore[attr-defined]
        return int((await s.execute(select(func.count()).select_from(Erasure))).scalar_one())


async def test_delete_my_info_is_not_the_profile_edit_menu(db_url: str) -> None:
    """Issue 18: 删除我的信息 showed the profile's 修改 menu; it must offer erasure."""
    async with chat_session(make_config(db_url, bot__fallback_flow="help")) as chat:
        chat.clock.set(T0)
        await _register(chat)
        for text in ("删除我的信息", "把我的资料删了", "注销", "撤回同意", "不想用了，把我的信息都删了"):
            r = await say(chat, text)
            assert "注销将删除" in r and "需要修改请回复数字" not in r, (text, r)
            await say(chat, "取消")
        assert "需要修改请回复数字" in await say(chat, "我的信息")  # 我的信息 itself is unchanged


async def test_erasure_needs_a_clear_yes(db_url: str) -> None:
    async with chat_session(make_config(db_url, bot__fallback_flow="help")) as chat:
        chat.clock.set(T0)
        await _register(chat)
        r = await say(chat, "注销")
        assert "我的信息" in r and "同意记录" in r and "确认删除请回复“确认”" in r
        assert "确认删除请回复" in await say(chat, "嗯")  # a bare 嗯 erases nothing
        assert "确认删除请回复" in await say(chat, "好的")  # nor an everyday yes (it cannot be undone)
        assert "没有删除" in await say(chat, "不删了")
        await say(chat, "删除我的信息")
        assert "已退出“注销" in await say(chat, "取消")  # the global way out works here too
        await say(chat, "注销")
        assert "确认删除请回复" in await say(chat, "今天天气不错")
        assert "没有删除" in await say(chat, "不用了")
        assert await _erasures(chat) == 0
        async with chat.runtime.db.session() as s:
            assert (await s.get(User, PERSON)).name == NAME  # type: ignore[union-attr]
        await say(chat, "注销")
        r = await say(chat, "确认删除")
        assert "已删除您在本服务号的个人信息" in r
        assert await _erasures(chat) == 1
        assert await search_database(chat.runtime.db, [PERSON, NAME, PHONE]) == []
        # the person can go on using the bot afresh; registering asks for consent again
        assert "个人信息保护提示" in await say(chat, "我的信息")


async def test_the_menu_item_shows_the_notice_and_the_two_rights(db_url: str) -> None:
    async with chat_session(make_config(db_url, bot__fallback_flow="help")) as chat:
        chat.clock.set(T0)
        menu = await say(chat, "帮助")
        assert "个人信息保护：我的数据、注销" in menu
        r = await say(chat, "隐私")
        assert "个人信息保护提示" in r and "1. 查看我保存在这里的数据" in r and "2. 注销" in r and "/privacy" in r
        r = await say(chat, "1")
        assert "【我的数据】" in r and "/privacy/mine?t=" in r
        await say(chat, "个人信息保护")
        assert "注销将删除" in await say(chat, "2")


async def test_location_reports_are_not_stored(db_url: str) -> None:
    """Regression: every LOCATION report (行踪轨迹, sensitive) was written to users.latitude/longitude."""
    async with chat_session(make_config(db_url, bot__fallback_flow="help")) as chat:
        chat.clock.set(T0)
        await say(chat, "帮助")
        assert (await chat.send_xml(event_xml(PERSON, "LOCATION", extra={
            "Latitude": "30.7361", "Longitude": "107.2089", "Precision": "65.0"}))) is None
        loc = (f"<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[{PERSON}]]></FromUserName>"
               "<CreateTime>1700000001</CreateTime><MsgType><![CDATA[location]]></MsgType>"
               "<Location_X>30.7362</Location_X><Location_Y>107.2088</Location_Y><Scale>15</Scale>"
               "<Label><![CDATA[某县城关镇某街]]></Label><MsgId>9000000001</MsgId></xml>")
        reply = (await chat.send_xml(loc)) or ""
        hits = await search_database(chat.runtime.db, ["30.736", "107.208", "某县城关镇某街"])
        assert hits == [], [(h.table, h.column) for h in hits]
        assert "不保存位置信息" in reply
        assert not {"latitude", "longitude", "location_at"} & set(User.__table__.c.keys())


async def test_my_data_of_someone_who_only_wrote_once(db_url: str) -> None:
    async with chat_session(make_config(db_url, bot__fallback_flow="help")) as chat:
        chat.clock.set(T0)
        await say(chat, "人工")
        await say(chat, "请问优待证在哪里办")
        await say(chat, "结束人工")  # while 人工 is open, messages go to staff, 我的数据 included
        r = await say(chat, "我的数据")
        assert "· 我的信息：姓名 未填" in r and "· 人工留言：1 条（待回复 0）" in r
        async with chat.runtime.db.session() as s:
            assert (await s.execute(select(func.count()).select_from(Ticket))).scalar_one() == 1
