"""Conversation scripts of the memorial (tests/memorial/scripts/*.yaml): real signed, encrypted XML to the
in-process bot, on SQLite and PostgreSQL, with the sample roll imported (ids 1-12 in file order:
1 张建国, 2 李秀英, 3 王大山, 4 黄建军, 5 张卫国, 6 张志刚, 7 张红梅, 8 张国庆, 9 张海, 10 单立新,
11 and 12 无名烈士)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_config
from tests.helpers import run_chat_script
from tests.memorial.conftest import seed_roll

SCRIPTS = sorted((Path(__file__).parent / "scripts").glob("*.yaml"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
async def test_script(db_url: str, script: Path) -> None:
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    assert await run_chat_script(cfg, script) > 0
