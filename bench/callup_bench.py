"""Call-up benchmark: a county (1,170 members in 32 teams) and a city (20,000 members).

For each database and roster size, on loopback only:

1. the roster is imported with `vetbot teams import` (CSV, validated first);
2. the fake WeChat API (`vetbot fake-wechat --latency-ms 20`) and one `vetbot serve` process (webhook,
   pages, outbox sender at its configured concurrency, scheduler) start;
3. staff create a call-up for all teams through the guided chat flow (signed, encrypted XML); the clock
   starts when the final 确认 is sent and stops when every member's push has been handed to the fake
   WeChat API and accepted (outbox rows ``sent``): "create -> all delivered";
4. every member answers once, half on the answer page (POST /r/<token> with the member's viewer cookie), half in chat (1 / 2 30 / 3),
   all sent by wrk (Debian's ``wrk``; a C load generator, so the client does not eat the server's CPU as a
   Python client on the same 2 cores would) over ``--connections`` connections, each request once;
   latency is wrk's per request (send -> response). The roster is then compared with the answers sent:
   counts must be exact.

Reference figures measured in the same run: the delivery floor that ``outbox.concurrency`` connections
allow at the fake's latency, and GET /healthz latency at the same concurrency (the server's own floor).

    python bench/callup_bench.py [--sizes 1170,20000] [--dbs sqlite,postgresql] [--connections 32]
        [--answers N]   # answers per run (default: every member for the county, 3000 for the city)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bench.common import callback_line, cpu_seconds, free_port, wait_port, wrk_get, wrk_once  # noqa: E402
from bot.config import load_config  # noqa: E402
from bot.fake_wechat import fake_openid  # noqa: E402
from bot.sim import WeChatSide, text_xml  # noqa: E402

PG_ADMIN = os.environ.get("VETBOT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
SKILLS = ["救援", "驾驶", "医护", "水上", "无人机", "电工"]
STAFF = "oFakeVetbotStaff_0000000001"
LATENCY_MS = 20






SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "建国军华明强伟平志勇海峰刚斌林涛磊超鹏飞杰亮东文武红"


def write_roster(path: Path, n: int) -> None:
    teams = 32 if n <= 2000 else max(32, n // 12)
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["team", "name", "phone", "skills", "township", "openid"])
        for i in range(n):
            t = i % teams
            sk = "|".join(sorted({SKILLS[i % 6], SKILLS[(i // 6) % 6]}))
            name = SURNAMES[i % 20] + GIVEN[(i // 20) % len(GIVEN)] + GIVEN[(i // 600) % len(GIVEN)]
            w.writerow([f"第{t + 1:03d}应急队", name, str(13000000000 + i), sk, f"乡镇{t // 2 + 1:02d}",
                        fake_openid(i)])


async def pg_create(name: str) -> str:
    eng = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with eng.connect() as c:
            await c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            await c.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await eng.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def pg_drop(name: str) -> None:
    eng = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with eng.connect() as c:
            await c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await eng.dispose()


class Run:
    """One database x one roster size."""

    def __init__(self, db: str, n: int, answers: int, conns: int, tmp: Path) -> None:
        self.dbkind, self.n, self.answers, self.conns, self.tmp = db, n, answers, conns, tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pg_name: str | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VETBOT_")}
        env.update({
            "PYTHONPATH": str(ROOT), "VETBOT_DATABASE__URL": self.url,
            "VETBOT_WECHAT__API_BASE": f"http://127.0.0.1:{self.fake_port}",
            "VETBOT_SERVER__PUBLIC_URL": f"http://127.0.0.1:{self.port}", "VETBOT_SERVER__PORT": str(self.port),
            "VETBOT_BOT__STAFF_OPENIDS": STAFF, "VETBOT_BOT__FALLBACK_FLOW": "help",
            "VETBOT_SERVER__TIMESTAMP_WINDOW_S": "0", "VETBOT_LOGGING__LEVEL": "WARNING",
        })
        return env

    def vetbot(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args, "-c", str(ROOT / "config.example.yaml")],
                              env=self.env(), cwd=str(ROOT), capture_output=True, text=True, check=False)

    async def setup(self) -> dict[str, Any]:
        self.port, self.fake_port = free_port(), free_port()
        if self.dbkind == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.tmp / f'bench_{self.n}.db'}"
        else:
            self.pg_name = f"vetbot_bench_{os.getpid()}_{self.n}"
            self.url = await pg_create(self.pg_name)
        return await asyncio.to_thread(self._prepare)

    def _prepare(self) -> dict[str, Any]:
        """Blocking part of the set-up: schema, roster import, fake WeChat and the server processes."""
        cfg_path = str(ROOT / "config.example.yaml")
        r = self.vetbot("db", "upgrade")
        if r.returncode:
            raise SystemExit(r.stderr)
        csv_path = self.tmp / f"roster_{self.n}.csv"
        write_roster(csv_path, self.n)
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "bot.cli", "teams", "import", "-c", cfg_path, str(csv_path)],
                           env=self.env(), cwd=str(ROOT), capture_output=True, text=True, check=False)
        import_s = time.perf_counter() - t
        if r.returncode:
            raise SystemExit(r.stderr)
        fake = subprocess.Popen([sys.executable, "-m", "bot.cli", "fake-wechat", "--port", str(self.fake_port),
                                 "--latency-ms", str(LATENCY_MS)], env=self.env(), cwd=str(ROOT),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(fake)
        wait_port(self.fake_port, fake)
        serve = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "-c", cfg_path, "--port", str(self.port)],
                                 env=self.env(), cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(serve)
        wait_port(self.port, serve)
        self.cfg = load_config(cfg_path, self.env())
        self.side = WeChatSide(self.cfg)
        return {"import_s": import_s}

    def _stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    async def close(self) -> None:
        await asyncio.to_thread(self._stop)
        if self.pg_name:
            await pg_drop(self.pg_name)

    async def chat(self, http: aiohttp.ClientSession, openid: str, content: str) -> tuple[int, str]:
        s = self.side.sign(text_xml(openid, content))
        async with http.post(f"http://127.0.0.1:{self.port}{self.cfg.server.path}", params=s.query,
                             data=s.body.encode()) as resp:
            body = await resp.text()
            reply = self.side.read_reply(body) if resp.status == 200 else None
            return resp.status, str((reply or {}).get("Content") or "")

    async def fan_out(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        from storage.db import Database
        from storage.models import OutboxMessage

        for msg in ("发起集结", "5", "城关镇防汛大堤", "立即", str(self.n // 2), "1", "2"):
            status, reply = await self.chat(http, STAFF, msg)
            assert status == 200, reply
        t0 = time.perf_counter()
        status, reply = await self.chat(http, STAFF, "1")
        created_s = time.perf_counter() - t0
        # An empty reply: the turn ran past server.reply_budget_s, WeChat got `success` and the confirmation
        # goes out as a late customer-service push (the call-up itself is committed either way).
        late = status == 200 and reply == ""
        assert status == 200 and ("已发起集结" in reply or late), reply
        db = Database(self.url)
        try:
            while True:
                async with db.session() as s:
                    sent = (await s.execute(select(func.count()).select_from(OutboxMessage).where(
                        OutboxMessage.purpose == "callup", OutboxMessage.status == "sent"))).scalar() or 0
                if sent >= self.n:
                    break
                if time.perf_counter() - t0 > 600:
                    raise SystemExit(f"only {sent}/{self.n} delivered after 600 s")
                await asyncio.sleep(0.02)
        finally:
            await db.close()
        return {"create_reply_s": created_s, "late_reply": late, "delivered_s": time.perf_counter() - t0}

    async def answer_all(self) -> dict[str, Any]:
        from bot.links import answer_links
        from bot.web.viewer import VIEWER_KIND, VIEWER_TTL
        from flows.callup import service
        from storage import linktokens
        from storage.callup import CallUp, Member
        from storage.db import Database

        db = Database(self.url)
        try:
            async with db.session() as s:
                c = (await s.execute(select(CallUp).order_by(CallUp.id.desc()).limit(1))).scalar_one()
                members = list((await s.execute(select(Member.id, Member.openid).order_by(Member.id)
                                                .limit(self.answers))).all())
                # The page checks who answers (bot.web.viewer): each page answer carries the viewer cookie
                # its member would have after the OAuth round trip (one more database read per answer).
                now = c.created_at
                urls = await answer_links(s, self.cfg, c, [(m, o) for m, o in members], now)
                cookies = dict(zip([m for m, _ in members], await linktokens.issue_many(
                    s, VIEWER_KIND, [(o or "", {"m": m, "via": "oauth"}) for m, o in members], VIEWER_TTL, now=now),
                    strict=True))
        finally:
            await db.close()
        expect = {"yes": 0, "late": 0, "no": 0}
        chat_words = {"yes": "1", "late": "2 30", "no": "3"}
        reqfile = self.tmp / f"answers_{self.dbkind}_{self.n}.tsv"
        with reqfile.open("w", encoding="utf-8") as f:
            for i, (mid, openid) in enumerate(members):
                a = "yes" if i % 10 < 6 else "late" if i % 10 < 8 else "no"
                expect[a] += 1
                if i % 2 == 0:  # the answer page
                    url = urls[mid]
                    form = urlencode({"a": a, **({"eta": "30"} if a == "late" else {})})
                    f.write(f"{url[url.index('/r/'):]}\t{form}\tapplication/x-www-form-urlencoded"
                            f"\tvb_who={cookies[mid]}\n")
                else:  # chat: signed, encrypted callback
                    f.write(callback_line(self.side, text_xml(openid, chat_words[a]), self.cfg.server.path))
        counter = create_async_engine(self.url)

        async def done() -> bool:
            async with counter.connect() as conn:
                got = (await conn.execute(text("select count(*) from callup_answers where callup_id = :c"),
                                          {"c": c.id})).scalar()
            return bool(got and got >= len(members))

        base = f"http://127.0.0.1:{self.port}"
        serve_pid = self.procs[-1].pid
        cpu0 = cpu_seconds(serve_pid)
        try:
            w = await wrk_once(base, reqfile, self.conns, done)
            cpu_ms = (cpu_seconds(serve_pid) - cpu0) / len(members) * 1000
        finally:
            await counter.dispose()
        db = Database(self.url)
        try:
            async with db.session() as s:
                from bot.clock import SystemClock
                from flows.api import Services

                c = await s.get(CallUp, c.id)
                r = await service.roster(s, Services(config=self.cfg, clock=SystemClock()), c)
        finally:
            await db.close()
        needed = c.needed
        want = {"confirmed": min(needed, expect["yes"]), "standby": max(0, expect["yes"] - needed),
                "late": expect["late"], "declined": expect["no"], "no_answer": self.n - len(members)}
        got = {k: r[k] for k in want}
        ref = await wrk_get(base + "/healthz", self.conns, 3)  # the server's own floor at the same concurrency
        return {"answers": len(members), "wall_s": w["wall_s"], "rps": len(members) / w["wall_s"], "p50": w["p50"],
                "p99": w["p99"], "errors": w["errors"], "exact": got == want and w["complete"], "got": got, "want": want,
                "healthz_p99": ref["p99"], "filled": r["state"] == "filled", "cpu_ms": cpu_ms,
                "busy": cpu_ms * len(members) / 1000 / w["wall_s"]}


async def one(dbkind: str, n: int, answers: int, conns: int, tmp: Path) -> dict[str, Any]:
    run = Run(dbkind, n, answers, conns, tmp)
    try:
        res = {"db": dbkind, "members": n, **await run.setup()}
        conn = aiohttp.TCPConnector(limit=conns + 4)
        async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as http:
            res.update(await run.fan_out(http))
            res["floor_s"] = n / (run.cfg.outbox.concurrency / (LATENCY_MS / 1000))
            res["sender_conc"] = run.cfg.outbox.concurrency
            res.update(await run.answer_all())
        return res
    finally:
        await run.close()


def main() -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1170,20000")
    ap.add_argument("--dbs", default="sqlite,postgresql")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--answers", type=int, default=0, help="answers per run (0: all for <=2000, else 3000)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vetbot_callup_bench_"))
    rows = []
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            for dbkind in args.dbs.split(","):
                answers = args.answers or (n if n <= 2000 else 3000)
                print(f"running {dbkind} {n} members ({answers} answers)…", file=sys.stderr, flush=True)
                rows.append(asyncio.run(one(dbkind, n, min(answers, n), args.connections, tmp)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"fake WeChat latency {LATENCY_MS} ms; answers over {args.connections} connections, all queued at once; "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    hdr = (f"{'db':<10} {'members':>7} {'import s':>8} {'create->reply s':>15} {'create->all sent s':>18} "
           f"{'floor s':>7} | {'answers':>7} {'wall s':>6} {'req/s':>6} {'p50 ms':>6} {'p99 ms':>6} "
           f"{'CPU ms':>6} {'busy':>4} {'healthz p99':>11} {'errors':>6} {'counts':>6}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        reply_s = f"{r['create_reply_s']:.2f}" + (" late" if r["late_reply"] else "")
        print(f"{r['db']:<10} {r['members']:>7} {r['import_s']:>8.2f} {reply_s:>15} "
              f"{r['delivered_s']:>18.2f} {r['floor_s']:>7.2f} | {r['answers']:>7} {r['wall_s']:>6.2f} "
              f"{r['rps']:>6.0f} {r['p50']:>6.1f} {r['p99']:>6.1f} {r['cpu_ms']:>6.2f} {r['busy']:>4.0%} "
              f"{r['healthz_p99']:>11.1f} {r['errors']:>6} {'exact' if r['exact'] else 'WRONG':>6}")
        if not r["exact"]:
            print(f"   got {r['got']} want {r['want']}")
    print("CPU ms = the server process's CPU per answer; busy = its CPU time / wall time while answers ran (1 core = 100%)")
    print("floor = members / (outbox.concurrency / latency): the fastest any sender can hand them over")
    print("late = the confirming turn ran past server.reply_budget_s: WeChat got `success` at the budget and the "
          "confirmation went out as a customer-service push")


if __name__ == "__main__":
    main()
