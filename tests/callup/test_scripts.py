"""Conversation scripts of the call-up feature (tests/callup/scripts/*.yaml), through real signed,
encrypted XML against the in-process bot, on SQLite and PostgreSQL, with a seeded roster:
城关镇一队 / 城关镇二队 / 河东乡队 (codes 100001-100003), 6 bound members each (fake openids 0-17),
plus two unbound members of 河东乡队 (新队员甲 13700000001, 新队员乙 13700000002)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.callup.roster import RosterRow
from storage.db import Database
from tests.callup.conftest import TEAMS, roster_rows, seed
from tests.conftest import make_config
from tests.helpers import run_chat_script

SCRIPTS = sorted((Path(__file__).parent / "scripts").glob("*.yaml"))


def script_roster() -> list[RosterRow]:
    rows = roster_rows(TEAMS, 6)
    rows += [RosterRow(line=100, team="河东乡队", name="新队员甲", phone="13700000001", skills=["驾驶"],
                       township="河东乡", openid=None),
             RosterRow(line=101, team="河东乡队", name="新队员乙", phone="13700000002", skills=[],
                       township="河东乡", openid=None)]
    return rows


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
async def test_script(db_url: str, script: Path) -> None:
    db = Database(db_url)
    try:
        await seed(db, script_roster())
    finally:
        await db.close()
    cfg = make_config(db_url, bot__fallback_flow="help")
    assert await run_chat_script(cfg, script) > 0
