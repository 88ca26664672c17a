"""Conversation scripts of job alerts (tests/jobs/scripts/*.yaml): real signed, encrypted XML to the
in-process bot, on SQLite and PostgreSQL, with the sample postings imported (ids 1-17 in file order)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.clock import SystemClock
from storage.db import Database
from tests.conftest import make_config
from tests.helpers import run_chat_script
from tests.jobs.util import SAMPLE, import_file

SCRIPTS = sorted((Path(__file__).parent / "scripts").glob("*.yaml"))


async def seed_postings(db_url: str) -> None:
    cfg = make_config(db_url)
    db = Database(db_url)
    try:
        await import_file(db, cfg, SAMPLE, SystemClock().now())
    finally:
        await db.close()


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
async def test_script(db_url: str, script: Path) -> None:
    await seed_postings(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    assert await run_chat_script(cfg, script) > 0
