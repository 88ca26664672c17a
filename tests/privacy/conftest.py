"""Helpers for the privacy tests: a scripted person who uses every feature, and searches of the whole
database (every column of every table) and of the raw SQLite file for their identity."""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bot.scheduler import run_tick
from flows.api import ticks
from flows.callup.roster import RosterRow, import_roster
from flows.callup.service import CallupSpec, create_callup
from storage.base import Base
from storage.callup import CallUpAnswer
from storage.db import Database
from storage.models import import_all
from storage.outbox import Push, enqueue
from storage.qa import record_gap

#: The scripted person: a name and phone that appear nowhere in the sample data.
PERSON = "oPrivacyTestPerson_0000000000001"
NAME = "欧阳振华"
PHONE = "13687654321"
#: Another member of the same team (must keep everything).
OTHER = "oPrivacyOtherMember_000000000002"
STAFF = "staff_demo"  # bot.staff_openids in config.example.yaml
TEAM = "城关镇应急救援队"
T0 = datetime(2026, 7, 1, 2, 0, 0)  # 10:00 in Asia/Shanghai
TEAM_CODE = "246810"


async def seed_team(db_url: str, now: datetime) -> None:
    """A team whose roster (entered by staff) lists the person, unbound, and another member, bound."""
    db = Database(db_url)
    try:
        async with db.session() as s:
            await import_roster(s, [
                RosterRow(line=2, team=TEAM, name=NAME, phone=PHONE, skills=["驾驶"], township="城关镇", openid=None),
                RosterRow(line=3, team=TEAM, name="队员乙", phone="13600000002", skills=["医护"], township="城关镇",
                          openid=OTHER),
            ], now)
        async with db.session() as s:
            from storage.callup import Team

            team = (await s.execute(select(Team).where(Team.name == TEAM))).scalar_one()
            team.code = TEAM_CODE
    finally:
        await db.close()


async def approve_binding(chat: Any) -> None:
    """Staff approve the person's pending team binding (no SMS in the test config: a binding waits for a
    leader or staff to phone the member, flows/callup/binding.py), as `vetbot teams approve` does."""
    from flows.callup import binding
    from storage.callup import BindRequest

    async with chat.runtime.db.session() as s:
        req = (await s.execute(select(BindRequest).where(BindRequest.status == "pending",
                                                         BindRequest.member_id.is_not(None)))).scalar_one()
        d = await binding.decide(s, chat.runtime.services, req.id, True, chat.clock.now(), by=STAFF,
                                 allowed_teams=None)
        assert d.done, d.reply


def _forms(needle: str) -> set[str]:
    """A needle as it may be stored: as is, and JSON-escaped (\\uXXXX) in case a writer used ensure_ascii."""
    return {needle, json.dumps(needle)[1:-1]}


@dataclass
class Hit:
    table: str
    column: str
    row: dict[str, Any]
    needle: str


async def search_database(db: Database, needles: list[str]) -> list[Hit]:
    """Every (table, column, row) of every table in the schema whose value contains a needle (values
    stringified; JSON both as stored and with non-ASCII escaped)."""
    import_all()
    hits: list[Hit] = []
    async with db.session() as s:
        for name, table in sorted(Base.metadata.tables.items()):
            rows = (await s.execute(select(table))).mappings().all()
            for row in rows:
                for col, value in row.items():
                    if value is None:
                        continue
                    texts = {str(value), json.dumps(value, ensure_ascii=False, default=str),
                             json.dumps(value, ensure_ascii=True, default=str)}
                    for n in needles:
                        if any(f in t for f in _forms(n) for t in texts):
                            hits.append(Hit(name, col, dict(row), n))
    return hits


def sqlite_path(db_url: str) -> Path | None:
    return Path(db_url.split("///", 1)[1]) if db_url.startswith("sqlite") else None


def raw_hits(path: Path, needles: list[str]) -> dict[str, list[str]]:
    """Needles found in the raw bytes of the SQLite file and its WAL / shared-memory files (UTF-8,
    UTF-16 and JSON-escaped)."""
    out: dict[str, list[str]] = {}
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if not p.exists():
            continue
        data = p.read_bytes()
        for n in needles:
            forms = {n.encode(), n.encode("utf-16-le"), json.dumps(n).encode()}
            if any(f in data for f in forms):
                out.setdefault(p.name, []).append(n)
    return out


def copy_without_row(path: Path, copy: Path, table: str, row_id: int) -> Path:
    """A copy of the SQLite file (with its WAL) without one row, rebuilt (VACUUM) so no trace of it stays."""
    shutil.copy(path, copy)
    if Path(f"{path}-wal").exists():
        shutil.copy(f"{path}-wal", f"{copy}-wal")
    con = sqlite3.connect(copy)
    try:
        con.execute("PRAGMA secure_delete = ON")
        con.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,))
        con.commit()
        con.execute("VACUUM")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return copy


async def say(chat: Any, text: str, *, who: str = PERSON) -> str:
    """Send ``text`` as ``who``; the reply ("" for none)."""
    return (await chat.send(who, text)) or ""


async def tick(chat: Any, name: str) -> None:
    """Run the scheduled job ``name`` now, on the chat's injected clock."""
    (t,) = [t for t in ticks() if t.name == name]
    await run_tick(t, chat.runtime.db, chat.runtime.services)


async def use_everything(chat: Any) -> int:
    """The scripted person uses every feature; returns the id of the call-up they answered."""
    assert "欢迎" in ((await chat.event(STAFF, "subscribe")) or "")
    assert "欢迎" in ((await chat.event(OTHER, "subscribe")) or "")
    # 我的信息: the notice first, then the questions
    r = await say(chat, "我的信息")
    assert "个人信息保护提示" in r and "请输入您的姓名" not in r
    assert "请输入您的姓名" in await say(chat, "1")
    assert "手机号" in await say(chat, NAME)
    assert "乡镇" in await say(chat, PHONE)
    assert "身份" in await say(chat, "城关镇")
    assert "已保存" in await say(chat, "1")
    # 绑定 a team: asked again, for that purpose
    r = await say(chat, f"绑定 {TEAM_CODE}")
    assert "绑定应急队伍前" in r and "个人信息保护提示" in r
    assert "手机号" in await say(chat, "同意")
    assert "已收到您的申请" in await say(chat, PHONE)
    await approve_binding(chat)
    # 岗位订阅
    for text in ("订阅岗位", "1", "保安", "1", "1", "1", "1"):
        await say(chat, text)
    assert "订阅成功" in await say(chat, "1")
    await say(chat, "取消")
    # tribute, a 寄语 naming themselves, reminders
    assert "您是第 1 位" in await say(chat, "为王大山烈士献花")
    assert "写寄语" in await say(chat, "为王大山烈士写寄语")
    assert "审核" in await say(chat, f"您为祖国献出了生命，我们永远怀念您。{NAME}敬上")
    assert "已为您开启" in await say(chat, "提醒我")
    await say(chat, "取消")
    # a call-up, answered
    rt = chat.runtime
    async with rt.db.session() as s:
        c = await create_callup(s, rt.services, CallupSpec(kind="防汛", title="城南河段防汛", place="城南水文站",
                                                          assemble_at=T0 + timedelta(hours=2), needed=2,
                                                          created_by=STAFF), T0)
        callup_id = c.id
    assert "已记录：到" in await say(chat, "1")
    async with rt.db.session() as s:
        answers = (await s.execute(select(func.count()).select_from(CallUpAnswer))).scalar_one()
    assert answers == 1
    # 人工: a ticket with the phone in it
    assert "请直接输入" in await say(chat, "人工")
    assert "已收到您的留言" in await say(chat, f"我是{NAME}，电话{PHONE}，麻烦回电")
    assert await say(chat, f"再说一遍，我的电话是{PHONE}") == ""  # into the ticket's thread, silently
    assert "已结束人工服务" in await say(chat, "结束人工")  # the bot listens again (我的数据, 注销 …)
    # the other member answers too and stays untouched
    await say(chat, "2", who=OTHER)
    # other people's texts that mention the person: a staff push and an unanswered question
    async with rt.db.session() as s:
        await enqueue(s, Push(openid=STAFF, purpose="notice", key="t:mention",
                              text=f"请联系{NAME}（{PHONE}），openid {PERSON}", data={"phone": int(PHONE)}), T0)
        await record_gap(s, f"{NAME}问{PHONE}", f"我叫{NAME}，手机{PHONE}能收到通知吗", "unknown", None, T0)
    return callup_id


