"""Webhook throughput: signed WeChat text messages from 1,000 users through intent matching.

Starts `vetbot serve` (one process, SQLite, no background loops) on loopback, replays pre-signed
callbacks with wrk (Debian's `wrk`, required), and prints msgs/s, p50/p99, errors and the server's CPU
time per message. In the same run, for scale, the same load against a WeRoBot echo bot under gunicorn (2 workers)
and two floors (bench/floors.py): vetbot's app with every turn answered at once, and a bare aiohttp handler.
Durability is not weakened: each turn commits its dedup record and conversation before the reply.

    python bench/webhook.py [--duration 15] [--connections 32] [--modes plain,aes] [--no-werobot] [--no-floors]
    python bench/webhook.py --questions [--modes plain] [--no-floors]

``--questions``: half the connections send free-text policy questions (drawn from every labelled case
file, ~540 distinct questions, each also asked about one of 20 places: over 10,000 distinct texts, so the
query caches rarely help) from their own users, the other half today's menu/command mix; the two halves
run as two wrk processes at once, so the p99 of the non-question messages is reported on its own (the
question answering must not slow them). Free text falls back to 政策问答 as in config.example.yaml.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import callback_line, cpu_seconds, free_port, wait_port, wrk_stats  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.sim import WeChatSide, text_xml  # noqa: E402

TEXTS = ["帮助", "取消", "我的信息", "取消", "菜单", "2", "取消", "政策问答", "返回", "退出"]
PLACES = ["城关镇", "咱村里", "县里", "俺们乡", "市里", "东关", "西湖镇", "老家", "外地", "本县", "这边", "北街",
          "南山乡", "河口镇", "我们社区", "街道上", "农村", "城区", "镇上", "山里"]


def question_texts() -> list[str]:
    """Free-text questions as veterans type them: every case of every labelled case file (six styles and
    out-of-scope, several KBs), each also asked about one of :data:`PLACES`; shuffled, fixed seed."""
    import random

    import yaml

    files = [ROOT / "tests/qa/cases.yaml", ROOT / "tests/qa/holdout.yaml",
             *sorted((ROOT / "tests/qa/kbs").glob("*/cases.yaml"))]
    base = list(dict.fromkeys(str(c["q"]) for f in files
                              for c in (yaml.safe_load(f.read_text(encoding="utf-8")) or {}).get("cases", [])))
    out = base + [f"{place}{q}" for q in base for place in PLACES]
    random.Random(7).shuffle(out)
    return out


def make_requests(cfg_path: Path, n: int, users: int, path: str, out: Path, plain: bool,
                  texts: list[str] | None = None, user_prefix: str = "bench_user_") -> None:
    env = {"VETBOT_WECHAT__ENCODING_AES_KEY": ""} if plain else {}
    side = WeChatSide(load_config(cfg_path, env))
    msgid = int(time.time()) * 1_000_000 + (500_000 if texts else 0)
    with out.open("w", encoding="utf-8") as f:
        for i in range(n):
            text = texts[i % len(texts)] if texts else TEXTS[(i // users) % len(TEXTS)]
            xml = text_xml(f"{user_prefix}{i % users:04d}", text, msg_id=msgid + i)
            f.write(callback_line(side, xml, path))


def _wrk_cmd(url: str, reqfile: Path, duration: int, conns: int, threads: int) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "10s",
            "-s", str(ROOT / "bench" / "wrk_requests.lua"), url, "--", str(reqfile), str(threads)]


def _wrk_result(out: str) -> dict[str, float]:
    return {**wrk_stats(out), "total": int(re.search(r"(\d+) requests in", out).group(1))}


def run_wrk(url: str, reqfile: Path, duration: int, conns: int) -> dict[str, float]:
    out = subprocess.run(_wrk_cmd(url, reqfile, duration, conns, 2), capture_output=True, text=True,
                         check=True).stdout
    return _wrk_result(out)


def run_mix(url: str, other: Path, questions: Path, duration: int, conns: int) -> dict[str, float]:
    """Two wrk processes at once (half the connections each): menu/command messages and free-text
    questions. Figures of the non-question half under ``p50``/``p99``…, the questions' under ``q_…``."""
    half = max(conns // 2, 1)
    procs = [subprocess.Popen(_wrk_cmd(url, f, duration, half, 1), stdout=subprocess.PIPE, text=True)
             for f in (other, questions)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("wrk failed:\n" + "\n".join(outs))
    o, q = (_wrk_result(x) for x in outs)
    res = dict(o)
    res.update({f"q_{k}": v for k, v in q.items()})
    return res


CFG = ROOT / "config.example.yaml"  # its relative paths (KB, word lists) resolve beside it
QUESTIONS = False  # --questions: free text goes to 政策问答 (the shipped default) instead of help
VETBOT = str(Path(sys.executable).parent / "vetbot")


def _migrate(env: dict[str, str]) -> None:
    subprocess.run([VETBOT, "db", "upgrade", "-c", str(CFG)], env=env, check=True, capture_output=True)


def _env(port: int, db: Path, mode: str) -> dict[str, str]:
    env = {**os.environ, "VETBOT_SERVER__PORT": str(port), "VETBOT_LOGGING__LEVEL": "WARNING",
           "VETBOT_DATABASE__URL": f"sqlite+aiosqlite:///{db}",
           "VETBOT_BOT__FALLBACK_FLOW": "policy_qa" if QUESTIONS else "help"}
    if mode == "plain":
        env["VETBOT_WECHAT__ENCODING_AES_KEY"] = ""
    return env


def _drive(cmd: list[str], env: dict[str, str], port: int, name: str, args: argparse.Namespace, tmp: Path,
           plain: bool) -> dict[str, float]:
    """Start ``cmd``, wait for its port, send fresh signed requests with wrk; figures plus CPU µs/msg."""
    log = (tmp / f"serve_{name}.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, tmp / f"serve_{name}.log")
        reqfile = tmp / f"req_{name}.tsv"
        make_requests(CFG, args.requests, args.users, "/wechat", reqfile, plain=plain)
        cpu0 = cpu_seconds(proc.pid)
        url = f"http://127.0.0.1:{port}"
        if args.questions:
            qfile = tmp / f"reqq_{name}.tsv"
            make_requests(CFG, args.requests // 4, args.users, "/wechat", qfile, plain=plain,
                          texts=question_texts(), user_prefix="bench_quser_")
            res = run_mix(url, reqfile, qfile, args.duration, args.connections)
        else:
            res = run_wrk(url, reqfile, args.duration, args.connections)
        res["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / max(res["total"] + res.get("q_total", 0), 1) * 1e6
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    return res


def bench_vetbot(mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    port = free_port()
    db = tmp / f"bench_{mode}.db"
    env = _env(port, db, mode)
    _migrate(env)
    res = _drive([VETBOT, "serve", "-c", str(CFG), "--no-background"], env, port, mode, args, tmp,
                 plain=(mode == "plain"))
    con = sqlite3.connect(db)
    res["turns_committed"] = con.execute("select count(*) from inbound_dedup").fetchone()[0]
    res["users"] = con.execute("select count(*) from users").fetchone()[0]
    con.close()
    return res


def bench_floor(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """bench/floors.py: aiohttp alone, or vetbot's app with the turns answered at once (plain mode)."""
    port = free_port()
    env = _env(port, tmp / f"floor_{kind}.db", "plain")
    if kind == "gateway":
        _migrate(env)
    return _drive([sys.executable, str(ROOT / "bench" / "floors.py"), kind, str(port)], env, port,
                  f"floor_{kind}", args, tmp, plain=True)


def bench_werobot(args: argparse.Namespace, tmp: Path) -> dict[str, float] | None:
    gunicorn = Path(sys.executable).parent / "gunicorn"
    if not gunicorn.exists():
        print("(gunicorn/werobot not installed: pip install -e '.[bench]')", file=sys.stderr)
        return None
    port = free_port()
    proc = subprocess.Popen([str(gunicorn), "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                             "werobot_echo:app"], cwd=tmp,
                            env={**os.environ, "BENCH_TOKEN": "vetbottoken", "PYTHONPATH": str(ROOT / "bench")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        reqfile = tmp / "req_werobot.tsv"
        make_requests(CFG, args.requests, args.users, "/", reqfile, plain=True)
        if args.questions:
            qfile = tmp / "reqq_werobot.tsv"
            make_requests(CFG, args.requests // 4, args.users, "/", qfile, plain=True, texts=question_texts(),
                          user_prefix="bench_quser_")
            return run_mix(f"http://127.0.0.1:{port}", reqfile, qfile, args.duration, args.connections)
        return run_wrk(f"http://127.0.0.1:{port}", reqfile, args.duration, args.connections)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=150_000, help="distinct pre-signed messages (never replayed)")
    ap.add_argument("--modes", default="plain,aes")
    ap.add_argument("--no-werobot", action="store_true")
    ap.add_argument("--no-floors", action="store_true", help="skip the two floor rows (bench/floors.py)")
    ap.add_argument("--questions", action="store_true",
                    help="half the connections send free-text policy questions; non-question p99 reported apart")
    args = ap.parse_args()
    global QUESTIONS
    QUESTIONS = args.questions
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for mode in args.modes.split(","):
            r = bench_vetbot(mode, args, tmp)
            rows.append((f"vetbot serve, SQLite, {mode}", r))
        if not args.no_floors:
            rows.append(("floor: vetbot app, turns answered at once", bench_floor("gateway", args, tmp)))
            rows.append(("floor: aiohttp POST -> success", bench_floor("aiohttp", args, tmp)))
        if not args.no_werobot:
            r2 = bench_werobot(args, tmp)
            if r2:
                rows.append(("WeRoBot echo, gunicorn -w 2 (reference)", r2))
    print(f"\nwebhook benchmark: {args.connections} connections, {args.duration} s, {args.users} users, "
          f"{os.cpu_count()} cores\n")
    print(f"{'server':44} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'answered':>9} {'committed':>10}"
          f" {'CPU µs/msg':>11}")
    for name, r in rows:
        committed = r.get("turns_committed", "-")
        cpu = f"{r['cpu_us']:.0f}" if "cpu_us" in r else "-"
        label = f"{name} [other msgs]" if "q_rps" in r else name
        print(f"{label:44} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} {int(r['errors']):7d} {int(r['total']):9d}"
              f" {committed!s:>10} {cpu:>11}")
        if "q_rps" in r:
            print(f"{'  … the free-text questions':44} {r['q_rps']:9.0f} {r['q_p50']:8.2f} {r['q_p99']:8.2f} "
                  f"{int(r['q_errors']):7d} {int(r['q_total']):9d} {'':>10} {'':>11}")
    if args.questions:
        print("\n--questions: two wrk processes at once, half the connections each; [other msgs] = the menu/command"
              " messages,\ntheir p99 is the figure that must stay low while questions are answered (target ≤ 30 ms).")
    if not args.no_floors:
        print("\nfloor rows (bench/floors.py, plain mode): the same requests against vetbot's app with every turn answered at"
              " once\n(signature, wechatpy parse and reply, aiohttp; no database) and against a bare aiohttp handler: the"
              " rest of a\nmessage's CPU is its turn.")
    print("\nanswered = replies wrk received; committed = turns durably stored (>= answered: a reply leaves only"
          " after its commit;\nthe difference is requests in flight when wrk stopped). CPU µs/msg = the server process's user+system CPU"
          "\nper answered message: steadier than msgs/s on a shared VM.")


if __name__ == "__main__":
    main()
