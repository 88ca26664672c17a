"""Fixtures for the call-up tests: a seeded roster with fixed team codes, services on a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import pytest

from bot.clock import FakeClock
from bot.config import Config
from bot.fake_wechat import fake_openid
from flows.api import Services, load_all
from flows.callup.roster import RosterRow, import_roster
from storage.callup import Team
from storage.db import Database
from tests.conftest import make_config

T0 = datetime(2026, 7, 1, 12, 0, 0)  # 20:00 in Asia/Shanghai
SKILLS = ["驾驶", "医护", "救援"]


def roster_rows(teams: list[tuple[str, str]], per_team: int, *, bound: bool = True, skills: bool = True,
                phone_base: int = 13900000000, openid_base: int = 0) -> list[RosterRow]:
    """``per_team`` members for each (team, township); openids fake_openid(i) when ``bound``; skills
    rotate over 驾驶 / 医护 / 救援 (member 0 of each team has 驾驶 and 医护)."""
    rows = []
    n = 0
    for team, town in teams:
        for j in range(per_team):
            sk = ([SKILLS[j % 3]] + (["医护"] if j == 0 else [])) if skills else []
            rows.append(RosterRow(line=n + 2, team=team, name=f"队员{n:04d}", phone=str(phone_base + n),
                                  skills=list(dict.fromkeys(sk)), township=town,
                                  openid=fake_openid(openid_base + n) if bound else None))
            n += 1
    return rows


async def seed(db: Database, rows: list[RosterRow], now: datetime = T0) -> dict[str, int]:
    """Import ``rows``; give team i the code 10000i. Returns {team name: id}."""
    async with db.session() as s:
        await import_roster(s, rows, now)
    async with db.session() as s:
        from sqlalchemy import select

        teams = list((await s.execute(select(Team).order_by(Team.id))).scalars())
        for i, t in enumerate(teams, 1):
            t.code = f"{100000 + i}"
        return {t.name: t.id for t in teams}


TEAMS = [("城关镇一队", "城关镇"), ("城关镇二队", "城关镇"), ("河东乡队", "河东乡")]


@dataclass
class Env:
    db: Database
    config: Config
    clock: FakeClock
    services: Services
    teams: dict[str, int]


@pytest.fixture
async def env(db_url: str) -> Env:
    """A database seeded with 3 teams × 6 bound members, services on a FakeClock at T0."""
    load_all()
    cfg = make_config(db_url, bot__fallback_flow="help")
    db = Database(db_url)
    clock = FakeClock(T0)
    teams = await seed(db, roster_rows(TEAMS, 6))
    yield Env(db, cfg, clock, Services(config=cfg, clock=clock, db=db), teams)
    await db.close()


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)
