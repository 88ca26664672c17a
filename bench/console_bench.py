"""Staff console at county scale: how long the pages that read many rows take.

Seeds N followers (a share registered as veterans, with townships) and a notice queued to all of them
(N outbox rows, most sent, some failed), then times, per database: resolving an audience with its
explanation (the confirm page), recording the notice, fanning its pushes out in chunks (all of them,
and the longest chunk: how long one transaction holds the database), the delivery report of the notice,
and the dashboard's figures. Prints a table; not a test.

    python bench/console_bench.py [--followers 180000] [--no-pg]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text, update

from storage.db import Database, upgrade

PG = os.environ.get("VETBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2026, 7, 1, 2, 0, 0)
CONFIG = Path(__file__).resolve().parent.parent / "config.example.yaml"


async def _seed(db: Database, n: int) -> None:
    from storage.models import User

    rows = [{"openid": f"oBench{i:022d}", "subscribed": i % 50 != 0, "first_seen": T0, "last_seen": T0,
             "kefu_sent": 0, "roles": "veteran" if i % 7 == 0 else "", "kind": "veteran" if i % 7 == 0 else
             ("other" if i % 11 == 0 else None), "township": f"镇{i % 30}" if i % 3 else None,
             "last_message_at": T0 if i % 13 == 0 else None} for i in range(n)]
    async with db.session() as s:
        for i in range(0, n, 5000):
            await s.execute(insert(User.__table__), rows[i:i + 5000])


async def _time(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


async def run(url: str, n: int) -> dict[str, float]:
    from bot.clock import FakeClock
    from bot.config import load_config
    from bot.web.console import dashboard
    from bot.web.console.base import Console
    from flows.api import Services
    from flows.broadcast import service
    from storage.broadcast import delivery
    from storage.models import OutboxMessage

    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    out: dict[str, float] = {}
    try:
        await _seed(db, n)

        async def resolve_all() -> None:
            async with db.session() as s:
                await service.resolve(s, service.Audience(), with_openids=False)

        async def resolve_role() -> None:
            async with db.session() as s:
                await service.resolve(s, service.Audience(role="veteran", township="镇1"), with_openids=False)

        out["resolve everyone (confirm page)"] = await _time(resolve_all)
        out["resolve role+township"] = await _time(resolve_role)
        t = time.perf_counter()
        async with db.session() as s:
            q = await service.queue(s, T0, title="清明祭扫安排", text="4月4日上午8点在烈士陵园集合", by="bench")
        out["record the notice (the request)"] = (time.perf_counter() - t) * 1000
        chunk_ms: list[float] = []
        real_enqueue = service.enqueue

        async def timed(session, pushes, now):  # type: ignore[no-untyped-def]
            t1 = time.perf_counter()
            n = await real_enqueue(session, pushes, now)
            chunk_ms.append((time.perf_counter() - t1) * 1000)
            return n

        service.enqueue = timed  # type: ignore[assignment]
        t = time.perf_counter()
        try:
            await service.fan_out(db, q.broadcast_id or 0, T0, "Asia/Shanghai")
        finally:
            service.enqueue = real_enqueue  # type: ignore[assignment]
        out["fan-out, all chunks"] = (time.perf_counter() - t) * 1000
        out["longest chunk (database held)"] = max(chunk_ms)
        async with db.session() as s:
            await s.execute(update(OutboxMessage).values(status="sent", channel="template", sent_at=T0))
            await s.execute(update(OutboxMessage).where(OutboxMessage.id % 40 == 0)
                            .values(status="failed", channel=None, last_error="template: 43004 require subscribe"))

        async def report() -> None:
            async with db.session() as s:
                await delivery(s, q.broadcast_id or 0)

        out["delivery report of the notice"] = await _time(report)
        cfg = load_config(CONFIG, {"VETBOT_DATABASE__URL": url})

        class _Rt:
            config = cfg
            clock = FakeClock(T0)

        _Rt.db = db  # type: ignore[attr-defined]
        _Rt.services = Services(config=cfg, clock=_Rt.clock, db=db)  # type: ignore[attr-defined]
        console = Console(_Rt())
        out["dashboard figures"] = await _time(lambda: dashboard.figures(console))
        out["recipients"] = float(q.recipients)
    finally:
        await db.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--followers", type=int, default=180000)
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as d:
        results["SQLite"] = await run(f"sqlite+aiosqlite:///{d}/bench.db", args.followers)
    if not args.no_pg:
        from sqlalchemy.ext.asyncio import create_async_engine

        name = f"vetbot_console_bench_{uuid.uuid4().hex[:8]}"
        admin = create_async_engine(PG, isolation_level="AUTOCOMMIT")
        async with admin.connect() as c:
            await c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            results["PostgreSQL"] = await run(PG.rsplit("/", 1)[0] + f"/{name}", args.followers)
        finally:
            async with admin.connect() as c:
                await c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await admin.dispose()
    names = list(results)
    rows = [k for k in next(iter(results.values())) if k != "recipients"]
    print(f"staff console, {args.followers} users ({int(results[names[0]]['recipients'])} following), median of 3 (ms)")
    print(f"{'':40}" + "".join(f"{n:>14}" for n in names))
    for r in rows:
        print(f"{r:40}" + "".join(f"{results[n][r]:>14.0f}" for n in names))


if __name__ == "__main__":
    asyncio.run(main())
