"""Conversation scripts (tests/scripts/*.yaml and tests/*/scripts/*.yaml) run against the in-process bot
through real signed, encrypted XML, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

import bot.ticks  # noqa: F401 - scripts may run the core ticks
from tests.conftest import ROOT, make_config
from tests.helpers import run_chat_script

SCRIPTS = sorted((ROOT / "tests").glob("scripts/*.yaml"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
async def test_script(db_url: str, script: Path) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    assert await run_chat_script(cfg, script) > 0
