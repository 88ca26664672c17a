"""个人信息保护 at county scale: what 我的数据, 注销 and the file clean-up cost on a full database.

Builds a database with ``--users`` people (default 20,000), each with a profile, a conversation row,
``--pushes`` delivered pushes whose texts name them (default 5), three tributes, and every tenth a ticket
and a job subscription; then, for a few people, times:

* 我的数据: :func:`storage.privacy.collect` (every declared table, mentions counted by text search);
* erase: :func:`flows.privacy.erase_person` in one transaction (delete / pseudonymise / scrub everywhere);
* compact: SQLite VACUUM + WAL checkpoint (:func:`flows.privacy.compact`) with the file size, or
  PostgreSQL VACUUM of the declared tables;
* retention: one :func:`storage.privacy.purge` pass with every rule due.

    python bench/privacy_bench.py [--users 20000] [--pushes 5] [--dbs sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bot.config import load_config  # noqa: E402
from flows.api import load_all  # noqa: E402
from flows.privacy.service import compact, erase_person  # noqa: E402
from storage.db import Database, upgrade  # noqa: E402
from storage.jobs import JobSubscription  # noqa: E402
from storage.memorial import MemorialParticipant, MemorialTribute  # noqa: E402
from storage.models import Conversation, OutboxMessage, Ticket, User  # noqa: E402
from storage.privacy import collect, purge  # noqa: E402

NOW = datetime(2026, 4, 4, 2, 0)
PG = os.environ.get("VETBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "建国秀英志强海燕红梅国庆卫东春生振华丽娟德明玉兰"


def person(i: int) -> tuple[str, str, str]:
    name = SURNAMES[i % 20] + GIVEN[(i // 20) % 20] + GIVEN[(i // 400) % 20]
    return f"oBenchUser{i:012d}", name, f"13{i % 10}{i:08d}"[-11:]


async def populate(db: Database, users: int, pushes: int) -> None:
    async with db.session() as s:
        for lo in range(0, users, 2000):
            ids = range(lo, min(users, lo + 2000))
            ppl = [person(i) for i in ids]
            await s.execute(insert(User), [
                {"openid": o, "subscribed": True, "first_seen": NOW, "last_seen": NOW, "kefu_sent": 0, "roles": "veteran",
                 "name": n, "phone": p, "township": "城关镇", "kind": "veteran"} for o, n, p in ppl])
            await s.execute(insert(Conversation), [
                {"openid": o, "slots": {}, "stack": [], "choices": [], "reasks": 0, "updated_at": NOW, "expired": False}
                for o, _, _ in ppl])
            await s.execute(insert(OutboxMessage), [
                {"idempotency_key": f"{o}:n{k}", "openid": o, "purpose": "notice", "priority": 5,
                 "payload": {"text": f"{n}您好，您的业务已办理（{k}）。", "data": {}}, "status": "sent",
                 "skipped_channels": [], "attempts": 1, "due_at": NOW, "created_at": NOW - timedelta(days=k)}
                for o, n, _ in ppl for k in range(pushes)])
            await s.execute(insert(MemorialTribute), [
                {"day": date(2026, 4, d), "martyr_id": 0, "openid": o, "action": "flower"} for o, _, _ in ppl for d in (3, 4, 5)])
            await s.execute(insert(MemorialParticipant), [{"openid": o, "first_day": date(2026, 4, 3)} for o, _, _ in ppl])
            tenth = [x for j, x in zip(ids, ppl, strict=True) if j % 10 == 0]
            if tenth:
                await s.execute(insert(Ticket), [{"openid": o, "text": f"我是{n}，电话{p}", "context": {}, "status": "open",
                                                  "created_at": NOW} for o, n, p in tenth])
                await s.execute(insert(JobSubscription), [
                    {"openid": o, "status": "active", "places": ["城关镇"], "keywords": ["保安"], "categories": [],
                     "created_at": NOW, "updated_at": NOW} for o, _, _ in tenth])


async def one(kind: str, url: str, users: int, pushes: int, cfg: object, path: Path | None) -> list[str]:
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    lines = []
    try:
        t = time.perf_counter()
        await populate(db, users, pushes)
        lines.append(f"{kind:10} populate {users:,} people: {time.perf_counter() - t:6.1f} s")
        t_collect, t_erase, t_compact = [], [], []
        for i in (0, users // 2, users - 10):
            openid = person(i)[0]
            t = time.perf_counter()
            async with db.session() as s:
                found = await collect(s, openid)
            t_collect.append(time.perf_counter() - t)
            t = time.perf_counter()
            async with db.session() as s:
                report = await erase_person(s, openid, by="staff:bench", now=NOW)
            t_erase.append(time.perf_counter() - t)
            size = (await asyncio.to_thread(os.path.getsize, path)) if path else 0
            t = time.perf_counter()
            await compact(db, NOW)
            t_compact.append(time.perf_counter() - t)
        ms = lambda xs: f"{1000 * sorted(xs)[len(xs) // 2]:8.0f} ms"  # noqa: E731
        lines.append(f"{kind:10} 我的数据 (collect, {len(found)} kinds)        {ms(t_collect)}")
        lines.append(f"{kind:10} erase one person ({report.rows} rows)         {ms(t_erase)}")
        extra = f" ({size / 1e6:.0f} MB file)" if path else ""
        lines.append(f"{kind:10} compact after it{extra:16}     {ms(t_compact)}")
        t = time.perf_counter()
        async with db.session() as s:
            done = await purge(s, NOW + timedelta(days=3650), cfg.privacy.retention_days())  # type: ignore[attr-defined]
        lines.append(f"{kind:10} retention pass, everything due ({sum(done.values()):,} rows) {ms([time.perf_counter() - t])}")
    finally:
        await db.close()
    return lines


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--pushes", type=int, default=5)
    ap.add_argument("--dbs", default="sqlite,postgresql")
    args = ap.parse_args()
    load_all()
    cfg = load_config(ROOT / "config.example.yaml", {})
    out: list[str] = []
    for kind in args.dbs.split(","):
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "bench.db"
                out += await one(kind, f"sqlite+aiosqlite:///{path}", args.users, args.pushes, cfg, path)
        elif kind == "postgresql":
            name = f"vetbot_privacy_bench_{uuid.uuid4().hex[:8]}"
            admin = create_async_engine(PG, isolation_level="AUTOCOMMIT")
            async with admin.connect() as c:
                await c.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                out += await one(kind, PG.rsplit("/", 1)[0] + "/" + name, args.users, args.pushes, cfg, None)
            finally:
                async with admin.connect() as c:
                    await c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                await admin.dispose()
    print("\n".join(out))


if __name__ == "__main__":
    asyncio.run(main())
