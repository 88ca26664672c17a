"""Job alerts at job-fair scale: 5,000 postings imported against 20,000 subscriptions.

Measures, on a fresh SQLite database (and PostgreSQL with --pg):

* validate: reading and checking the CSV (every row);
* import + match: one transaction storing the postings, matching the new ones against every
  deliverable subscription (bitset index), queueing instant alerts (per-day cap) and scheduling
  digests — the number of pushes enqueued is printed;
* digest run: the next morning's ``jobs_digest`` work for every daily subscriber (and instant
  overflow) that was scheduled;

and, for reference in the same run: the import alone (``--no-notify``) on another fresh database, and
the naive nested-loop matcher (every posting against every subscription with
:func:`flows.jobs.matching.matches`) timed on a sample and extrapolated, next to the bitset index on
the same sample.

    python bench/jobs_bench.py [--postings 5000] [--subs 20000] [--pg] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bot.config import load_config  # noqa: E402
from flows.jobs.alerts import DIGEST_BATCH, criteria_of, run_digests, settings, store_postings  # noqa: E402
from flows.jobs.csvimport import COLUMNS, read_postings  # noqa: E402
from flows.jobs.matching import PostingView, SubscriptionIndex, matches  # noqa: E402
from storage.db import Database, upgrade  # noqa: E402
from storage.jobs import JobPosting, JobSubscription  # noqa: E402
from storage.models import OutboxMessage, User  # noqa: E402

NOW = datetime(2026, 4, 4, 2, 0)  # 10:00 in Shanghai: outside quiet hours
TOWNS = ["城关镇", "庙坝镇", "石河镇", "月华镇", "清河镇", "杨家镇", "周家镇", "石桥铺镇", "高明镇", "观音镇",
         "文星镇", "中华镇", "童家镇", "石子镇", "清水镇", "川主乡", "白坝乡", "四合镇", "安吉乡", "团坝镇",
         "欧家镇", "八渡乡", "高穴镇", "双溪乡", "妈妈镇", "黄滩镇", "柏林镇", "乌木镇", "朝阳乡", "天城镇"]
TITLES = {
    "保安": ["保安", "门卫", "安保主管", "巡逻队员", "押运员", "安检员"],
    "司机": ["货车司机", "客车驾驶员", "配送员", "叉车司机", "驾驶员"],
    "物流": ["仓管员", "快递员", "分拣员", "搬运工", "物流专员"],
    "技工": ["电工", "焊工", "机修工", "维修技工", "水电工", "钳工"],
    "普工": ["普工", "操作工", "装配工", "包装工", "生产线员工"],
    "厨师餐饮": ["厨师", "厨工", "服务员", "面点师"],
    "销售": ["销售代表", "业务员", "导购", "客户经理"],
    "文员管理": ["文员", "行政助理", "人事专员", "车间主管"],
    "教练": ["军训教官", "体能教练", "驾校教练"],
    "物业保洁": ["物业管理员", "保洁员", "绿化工", "楼管员"],
}
KEYWORDS = ["电工", "厨师", "文员", "叉车", "焊工", "快递", "仓管", "教官", "门卫", "驾驶员"]


def write_csv(path: Path, n: int, rng: random.Random) -> None:
    cats = list(TITLES)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i in range(n):
            title = rng.choice(TITLES[rng.choice(cats)])
            lo = rng.choice([None, 2000, 2500, 3000, 3500, 4000, 5000, 6000])
            hi = None if lo is None else lo + rng.choice([0, 500, 1000, 2000])
            w.writerow([f"示例企业{i // 3:04d}（虚构）", f"{title}{i % 3 or ''}", f"大竹县{rng.choice(TOWNS)}",
                        lo or "面议", hi or "面议", rng.choice(["全职"] * 6 + ["兼职", "实习"]),
                        "身体健康，吃苦耐劳" + ("，退役军人优先" if i % 4 == 0 else ""), f"138{i:08d}",
                        "2030-12-31", "是" if i % 4 == 0 else "否", "示例·退役军人专场招聘会"])


def make_subs(n: int, rng: random.Random, categories: list[str]) -> list[dict]:
    out = []
    for i in range(n):
        r = rng.random()
        places = [] if r < 0.4 else (["大竹"] if r < 0.5 else rng.sample(TOWNS, rng.choice([1, 1, 2])))
        r = rng.random()
        cats = [] if r < 0.3 else rng.sample(categories, rng.choice([1, 1, 2]))
        kws = rng.sample(KEYWORDS, 1) if rng.random() < 0.2 else []
        out.append({"openid": f"bench_{i:06d}", "status": "active", "places": places, "keywords": kws,
                    "categories": cats, "min_salary": rng.choice([0, 0, 0, 2000, 3000, 4000, 5000]),
                    "job_type": rng.choice(["", "", "", "全职", "兼职"]),
                    "mode": "instant" if rng.random() < 0.6 else "daily", "digest_minute": rng.choice([480, 720, 1140]),
                    "quiet_start": 1320, "quiet_end": 420, "cursor": 0, "next_digest_at": None,
                    "created_at": NOW, "updated_at": NOW})
    return out


async def seed_subs(db: Database, subs: list[dict]) -> None:
    users = [{"openid": s["openid"], "subscribed": True, "first_seen": NOW, "last_seen": NOW, "kefu_sent": 0,
              "roles": ""} for s in subs]
    async with db.session() as s:
        for i in range(0, len(users), 2000):
            await s.execute(User.__table__.insert(), users[i:i + 2000])
            await s.execute(JobSubscription.__table__.insert(), subs[i:i + 2000])


PG_ADMIN = os.environ.get("VETBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


def _pg_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def fresh_db(backend: str, tmp: Path, name: str) -> str:
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / name}.db"
    else:
        admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        async with admin.connect() as c:
            await c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await c.execute(text(f'CREATE DATABASE "{name}"'))
        await admin.dispose()
        url = _pg_url(name)
    await asyncio.to_thread(upgrade, url)
    return url


async def drop_pg(name: str) -> None:
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        await c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


async def run_backend(backend: str, args: argparse.Namespace, csv_path: Path, subs: list[dict], tmp: Path,
                      table: list[tuple[str, str, str, str]]) -> None:
    cfg = load_config(ROOT / "config.example.yaml", {})
    tz = settings(cfg).tz
    t, c = time.perf_counter(), time.process_time()
    res = read_postings(csv_path, now=NOW, tz=tz)
    validate_s, validate_c = time.perf_counter() - t, time.process_time() - c
    assert not res.errors, res.errors[:3]
    table.append((f"{backend}: validate {len(res.rows):,} rows", f"{validate_s:.2f} s", f"{validate_c:.2f} s", ""))

    # Reference: the import alone.
    url = await fresh_db(backend, tmp, "jobs_bench_plain")
    db = Database(url)
    await seed_subs(db, subs)
    t, c = time.perf_counter(), time.process_time()
    async with db.session() as s:
        await store_postings(s, res.rows, NOW, cfg, notify=False)
    plain_s, plain_c = time.perf_counter() - t, time.process_time() - c
    await db.close()
    table.append((f"{backend}: import alone (reference, --no-notify)", f"{plain_s:.2f} s", f"{plain_c:.2f} s", ""))

    url = await fresh_db(backend, tmp, "jobs_bench")
    db = Database(url)
    await seed_subs(db, subs)
    t, c = time.perf_counter(), time.process_time()
    async with db.session() as s:
        rep = await store_postings(s, res.rows, NOW, cfg)
    import_s, import_c = time.perf_counter() - t, time.process_time() - c
    async with db.session() as s:
        queued = (await s.execute(select(func.count()).select_from(OutboxMessage))).scalar_one()
    verdict = "ok (target <= 10 s)" if import_s <= 10 or backend != "sqlite" else "OVER the 10 s target"
    table.append((f"{backend}: import + match + queue", f"{import_s:.2f} s", f"{import_c:.2f} s",
                  f"{verdict}; {rep.matched_users:,} subscribers matched, {queued:,} instant alerts queued, "
                  f"{rep.digests_scheduled:,} digests scheduled"))

    # The next morning: every scheduled digest (all due by 19:00 local).
    t, c = time.perf_counter(), time.process_time()
    sent = 0
    while True:
        async with db.session() as s:
            d = await run_digests(s, datetime(2026, 4, 5, 11, 0), cfg)
        sent += d.sent
        if d.due < DIGEST_BATCH:
            break
    digest_s, digest_c = time.perf_counter() - t, time.process_time() - c
    table.append((f"{backend}: digest run (all due)", f"{digest_s:.2f} s", f"{digest_c:.2f} s",
                  f"{sent:,} digests queued"))
    await db.close()
    if backend == "postgresql":
        await drop_pg("jobs_bench")
        await drop_pg("jobs_bench_plain")


def matcher_reference(csv_path: Path, subs: list[dict], table: list[tuple[str, str, str, str]], sample: int) -> None:
    cfg = load_config(ROOT / "config.example.yaml", {})
    s = settings(cfg)
    res = read_postings(csv_path, now=NOW, tz=s.tz)
    crit = [criteria_of(JobSubscription(**{k: v for k, v in d.items()}), s) for d in subs]
    views = [PostingView.of(JobPosting(id=i + 1, **{k: r[k] for k in ("title", "company", "location", "salary_min",
                                                                       "salary_max", "job_type", "requirements",
                                                                       "veteran_priority")}))
             for i, r in enumerate(res.rows)]
    part = views[:sample]
    t, c0 = time.perf_counter(), time.process_time()
    naive = [[i for i, c in enumerate(crit) if matches(c, v)] for v in part]
    naive_s, naive_c = time.perf_counter() - t, time.process_time() - c0
    t = time.perf_counter()
    index = SubscriptionIndex(crit)
    build_s = time.perf_counter() - t
    t, c0 = time.perf_counter(), time.process_time()
    fast = [index.who(v) for v in part]
    fast_s, fast_c = time.perf_counter() - t, time.process_time() - c0
    assert naive == fast, "index and nested loop disagree"
    scale = len(views) / len(part)
    table.append((f"naive nested loop, {len(part)} postings x {len(crit):,} subs (reference)", f"{naive_s:.2f} s",
                  f"{naive_c:.2f} s", f"-> {naive_c * scale:.1f} s CPU for {len(views):,} postings"))
    table.append((f"bitset index, same {len(part)} postings (+ build {build_s:.2f} s)", f"{fast_s:.3f} s",
                  f"{fast_c:.3f} s", f"-> {build_s + fast_c * scale:.2f} s CPU for {len(views):,} postings; "
                  f"{(naive_c * scale) / (build_s + fast_c * scale):.0f}x faster, same answers"))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postings", type=int, default=5000)
    ap.add_argument("--subs", type=int, default=20000)
    ap.add_argument("--sample", type=int, default=200, help="postings timed with the naive matcher")
    ap.add_argument("--pg", action="store_true", help="also run on the local PostgreSQL")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cfg = load_config(ROOT / "config.example.yaml", {})
    table: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        csv_path = tmp / "fair.csv"
        write_csv(csv_path, args.postings, rng)
        subs = make_subs(args.subs, rng, list(cfg.jobs.categories))
        await run_backend("sqlite", args, csv_path, subs, tmp, table)
        if args.pg:
            await run_backend("postgresql", args, csv_path, subs, tmp, table)
        await asyncio.to_thread(matcher_reference, csv_path, subs, table, args.sample)
    w1 = max(len(r[0]) for r in table)
    w2 = max(len(r[1]) for r in table)
    w3 = max(len(r[2]) for r in table)
    load = os.getloadavg()[0]
    print(f"\njob alerts: {args.postings:,} postings vs {args.subs:,} subscriptions "
          f"(60% instant, cap {cfg.jobs.instant_max_per_day}/day; 40% daily); {os.cpu_count()} CPUs, "
          f"load average {load:.1f} during the run (wall times stretch when other work shares the CPUs)\n")
    print(f"{'step'.ljust(w1)}  {'wall'.rjust(w2)}  {'CPU'.rjust(w3)}  notes")
    print(f"{'-' * w1}  {'-' * w2}  {'-' * w3}  -----")
    for a, b, c, d in table:
        print(f"{a.ljust(w1)}  {b.rjust(w2)}  {c.rjust(w3)}  {d}")


if __name__ == "__main__":
    asyncio.run(main())
