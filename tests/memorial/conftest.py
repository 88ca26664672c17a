"""Memorial test fixtures: the sample roll (data/samples/martyrs_sample.csv) imported into a database."""

from __future__ import annotations

from datetime import datetime

from flows.memorial.roll import read_roll
from storage.db import Database
from storage.memorial import upsert_martyrs
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "samples" / "martyrs_sample.csv"


async def seed_roll(db_url: str) -> None:
    """Import the sample roll (12 records, ids 1-12 in file order) into ``db_url``."""
    roll = read_roll(SAMPLE)
    assert not roll.errors, roll.errors
    db = Database(db_url)
    try:
        async with db.session() as s:
            await upsert_martyrs(s, roll.rows, datetime(2026, 1, 1))
    finally:
        await db.close()
