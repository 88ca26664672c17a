"""Qingming peak on the online memorial: 50,000 tribute actions from 20,000 users through the webhook.

Starts `vetbot serve` (one process, SQLite with synchronous=FULL, no background loops) on loopback with a
sample roll of 2,000 records, then sends real signed (safe mode: encrypted) WeChat callbacks with wrk as
fast as the server takes them: 献花 / 敬礼 / 点烛 / 默哀 to all martyrs, 献花 / 敬礼 to a martyr by name
(a few popular records take most of them: hot counter rows), and repeats that must be thanked, not
counted. Afterwards every counter, every per-day tribute row and the participant count are compared with
what the requests imply. In the same run, as the reference, the same server takes a plain turn that
touches no memorial table (the global command 取消) at the same concurrency.

    python bench/memorial_bench.py [--actions 50000] [--users 20000] [--connections 16] [--modes aes]

Requires wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import callback_line, free_port, wait_port, wrk_once  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.sim import WeChatSide, text_xml  # noqa: E402

MARTYRS = 2000
#: Users of the first kind pay tribute to all martyrs with the bare words from the menu (献花 …); users of
#: the second name a martyr (献花 示例烈士0012 / 为示例烈士0012敬礼), or all martyrs explicitly (为全体英烈献花),
#: which is what they type after a record card. Both repeat themselves sometimes (thanked, not counted).
MIX_ALL = [(50, "献花"), (17, "敬礼"), (17, "点烛"), (6, "默哀"), (10, "repeat")]
MIX_NAMED = [(45, "one:献花"), (15, "one:敬礼"), (10, "one:点烛"), (20, "all:为全体英烈献花"), (10, "repeat")]
ACTION = {"献花": "flower", "敬礼": "salute", "点烛": "candle", "默哀": "silence"}
#: Distinct MsgIds across every file of a run (the dedup key of a message).
MSG_IDS = itertools.count(int(time.time()) * 1_000_000)






def write_roll(path: Path) -> None:
    """2,000 plainly synthetic records (示例烈士0001 …): enough rows for realistic index lookups."""
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "gender", "hometown", "born", "died", "unit", "place_of_death", "burial", "biography"])
        for i in range(1, MARTYRS + 1):
            w.writerow([f"示例烈士{i:04d}", "男", f"示例县{i % 30}乡", "1930", "1951", f"示例部队{i % 50}团",
                        "示例高地", "示例县烈士陵园", "【示例记录】基准测试用的虚构数据，不是真实人物。"])


def plan(actions: int, users: int, seed: int = 6) -> tuple[list[tuple[str, str]], Counter[tuple[int, str]]]:
    """The messages (openid, text) in send order, and the counts they must produce per (target, action).

    Message i comes from user i % users, so one user's messages are far apart in the stream. A bare 献花
    means "this martyr" on a record card, so only users who never open one send bare words: the counts
    then do not depend on the order in which one user's messages are taken."""
    rng = random.Random(seed)
    msgs: list[tuple[str, str]] = []
    done: set[tuple[str, int, str]] = set()
    last: dict[str, str] = {}
    for i in range(actions):
        u = i % users
        openid = f"qm_user_{u:05d}"
        mix = MIX_ALL if u % 2 == 0 else MIX_NAMED
        kind = rng.choices([k for _, k in mix], [w for w, _ in mix])[0]
        if kind == "repeat":
            kind = last.get(openid) or mix[0][1]
        if kind.startswith("one:"):
            # Popular records take most tributes: a few hot counter rows, as at a real peak.
            mid = min(int(rng.paretovariate(1.2)), MARTYRS)
            word = kind[4:]
            text = f"{word} 示例烈士{mid:04d}" if rng.random() < 0.5 else f"为示例烈士{mid:04d}{word}"
            kind = f"={text}"
        text = kind[1:] if kind.startswith("=") else kind[4:] if kind.startswith("all:") else kind
        last[openid] = kind
        msgs.append((openid, text))
        m = re.match(r"^(?:为示例烈士(\d{4})|为全体英烈)?(献花|敬礼|点烛|默哀)(?: 示例烈士(\d{4}))?$", text)
        assert m, text
        done.add((openid, int(m.group(1) or m.group(3) or 0), ACTION[m.group(2)]))
    expected: Counter[tuple[int, str]] = Counter((t, a) for _, t, a in done)
    return msgs, expected


def write_requests(cfg_path: Path, msgs: list[tuple[str, str]], out: Path, plain: bool, path: str) -> None:
    env = {"VETBOT_WECHAT__ENCODING_AES_KEY": ""} if plain else {}
    side = WeChatSide(load_config(cfg_path, env))
    with out.open("w", encoding="utf-8") as f:
        for openid, text in msgs:
            f.write(callback_line(side, text_xml(openid, text, msg_id=next(MSG_IDS)), path))


def stored(db: Path) -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("select count(*) from inbound_dedup").fetchone()[0]
    finally:
        con.close()


def run_wrk(url: str, reqfile: Path, conns: int, db: Path, target: int, timeout: float = 170) -> dict[str, float]:
    """Send the file with wrk until the database holds ``target`` turns. Throughput comes from the server's
    own turn timestamps, first to last."""
    before = stored(db)

    async def done() -> bool:
        # max(rowid) instead of count(*) while polling: O(1), and equal to the row count here (the server
        # runs with --no-background, so nothing deletes dedup rows during the run).
        con = sqlite3.connect(db)
        try:
            return (con.execute("select max(rowid) from inbound_dedup").fetchone()[0] or 0) >= target
        finally:
            con.close()

    r = asyncio.run(wrk_once(url, reqfile, conns, done, timeout))
    con = sqlite3.connect(db)
    first, last = con.execute("select min(created_at), max(created_at) from (select created_at from inbound_dedup"
                              " order by created_at limit -1 offset ?)", (before,)).fetchone()
    con.close()
    secs = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return {"secs": max(secs, 1e-6), "p50": r["p50"], "p90": r["p90"], "p99": r["p99"], "errors": r["errors"],
            "committed": stored(db) - before}


def check_counts(db: Path, expected: Counter[tuple[int, str]], users: int) -> tuple[bool, list[str]]:
    con = sqlite3.connect(db)
    got = {(m, a): n for m, a, n in con.execute("select martyr_id, action, n from memorial_counters")}
    rows = Counter((m, a) for m, a in con.execute("select martyr_id, action from memorial_tributes"))
    people = con.execute("select count(*) from memorial_participants").fetchone()[0]
    con.close()
    problems = []
    for key, n in expected.items():
        if got.get(key) != n:
            problems.append(f"counter {key}: {got.get(key)} != {n}")
        if rows.get(key) != n:
            problems.append(f"tribute rows {key}: {rows.get(key)} != {n}")
    extra = set(got) - set(expected)
    problems += [f"unexpected counter {k}" for k in sorted(extra)]
    if people != users:
        problems.append(f"participants: {people}, expected {users}")
    return not problems, problems


def bench(mode: str, args: argparse.Namespace, tmp: Path) -> list[tuple[str, dict[str, float]]]:
    port = free_port()
    db = tmp / f"memorial_{mode}.db"
    cfg = ROOT / "config.example.yaml"  # its relative paths (KB, word list) resolve beside it
    env = {**os.environ, "VETBOT_SERVER__PORT": str(port), "VETBOT_LOGGING__LEVEL": "WARNING",
           "VETBOT_DATABASE__URL": f"sqlite+aiosqlite:///{db}", "VETBOT_BOT__FALLBACK_FLOW": "help"}
    if mode == "plain":
        env["VETBOT_WECHAT__ENCODING_AES_KEY"] = ""
    vetbot = str(Path(sys.executable).parent / "vetbot")
    roll = tmp / "roll.csv"
    write_roll(roll)
    subprocess.run([vetbot, "db", "upgrade", "-c", str(cfg)], env=env, check=True, capture_output=True)
    subprocess.run([vetbot, "martyrs", "import", "-c", str(cfg), str(roll)], env=env, check=True,
                   capture_output=True)
    msgs, expected = plan(args.actions, args.users)
    reqfile = tmp / f"tributes_{mode}.tsv"
    write_requests(cfg, msgs, reqfile, mode == "plain", "/wechat")
    ref_msgs = [(f"ref_user_{i % args.users:05d}", "取消") for i in range(args.reference)]
    ref_file = tmp / f"reference_{mode}.tsv"
    write_requests(cfg, ref_msgs, ref_file, mode == "plain", "/wechat")
    log = (tmp / f"serve_{mode}.log").open("w")
    proc = subprocess.Popen([vetbot, "serve", "-c", str(cfg), "--no-background"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    rows = []
    try:
        wait_port(port, proc, tmp / f"serve_{mode}.log")
        url = f"http://127.0.0.1:{port}"
        if args.reference:
            r = run_wrk(url, ref_file, args.connections, db, args.reference)
            r["n"] = args.reference
            rows.append((f"reference: 取消 (no memorial SQL), {mode}", r))
        r = run_wrk(url, reqfile, args.connections, db, args.reference + args.actions)
        r["n"] = args.actions
        ok, problems = check_counts(db, expected, args.users)
        r["exact"] = ok
        rows.append((f"memorial tributes, {mode}", r))
        for p in problems[:20]:
            print("MISMATCH", p, file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--actions", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--reference", type=int, default=20_000, help="plain turns for the reference row (0: skip)")
    ap.add_argument("--modes", default="aes", help="aes (safe mode, as configured), plain, or both: aes,plain")
    ap.add_argument("--keep", type=Path, help="keep the database, config and server log in this folder")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep
        for mode in args.modes.split(","):
            rows += bench(mode, args, tmp)
    print(f"\nQingming peak: {args.actions:,} tributes from {args.users:,} users, {args.connections} connections, "
          f"wrk on the same {os.cpu_count()}-core machine, SQLite synchronous=FULL\n")
    print(f"{'load':44} {'requests':>9} {'actions/s':>10} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'errors':>6}"
          f" {'stored':>7} {'counts':>7}")
    for name, r in rows:
        exact = "exact" if r.get("exact") else ("-" if "exact" not in r else "WRONG")
        print(f"{name:44} {int(r['n']):9,d} {r['n'] / r['secs']:10,.0f} {r['p50']:7.1f} {r['p90']:7.1f}"
              f" {r['p99']:7.1f} {int(r['errors']):6d} {int(r['committed']):7,d} {exact:>7}")
    print("\nactions/s = messages / seconds from the first to the last stored turn (server clock); p50-p99 = wrk's"
          "\nround-trip latency. stored = turns durably committed (SQLite synchronous=FULL). counts = every counter,"
          "\nper-day tribute row and the participant count equal what the messages imply (repeats not counted).")
    if any(r.get("exact") is False for _, r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
