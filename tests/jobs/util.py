"""Helpers for the job tests: sample postings, users and subscriptions written straight to the database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from bot.config import Config
from flows.jobs.alerts import StoreReport, store_postings
from flows.jobs.csvimport import read_postings, search_text
from storage.db import Database
from storage.jobs import JobSubscription, posting_key
from storage.models import User
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "samples" / "jobs_sample.csv"


def posting(company: str = "示例公司", title: str = "保安", location: str = "大竹县城关镇", **kw: Any) -> dict[str, Any]:
    """A posting row as read_postings returns it."""
    row: dict[str, Any] = {
        "company": company, "title": title, "location": location, "salary_min": kw.pop("salary_min", 3000),
        "salary_max": kw.pop("salary_max", 4000), "job_type": kw.pop("job_type", "全职"),
        "requirements": kw.pop("requirements", ""), "contact": kw.pop("contact", "13800000000"),
        "deadline": kw.pop("deadline", None), "expires_at": kw.pop("expires_at", None),
        "veteran_priority": kw.pop("veteran_priority", False), "source": kw.pop("source", "测试"),
    }
    assert not kw, kw
    row["natural_key"] = posting_key(company, title, location)
    row["search_text"] = search_text(row)
    return row


async def add_user(db: Database, openid: str, now: datetime, *, subscribed: bool = True) -> None:
    async with db.session() as s:
        s.add(User(openid=openid, subscribed=subscribed, first_seen=now, last_seen=now, kefu_sent=0, roles=""))


async def add_sub(db: Database, openid: str, now: datetime, *, follow: bool = True, **kw: Any) -> None:
    """A user and their subscription (defaults: anything, instant, quiet 22:00-07:00, cursor 0)."""
    await add_user(db, openid, now, subscribed=follow)
    fields: dict[str, Any] = {"status": "active", "places": [], "keywords": [], "categories": [], "min_salary": 0,
                              "job_type": "", "mode": "instant", "digest_minute": 8 * 60, "quiet_start": 22 * 60,
                              "quiet_end": 7 * 60, "cursor": 0, "next_digest_at": None}
    fields.update(kw)
    async with db.session() as s:
        s.add(JobSubscription(openid=openid, created_at=now, updated_at=now, **fields))


async def store(db: Database, config: Config, rows: list[dict[str, Any]], now: datetime) -> StoreReport:
    async with db.session() as s:
        return await store_postings(s, rows, now, config)


async def import_file(db: Database, config: Config, path: Path, now: datetime) -> StoreReport:
    res = read_postings(path, now=now, tz=config.bot.timezone)
    assert not res.errors, res.errors
    return await store(db, config, res.rows, now)
