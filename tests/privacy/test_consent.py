"""Notice and consent: shown before 我的信息 asks anything and before binding; the decision is recorded with
the injected clock's time, the purpose and the notice's version; declining keeps everything else usable;
a new notice version asks again. The notice is YAML the bureau edits, checked with file, line and hint."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.yamlfile import YamlFileError
from flows.privacy.notice import load_notice, parse
from storage.models import User
from storage.privacy import Consent
from tests.conftest import ROOT, make_config
from tests.helpers import chat_session
from tests.privacy.conftest import NAME, PERSON, PHONE, T0, TEAM, TEAM_CODE, approve_binding, say, seed_team

NOTICE = ROOT / "data" / "privacy" / "notice.yaml"


async def _consents(chat: object) -> list[Consent]:
    async with chat.runtime.db.session() as s:  # type: ignore[attr-defined]
        return list((await s.execute(select(Consent).order_by(Consent.id))).scalars())


async def test_consent_is_recorded_with_time_purpose_and_version(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        r = await say(chat, "我的信息")
        assert "个人信息保护提示" in r and "收集什么" in r and "1. 同意" in r and "/privacy" in r
        assert await _consents(chat) == []
        chat.clock.advance(minutes=3)
        assert "请输入您的姓名" in await say(chat, "好的")  # own words work too
        (c,) = await _consents(chat)
        assert (c.openid, c.scope, c.decision, c.version, c.at, c.via) == (
            PERSON, "profile", "accepted", "2026-1", T0 + timedelta(minutes=3), "chat")
        await say(chat, NAME)
        await say(chat, PHONE)
        # asked once: editing later goes straight to the question
        await say(chat, "取消")
        r = await say(chat, "修改手机号")
        assert "需要修改请回复数字" in r
        assert "请输入您的手机号" in await say(chat, "2")
        assert len(await _consents(chat)) == 1


async def test_declining_records_it_and_leaves_the_rest_usable(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        await say(chat, "我的信息")
        r = await say(chat, "2")
        assert "不登记也没关系" in r and "请输入" not in r
        (c,) = await _consents(chat)
        assert c.decision == "declined" and c.at == T0
        async with chat.runtime.db.session() as s:
            u = await s.get(User, PERSON)
            assert u is not None and (u.name, u.phone) == (None, None)
        # what needs no personal data still works
        assert "您可以回复数字办理" in await say(chat, "帮助")
        assert "岗位" in await say(chat, "找工作")
        await say(chat, "取消")
        assert "请直接输入" in await say(chat, "人工")
        await say(chat, "取消")
        # and the notice comes back when they try again
        r = await say(chat, "我的信息")
        assert "个人信息保护提示" in r
        assert "请回复 1 同意" in await say(chat, "张")  # a name typed before agreeing is not taken
        async with chat.runtime.db.session() as s:
            assert (await s.get(User, PERSON)).name is None  # type: ignore[union-attr]


async def test_a_new_notice_version_asks_again(db_url: str, tmp_path: Path) -> None:
    changed = tmp_path / "notice.yaml"
    changed.write_text(NOTICE.read_text(encoding="utf-8").replace('version: "2026-1"', 'version: "2026-2"'),
                       encoding="utf-8")
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        await say(chat, "我的信息")
        await say(chat, "1")
        await say(chat, NAME)
        await say(chat, "取消")
        cfg.privacy.notice = str(changed)  # the bureau edits the notice (no restart needed)
        r = await say(chat, "修改信息")
        assert "需要修改请回复数字" in r
        r = await say(chat, "1")
        assert "个人信息保护提示" in r and "请输入您的姓名" not in r
        assert "请输入您的姓名" in await say(chat, "同意")
        versions = [(c.version, c.decision) for c in await _consents(chat)]
        assert versions == [("2026-1", "accepted"), ("2026-2", "accepted")]


async def test_binding_asks_for_consent_before_the_phone(db_url: str) -> None:
    await seed_team(db_url, T0)
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        r = (await chat.event(PERSON, "SCAN", "team:1")) or ""
        assert f"您正在加入“{TEAM}”" in r and "绑定应急队伍前" in r and "请输入您在队伍名册上登记的手机号" not in r
        r = await say(chat, "2")
        assert "不登记也没关系" in r
        assert [c.scope + c.decision for c in await _consents(chat)] == ["teamdeclined"]
        r = await say(chat, f"绑定 {TEAM_CODE}")
        assert "绑定应急队伍前" in r
        assert "手机号" in await say(chat, "1")
        assert "已收到您的申请" in await say(chat, PHONE)
        await approve_binding(chat)
        # the profile's consent is its own purpose: 我的信息 still shows the notice once
        r = await say(chat, "修改信息")
        assert "需要修改请回复数字" in r  # binding filled name and phone from the roster
        assert "个人信息保护提示" in await say(chat, "3")


def _doc(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "notice.yaml"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.parametrize(("text", "message"), [
    ('version: "1"\ntitle: t\nshort: s\nsections: []\ncolour: red\n', "notice.yaml:5: unknown key 'colour'"),
    ('version: "1"\ntitle: t\nshort: "{nope}"\nsections: [{title: a, text: b}]\n', "unknown placeholder {nope}"),
    ('version: "1"\ntitle: t\nshort: s\nsections:\n  - title: a\n', "notice.yaml:5: each section needs a title and a text"),
    ('title: t\nshort: s\nsections: [{title: a, text: b}]\n', "'version' is missing"),
    ('version: "1"\ntitle: t\nshort: "' + "很长" * 300 + '"\nsections: [{title: a, text: b}]\n', "longer than 400"),
    ('version: "1"\ntitle: t\n  short: s\n', "YAML syntax error"),
])
def test_notice_typos_name_file_line_and_hint(tmp_path: Path, text: str, message: str) -> None:
    from bot.yamlfile import load_yaml

    p = _doc(tmp_path, text)
    with pytest.raises(YamlFileError) as e:
        parse(p, load_yaml(p), {"unfollow_erase_days": "30"})
    assert message in str(e.value) and str(p) in str(e.value)


async def test_a_broken_notice_stops_the_start_not_a_turn(db_url: str, tmp_path: Path) -> None:
    from bot.app import build_runtime

    cfg = make_config(db_url, bot__fallback_flow="help", privacy__notice=str(_doc(tmp_path, "version: [\n")))
    with pytest.raises(YamlFileError, match=r"notice\.yaml"):
        await build_runtime(cfg)


def test_the_shipped_notice_renders_the_configured_numbers(db_url: str) -> None:
    cfg = make_config(db_url, privacy__unfollow_erase_days="45")
    notice = load_notice(cfg)
    assert "45天" in notice.chat("profile") and "登记“我的信息”前" in notice.chat("profile")
    assert "{" not in " ".join(t + x for t, x in notice.page_sections())
