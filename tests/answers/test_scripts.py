"""Conversation scripts of answers in people's own words (tests/answers/scripts/*.yaml), through real signed,
encrypted XML against the in-process bot, on SQLite and PostgreSQL.

The roster is the call-up scripts' one (城关镇一队 / 城关镇二队 / 河东乡队, 6 bound members each, fake openids
0-17) and the clock stands at 2026-12-05 10:00 Asia/Shanghai (a Saturday), so that dates in the scripts
(请假 三天 → 12月7日, 下周三 → 12月9日) are fixed. ``bot.townships`` comes from config.example.yaml."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from bot.chat import run_script
from storage.db import Database
from tests.callup.conftest import seed
from tests.callup.test_scripts import script_roster
from tests.conftest import make_config
from tests.helpers import _Null, chat_session

SCRIPTS = sorted((Path(__file__).parent / "scripts").glob("*.yaml"))
#: 2026-12-05 10:00 in Asia/Shanghai (naive UTC, as the bot keeps time).
START = datetime(2026, 12, 5, 2, 0, 0)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
async def test_script(db_url: str, script: Path) -> None:
    db = Database(db_url)
    try:
        await seed(db, script_roster(), now=START)
    finally:
        await db.close()
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(START)
        assert await run_script(chat, script, out=_Null()) > 0
