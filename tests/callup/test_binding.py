"""Binding a WeChat user to a roster member (issue 14.5, "binding by guessing"), through signed XML
against the in-process bot, on SQLite and PostgreSQL: a team code and a roster phone alone no longer
bind; attempts are rate-limited per WeChat user and per team in the database (a restart does not reset
them); listed and unlisted phones get the same replies; with SMS set up the code goes to the roster
phone through the outbox's SMS path only, and the binding happens when it comes back; without SMS
staff or the team leader approve (chat and CLI)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, update

from bot.chat import ChatSession
from bot.outbox import build_sender
from flows.callup.roster import RosterRow
from storage.callup import BindAttempt, Member, Team
from storage.db import Database
from tests.callup.conftest import TEAMS, roster_rows, seed
from tests.callup.test_cli import vetbot
from tests.conftest import make_config
from tests.helpers import chat_session
from tests.outbox.conftest import SMS_SECRET, FakeSmsGateway

ATTACKER = "oAttacker_0000000000000001"
MEMBER_PHONE = "13900000003"  # 队员0003 of 城关镇一队 (code 100001), bound to fake openid 3
NEW_PHONE = "13700000001"     # 新队员甲 of 河东乡队 (code 100003), not bound


def _roster() -> list[RosterRow]:
    rows = roster_rows(TEAMS, 6)
    rows += [RosterRow(line=100, team="河东乡队", name="新队员甲", phone=NEW_PHONE, skills=["驾驶"],
                       township="河东乡", openid=None)]
    return rows


@pytest.fixture(autouse=True)
def _consent_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everyone here has already agreed to the 个人信息保护提示 for binding: these tests are about what
    an attacker can learn or do after that step (the consent step itself: tests/privacy/test_consent.py)."""

    async def given(ctx: object, scope: str) -> bool:
        return True

    monkeypatch.setattr("flows.privacy.consent.has_consent", given)


@pytest.fixture
async def seeded(db_url: str) -> str:
    db = Database(db_url)
    try:
        await seed(db, _roster())
    finally:
        await db.close()
    return db_url


@pytest.fixture
async def sms() -> AsyncIterator[FakeSmsGateway]:
    gw = await FakeSmsGateway().start()
    yield gw
    await gw.stop()


async def _member(chat: ChatSession, phone: str) -> Member:
    async with chat.runtime.db.session() as s:
        return (await s.execute(select(Member).where(Member.phone == phone))).scalar_one()


def _alike(reply: str | None) -> str:
    return re.sub(r"1[3-9]\d\*{4}\d{4}", "<phone>", reply or "")


async def test_team_code_and_a_roster_phone_alone_no_longer_bind_regression_binding_by_guessing(
        seeded: str) -> None:
    # The hole: any team code + a phone on the roster bound the sender as that member at once, and the
    # reply said whether the phone was on the roster ("名册里没有这个手机号" / "已被另一个微信绑定").
    cfg = make_config(seeded, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        await chat.send(ATTACKER, "绑定 100001")
        reply = await chat.send(ATTACKER, MEMBER_PHONE)
        assert "绑定成功" not in (reply or "") and "已被另一个微信绑定" not in (reply or "")
        assert (await _member(chat, MEMBER_PHONE)).openid == "oFakeVetbotUser_000000000003"  # untouched
        await chat.send(ATTACKER, "绑定 100003")
        reply = await chat.send(ATTACKER, NEW_PHONE)
        assert "绑定成功" not in (reply or "") and "队长或工作人员" in (reply or "")
        assert (await _member(chat, NEW_PHONE)).openid is None
        assert "还没有绑定" in (await chat.send(ATTACKER, "我的队伍") or "")


async def test_listed_and_unlisted_phones_get_the_same_replies(seeded: str, sms: FakeSmsGateway) -> None:
    for sms_url in ("", sms.url):
        cfg = make_config(seeded, bot__fallback_flow="help", sms__webhook_url=sms_url, sms__hmac_secret=SMS_SECRET)
        async with chat_session(cfg) as chat:
            seen = []
            # listed; on no roster; listed, but in another team
            for i, phone in enumerate((NEW_PHONE, "13711112222", MEMBER_PHONE)):
                who = f"oAsker_{sms_url != ''}_{i:016d}"
                await chat.send(who, "绑定 100003")
                seen.append(_alike(await chat.send(who, phone)))
                if sms_url:
                    seen.append(_alike(await chat.send(who, "123456")))  # a wrong code, listed or not
                    chat.clock.advance(minutes=11)
                    seen.append(_alike(await chat.send(who, "654321")))  # expired, listed or not
                else:
                    seen.append(_alike(await chat.send(who, "绑定")))     # waiting, listed or not
            assert seen[:len(seen) // 3] * 3 == seen, seen
            assert "验证码" in seen[0] if sms_url else "队长或工作人员" in seen[0]


async def test_binding_attempts_are_limited_per_wechat_user_and_survive_a_restart(seeded: str) -> None:
    cfg = make_config(seeded, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        for code in range(100009, 100009 + cfg.callup.bind_max_attempts):  # guessing team codes
            reply = await chat.send(ATTACKER, f"绑定 {code}") or ""
            assert "没有找到这个队伍码" in reply or "没能理解" in reply  # (re-asked too often: the flow ends)
        reply = await chat.send(ATTACKER, "绑定 100001")
        assert "绑定尝试次数过多" in (reply or "") and re.search(r"请于 \d\d:\d\d 后再试", reply or "")
        assert "手机号" not in (reply or "")  # the right code does not get through either
    async with chat_session(cfg) as chat:  # a restart (or another process) does not reset the count
        assert "绑定尝试次数过多" in (await chat.send(ATTACKER, "绑定 100001") or "")
        assert "手机号" in (await chat.send("oSomeoneElse_00000000000001", "绑定 100001") or "")
        chat.clock.advance(minutes=cfg.callup.bind_window_min + 1)
        assert "手机号" in (await chat.send(ATTACKER, "绑定 100001") or "")


async def test_binding_attempts_are_limited_per_team(seeded: str) -> None:
    cfg = make_config(seeded, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        async with chat.runtime.db.session() as s:
            team = (await s.execute(select(Team.id).where(Team.code == "100001"))).scalar_one()
            now = chat.clock.now()
            s.add_all([BindAttempt(openid=f"oBot_{i:020d}", team_id=team, what="phone", at=now)
                       for i in range(cfg.callup.bind_team_max_attempts)])
        await chat.send("oHonest_000000000000000001", "绑定 100001")
        reply = await chat.send("oHonest_000000000000000001", "13900000004")
        assert "这个队伍近期的绑定尝试过多" in (reply or "") and "后再试" in (reply or "")
        await chat.send("oHonest_000000000000000002", "绑定 100003")  # another team is not affected
        assert "已收到您的申请" in (await chat.send("oHonest_000000000000000002", NEW_PHONE) or "")


async def test_sms_code_goes_to_the_roster_phone_only_and_binds_when_it_comes_back(
        seeded: str, sms: FakeSmsGateway) -> None:
    cfg = make_config(seeded, bot__fallback_flow="help", sms__webhook_url=sms.url, sms__hmac_secret=SMS_SECRET)
    me = "oNewMember_000000000000001"
    async with chat_session(cfg) as chat:
        sender = build_sender(cfg, chat.runtime.db, chat.clock, worker="bind-test")
        try:
            await chat.send(me, "绑定 100003")
            reply = await chat.send(me, NEW_PHONE)
            assert "验证码短信已发送到 137****0001" in (reply or "")
            await sender.deliver_due()
            assert [b["phone"] for b in sms.accepted] == [NEW_PHONE]
            code = re.search(r"验证码是 (\d{6})", sms.accepted[0]["text"]).group(1)  # type: ignore[union-attr]
            # The user just wrote (their kefu window is open), but the code must reach the phone, not them.
            (row,) = await chat.pushes(me)
            assert row.purpose == "bind_code" and row.channel == "sms" and row.status == "sent"
            wrong = "000000" if code != "000000" else "111111"
            assert "验证码不对" in (await chat.send(me, wrong) or "")
            assert (await _member(chat, NEW_PHONE)).openid is None
            assert "请稍等 1 分钟" in (await chat.send(me, "重发") or "")
            chat.clock.advance(seconds=61)
            assert "已重新发送" in (await chat.send(me, "重发") or "")
            await sender.deliver_due()
            assert len(sms.accepted) == 2
            assert "验证码不对" in (await chat.send(me, code) or "")  # the first code is void now
            code = re.search(r"验证码是 (\d{6})", sms.accepted[1]["text"]).group(1)  # type: ignore[union-attr]
            reply = await chat.send(me, code)
            assert "绑定成功" in (reply or "") and "新队员甲" in (reply or "")
            assert (await _member(chat, NEW_PHONE)).openid == me
            assert "新队员甲" in (await chat.send(me, "我的队伍") or "")
            # An unlisted phone: the same reply, and no SMS to anyone.
            await chat.send("oStranger_0000000000000001", "绑定 100003")
            await chat.send("oStranger_0000000000000001", "13711112222")
            await sender.deliver_due()
            assert len(sms.accepted) == 2
        finally:
            await sender.close()


async def test_a_member_bound_elsewhere_moves_only_with_the_sms_code_and_the_old_wechat_is_told(
        seeded: str, sms: FakeSmsGateway) -> None:
    cfg = make_config(seeded, bot__fallback_flow="help", sms__webhook_url=sms.url, sms__hmac_secret=SMS_SECRET)
    new_phone_owner = "oNewPhone_0000000000000001"
    async with chat_session(cfg) as chat:
        sender = build_sender(cfg, chat.runtime.db, chat.clock, worker="bind-move")
        try:
            await chat.send(new_phone_owner, "绑定 100001")
            await chat.send(new_phone_owner, MEMBER_PHONE)
            await sender.deliver_due()
            code = re.search(r"验证码是 (\d{6})", sms.accepted[-1]["text"]).group(1)  # type: ignore[union-attr]
            assert sms.accepted[-1]["phone"] == MEMBER_PHONE
            assert "绑定成功" in (await chat.send(new_phone_owner, code) or "")
            assert (await _member(chat, MEMBER_PHONE)).openid == new_phone_owner
            told = [p for p in await chat.pushes("oFakeVetbotUser_000000000003") if "已转到另一个微信" in p.payload["text"]]
            assert len(told) == 1
        finally:
            await sender.close()


async def test_team_leader_approves_in_chat_and_staff_with_the_cli(seeded: str, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(seeded, bot__fallback_flow="help")
    leader = "oFakeVetbotUser_000000000012"  # 队员0012, first member of 河东乡队
    async with chat_session(cfg) as chat:
        async with chat.runtime.db.session() as s:
            await s.execute(update(Team).where(Team.code == "100003").values(leader="队员0012",
                                                                               leader_phone="13900000012"))
        assert "目前没有待审核" in (await chat.send(leader, "绑定审核") or "")
        await chat.send("oNewMember_000000000000009", "绑定 100003")
        await chat.send("oNewMember_000000000000009", NEW_PHONE)
        asked = [p for p in await chat.pushes(leader) if "绑定申请" in p.payload["text"]]
        assert len(asked) == 1 and "新队员甲" in asked[0].payload["text"]
        # A leader of another team sees nothing of it.
        other = "oFakeVetbotUser_000000000000"
        async with chat.runtime.db.session() as s:
            await s.execute(update(Team).where(Team.code == "100001").values(leader_phone="13900000000"))
        assert "目前没有待审核" in (await chat.send(other, "绑定审核") or "")
        assert "新队员甲" in (await chat.send(leader, "绑定审核") or "")
        # The leader is replaced while deciding: the decision is refused.
        assert "同意绑定" in (await chat.send(leader, "1") or "")
        async with chat.runtime.db.session() as s:
            await s.execute(update(Team).where(Team.code == "100003").values(leader_phone="13900000013"))
        assert "只有队长或工作人员" in (await chat.send(leader, "1") or "")
        assert (await _member(chat, NEW_PHONE)).openid is None
    # The CLI runs its own event loop: run it in a thread as the operator's terminal would.
    code, out, _ = await asyncio.to_thread(vetbot, capsys, monkeypatch, seeded, "teams", "requests", "--json")
    (req,) = json.loads(out)
    assert code == 0 and req["name"] == "新队员甲" and req["phone"] == NEW_PHONE
    code, out, _ = await asyncio.to_thread(vetbot, capsys, monkeypatch, seeded, "teams", "approve", str(req["id"]),
                                           "--by", "张干事")
    assert code == 0 and "已同意" in out
    code, _, err = await asyncio.to_thread(vetbot, capsys, monkeypatch, seeded, "teams", "approve", str(req["id"]))
    assert code == 2 and "已经处理过" in err
    db = Database(seeded)
    try:
        async with db.session() as s:
            m = (await s.execute(select(Member).where(Member.phone == NEW_PHONE))).scalar_one()
        assert m.openid == "oNewMember_000000000000009"
    finally:
        await db.close()


@pytest.mark.parametrize("scene", ["team:²", "team:" + "1" * 23, "team:１", "team:-1", "team:"])
async def test_qr_scene_that_is_not_a_team_number_never_raises(seeded: str, scene: str) -> None:
    # 'team:²' raised ValueError ('²'.isdigit() is True, int('²') fails) and 23 digits OverflowError
    # in the database driver; the user got 系统繁忙.
    cfg = make_config(seeded, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        for event, key in (("SCAN", scene), ("subscribe", f"qrscene_{scene}")):
            reply = await chat.event("oScanner_00000000000000001", event, key)
            assert "这个二维码对应的队伍不存在" in (reply or ""), (event, reply)
