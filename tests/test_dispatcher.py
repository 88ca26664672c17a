"""The dispatcher through real signed XML: the conversation state a flow changes in place is saved and
返回 restores it as it was; a flow's roles are checked at every step, not only at its start."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from bot.cli import main
from flows.api import Context, Flow, flow
from storage.callup import CallUp
from storage.db import Database
from tests.callup.conftest import TEAMS, roster_rows, seed
from tests.conftest import ROOT, make_config
from tests.helpers import chat_session


@flow
class _Basket(Flow):
    """Collects items in a nested slot, changing it in place (ctx.slots["d"]["items"].append)."""

    name = "test_basket"
    title = "购物篮"

    async def start(self, ctx: Context) -> None:
        ctx.slots["d"] = {"items": []}
        await ctx.ask("add", "要放什么？")

    async def step(self, ctx: Context) -> None:
        items = ctx.slots["d"]["items"]
        if ctx.text == "完成":
            ctx.say("篮子里：" + "、".join(items))
            ctx.end()
            return
        items.append(ctx.text)
        await ctx.ask(f"add{len(items)}", "已有：" + "、".join(items))

    async def prompt(self, ctx: Context, step: str) -> None:
        ctx.say("已有：" + "、".join(ctx.slots["d"]["items"]))


async def test_back_restores_nested_slots_changed_in_place(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="test_basket")
    async with chat_session(cfg) as chat:
        assert "要放什么" in (await chat.send("u_basket", "开始") or "")
        assert (await chat.send("u_basket", "苹果")) == "已有：苹果"
        assert (await chat.send("u_basket", "香蕉")) == "已有：苹果、香蕉"
        # 返回 goes to the step before 香蕉 with the slots as they were then, not as changed since.
        assert (await chat.send("u_basket", "返回")) == "已有：苹果"
        assert (await chat.send("u_basket", "梨")) == "已有：苹果、梨"
        assert (await chat.send("u_basket", "完成")) == "篮子里：苹果、梨"


async def _vetbot(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> int:
    """Run the real CLI (in a thread: it runs its own event loop) against ``db_url``."""
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)

    def run() -> int:
        try:
            main([*args[:2], "-c", str(ROOT / "config.example.yaml"), *args[2:]])
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    return await asyncio.to_thread(run)


@pytest.mark.parametrize("removed_before", ["time", "drill"])
async def test_a_staff_flow_ends_when_the_role_is_removed_mid_wizard(db_url: str, removed_before: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 item 7: a staff member whose role was removed in the middle of 发起集结 finished it and
    notified every member. The role is checked again at every step (free text and numbered picks)."""
    db = Database(db_url)
    try:
        await seed(db, roster_rows(TEAMS, 2))
    finally:
        await db.close()
    me = "u_former_staff"
    cfg = make_config(db_url, bot__fallback_flow="help")
    answers = [("time", "30分钟后"), ("need", "3"), ("scope", "1"), ("drill", "2"), ("confirm", "1")]
    async with chat_session(cfg) as chat:
        await chat.send(me, "你好")  # the user's row exists once they wrote
        assert await _vetbot(monkeypatch, db_url, "users", "role", me, "staff") == 0
        assert "请选择类型" in (await chat.send(me, "发起集结") or "")
        await chat.send(me, "1")
        assert "集合时间" in (await chat.send(me, "城关镇防汛物资仓库") or "")
        replies = []
        for step, text in answers:
            if step == removed_before:
                assert await _vetbot(monkeypatch, db_url, "users", "role", me, "staff", "--remove") == 0
            replies.append((step, await chat.send(me, text) or ""))
        at = [s for s, _ in replies].index(removed_before)
        ended, later = replies[at][1], [r for _, r in replies[at + 1:]]
        assert "您已没有使用“发起集结”的权限" in ended and "本次操作已结束" in ended
        assert not any("已发起集结" in r or "请确认" in r for r in later), later
        async with chat.runtime.db.session() as s:
            assert (await s.execute(select(func.count()).select_from(CallUp))).scalar() == 0
        # (The later answers may have wandered into 政策问答 and its 人工 offer — an open 人工 hands every message
        # to staff — so leave whatever they reached first.)
        await chat.send(me, "取消")
        # A staff member who still has the role is not affected: 集结 can be started again after re-granting.
        assert await _vetbot(monkeypatch, db_url, "users", "role", me, "staff") == 0
        assert "请选择类型" in (await chat.send(me, "发起集结") or "")
