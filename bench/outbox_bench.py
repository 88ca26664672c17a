"""Outbox fan-out benchmark: 10,000 template pushes through the fake WeChat API at 20 ms latency.

    python bench/outbox_bench.py                 # SQLite (1 sender) and PostgreSQL (1 and 2 senders)
    python bench/outbox_bench.py --n 2000 --no-pg

Every sender is a real `vetbot outbox run` process (concurrency 32, started before the timer, idle
on an empty queue); the fake WeChat API is its own process answering each call after 20 ms. The
timer starts when the 10,000 rows are committed (one transaction, as a feature would queue a
call-up) and stops when the database shows all of them `sent`. Lost / duplicated are counted
from the calls the fake recorded: every recipient must appear exactly once.

Reference: 32 connections x 20 ms allow at most 32 / 0.020 = 1,600 pushes/s per sender process.
Targets (issue 3): enqueue < 1 s; >= 1,000 pushes/s at concurrency 32 (70 % of the ceiling).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bot.clock import SystemClock  # noqa: E402
from bot.fake_wechat import fake_openid  # noqa: E402
from storage.db import Database, upgrade  # noqa: E402
from storage.models import OutboxMessage, User  # noqa: E402
from storage.outbox import Push, enqueue  # noqa: E402

PG_ADMIN = os.environ.get("VETBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
TEMPLATE = "/cgi-bin/message/template/send"
CONCURRENCY = 32


def _http(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


async def _readline(proc: asyncio.subprocess.Process, want: str, within_s: float = 60) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())).decode()
        if not line:
            err = (await proc.stderr.read()).decode() if proc.stderr else ""
            raise RuntimeError(f"process ended before printing {want!r}: {err[-1500:]}")
        if want in line:
            return line
    raise RuntimeError(f"no {want!r} within {within_s} s")


async def start_fake(latency_ms: float) -> tuple[asyncio.subprocess.Process, str]:
    # uvloop, as `vetbot serve` and `vetbot outbox run` use: the fake must not be the bottleneck.
    code = ("import sys, uvloop; uvloop.install(); from bot.commands.fake_wechat import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--port", "0", "--latency-ms", str(latency_ms),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(ROOT))
    line = await _readline(proc, "http://")
    url = line[line.index("http://"):].split()[0]
    return proc, url


async def start_sender(db_url: str, fake_url: str, name: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VETBOT_")}
    env.update(VETBOT_DATABASE__URL=db_url, VETBOT_WECHAT__API_BASE=fake_url, VETBOT_OUTBOX__CONCURRENCY=str(CONCURRENCY),
               VETBOT_OUTBOX__POLL_INTERVAL_S="0.05", VETBOT_LOGGING__LEVEL="WARNING",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "outbox", "run", "-c", str(ROOT / "config.example.yaml"), "--worker", name,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=str(ROOT))
    await _readline(proc, "running")
    return proc


async def _pg(sql: str) -> None:
    eng = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with eng.connect() as c:
            await c.execute(text(sql))
    finally:
        await eng.dispose()


async def run_case(label: str, db_url: str, fake_url: str, senders: int, n: int) -> dict[str, Any]:
    await asyncio.to_thread(upgrade, db_url)
    db = Database(db_url)
    procs: list[asyncio.subprocess.Process] = []
    try:
        now = SystemClock().now()
        async with db.session() as s:  # followers without an open window: the template channel
            for i in range(0, n, 1000):
                s.add_all([User(openid=fake_openid(j), subscribed=True, first_seen=now, last_seen=now, kefu_sent=0,
                                roles="veteran") for j in range(i, min(n, i + 1000))])
        _http(fake_url + "/__fake__/reset", {})
        procs = [await start_sender(db_url, fake_url, f"{label}-{k}") for k in range(senders)]
        # Let the senders fetch their token on a tiny warm-up push, outside the timed fan-out.
        async with db.session() as s:
            await enqueue(s, Push(openid=fake_openid(n + 1), purpose="notice", key="warmup", text="warm up",
                                  data={"title": "t", "content": "c"}), now)
        while await _sent(db) < 1:  # noqa: ASYNC110 - polling another process's progress
            await asyncio.sleep(0.05)
        _http(fake_url + "/__fake__/reset", {})

        pushes = [Push(openid=fake_openid(i), purpose="callup", key="callup:1:notify", priority=0,
                       text="【应急集结】今晚8点在县人武部集合，请回复：到 / 晚到 / 不能到",
                       data={"title": "应急集结通知", "place": "县人武部", "time": "今晚8点"},
                       url=f"http://127.0.0.1:8080/a/{i}") for i in range(n)]
        t0 = time.perf_counter()
        async with db.session() as s:
            queued = await enqueue(s, pushes, SystemClock().now())
        t_enq = time.perf_counter() - t0
        committed = SystemClock().now()
        assert queued == n, f"queued {queued} of {n}"
        # Poll slowly and without the write lock: the time comes from the rows' own sent_at stamps.
        while (done := await _sent(db)) < n + 1:
            if (SystemClock().now() - committed).total_seconds() > 180:
                raise RuntimeError(f"not all sent after 180 s: {done}")
            await asyncio.sleep(0.25)
        async with db.session() as s:
            last = (await s.execute(select(func.max(OutboxMessage.sent_at)))).scalar_one()
        t_send = (last - committed).total_seconds()
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            await p.wait()
        await db.close()
    got = Counter(c["body"]["touser"] for c in _http(fake_url + f"/__fake__/calls?path={TEMPLATE}")["calls"]
                  if c.get("errcode") == 0)
    expected = {fake_openid(i) for i in range(n)}
    lost = len(expected - set(got))
    dup = sum(k - 1 for o, k in got.items() if k > 1)
    ceiling = senders * CONCURRENCY / 0.020
    rate = n / t_send
    return {"case": label, "senders": senders, "enqueue_s": t_enq, "deliver_s": t_send, "rate": rate,
            "ceiling": ceiling, "pct": 100 * rate / ceiling, "lost": lost, "dup": dup}


async def client_reference(fake_url: str, n: int) -> dict[str, Any]:
    """The same template sends through WeChatClient alone at concurrency 32: no database, no policy.

    Measured in this run against the same fake, it is what this machine can push at all; the sender
    rows are read against it (and against the theoretical ceiling).
    """
    from bot.wechat_api import MemoryTokenStore, WeChatClient

    client = WeChatClient(fake_url, "wx0000000000000000", "bench", MemoryTokenStore())
    try:
        await client.access_token()
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            async with sem:
                await client.send_template(fake_openid(i), "TPL_CALLUP", {"first": "应急集结通知", "keyword1": "县人武部",
                                                                          "keyword2": "今晚8点"}, f"http://127.0.0.1:8080/a/{i}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        dt = time.perf_counter() - t0
    finally:
        await client.close()
    ceiling = CONCURRENCY / 0.020
    return {"case": "reference", "senders": 0, "enqueue_s": None, "deliver_s": dt, "rate": n / dt,
            "ceiling": ceiling, "pct": 100 * n / dt / ceiling, "lost": None, "dup": None}


async def _sent(db: Database) -> int:
    if db.is_sqlite:  # a plain read in WAL mode never blocks the sender (Database begins IMMEDIATE)
        import sqlite3

        path = db.url.split("///", 1)[1]
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT count(*) FROM outbox WHERE status = 'sent'").fetchone()[0]
    async with db.session() as s:
        return (await s.execute(select(func.count()).where(OutboxMessage.status == "sent"))).scalar_one()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--latency-ms", type=float, default=20)
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    fake, fake_url = await start_fake(args.latency_ms)
    tmp = Path(tempfile.mkdtemp(prefix="vetbot_outbox_bench_"))
    results = []
    load_before = os.getloadavg()[0]
    try:
        _http(fake_url + "/__fake__/reset", {})
        results.append(await client_reference(fake_url, args.n))
        results.append(await run_case("SQLite", f"sqlite+aiosqlite:///{tmp}/bench.db", fake_url, 1, args.n))
        if not args.no_pg:
            for senders in (1, 2):
                name = f"vetbot_outbox_bench_{os.getpid()}_{senders}"
                await _pg(f'DROP DATABASE IF EXISTS "{name}"')
                await _pg(f'CREATE DATABASE "{name}"')
                try:
                    url = PG_ADMIN.rpartition("/")[0] + "/" + name
                    results.append(await run_case("PostgreSQL", url, fake_url, senders, args.n))
                finally:
                    await _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        fake.send_signal(signal.SIGTERM)
        await fake.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{args.n:,} template pushes, fake WeChat API latency {args.latency_ms:g} ms, "
          f"concurrency {CONCURRENCY} per sender process; {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after\n")
    head = (f"{'database':<11} {'senders':>7} {'enqueue s':>10} {'deliver s':>10} {'pushes/s':>9} "
            f"{'ceiling/s':>10} {'of ceiling':>10} {'lost':>5} {'dup':>5}")
    print(head)
    print("-" * len(head))
    for r in results:
        if r["case"] == "reference":
            print(f"{'client only':<11} {'-':>7} {'-':>10} {r['deliver_s']:>10.2f} {r['rate']:>9,.0f} "
                  f"{r['ceiling']:>10,.0f} {r['pct']:>9.0f}% {'-':>5} {'-':>5}")
            continue
        print(f"{r['case']:<11} {r['senders']:>7} {r['enqueue_s']:>10.2f} {r['deliver_s']:>10.2f} {r['rate']:>9,.0f} "
              f"{r['ceiling']:>10,.0f} {r['pct']:>9.0f}% {r['lost']:>5} {r['dup']:>5}")
    print("\nceiling = senders x 32 connections / 20 ms (no sender can beat it). 'client only' = the same sends"
          " through WeChatClient at concurrency 32 with no database, measured in this run: what this machine"
          " and the fake allow. Targets: enqueue < 1 s, >= 1,000 pushes/s, 0 lost, 0 duplicated.")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
