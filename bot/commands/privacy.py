"""个人信息保护 commands: ``vetbot users erase / export`` (added to the users group) and ``vetbot privacy
tables / purge / check``."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from bot.commands.common import add_config, config_of, database, emit, run


def add_users_commands(usub: argparse._SubParsersAction) -> None:
    """``vetbot users erase`` and ``vetbot users export`` (called by the users group in core.py)."""
    e = usub.add_parser("erase", help="erase everything stored about a user (个人信息删除), recorded in the audit log",
                        description="Erase a person's personal data in every table, as 注销 does in chat: profile, "
                                    "conversations, tickets, pushes, subscriptions, consent, 寄语; tribute and call-up "
                                    "counts stay anonymous; a team roster entry is unbound (staff are told). The erasure "
                                    "is written to the audit log (privacy_erasures) with --by.")
    add_config(e)
    e.add_argument("openid")
    e.add_argument("--by", default="cli", help="who runs the erasure, for the audit log (e.g. 张科员)")
    e.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    e.add_argument("--dry-run", action="store_true", help="show what would be erased, change nothing")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_erase)
    x = usub.add_parser("export", help="everything stored about a user as JSON (个人信息查阅、复制)",
                        description="Print (or write with --out) the same JSON document the person downloads from "
                                    "their 我的数据 page: every table, with purpose, legal basis and retention.")
    add_config(x)
    x.add_argument("openid")
    x.add_argument("--out", help="write to this file instead of stdout")
    x.set_defaults(func=_export)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("privacy", help="个人信息保护：数据清单、保存期限、立即清理",
                       description="Personal data (个人信息保护法): what each table holds and how long, the retention "
                                   "purge and the declarations check.")
    psub = p.add_subparsers(dest="privacy_cmd", required=True)
    t = psub.add_parser("tables", help="every table: what it holds, purpose, legal basis, retention, erasure")
    add_config(t)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_tables)
    g = psub.add_parser("purge", help="run the retention purge now (the privacy_retention job)")
    add_config(g)
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=_purge)
    c = psub.add_parser("check", help="every table and text column has a personal-data declaration (exit 1 if not)")
    add_config(c)  # accepted like every command's (the check reads the models, not a database)
    c.set_defaults(func=_check)


def _erase(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.privacy.service import compact, erase_person
    from flows.privacy.texts import summary_lines
    from storage.privacy import collect

    cfg = config_of(args)

    async def preview() -> list[str]:
        async with database(cfg) as db, db.session() as s:
            return summary_lines(await collect(s, args.openid), cfg.bot.timezone)

    lines = run(preview())
    if not lines:
        print(f"vetbot: nothing is stored about {args.openid!r}", file=sys.stderr)
        return 1
    if not args.json:
        print("\n".join(lines))
    if args.dry_run:
        return 0
    if not args.yes and input("erase all of this? type yes: ").strip().lower() not in ("yes", "y", "确认"):
        print("nothing erased")
        return 1

    async def go() -> Any:
        now = SystemClock().now()
        async with database(cfg) as db:
            async with db.session() as s:
                report = await erase_person(s, args.openid, by=f"staff:{args.by}", now=now)
            try:
                await compact(db, now)  # the erased bytes leave the SQLite file now, not at the next tick
            except (OSError, sqlite3.Error, SQLAlchemyError) as e:
                # A running `vetbot serve` holds the file: its privacy_compact job does it within a minute.
                print(f"vetbot: erased; compaction left to the running bot ({type(e).__name__})", file=sys.stderr)
            return report

    report = run(go())
    emit(report.as_dict(), args.json, lambda _: "\n".join(
        [f"erased (audit log #{report.log_id}, pseudonym {report.pseudonym}):", *report.lines_zh()]
        + ([f"staff told: {len(report.roster)} roster entry/entries unbound"] if report.roster else [])))
    return 0


def _export(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.privacy.service import export, export_json

    cfg = config_of(args)

    async def go() -> str:
        async with database(cfg) as db, db.session() as s:
            return export_json(await export(s, args.openid, cfg, SystemClock().now()))

    text = run(go())
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"written to {args.out}")
    else:
        print(text)
    return 0


def tables_rows(cfg: Any) -> list[dict[str, Any]]:
    """One row per table for auditors (the README table is this)."""
    from flows.privacy.texts import erasure_of, retention_of, retention_values
    from storage.privacy import declarations

    days = retention_values(cfg)
    out = []
    for name, d in declarations().items():
        if d.no_personal_data:
            out.append({"table": name, "label": d.label, "personal_data": False, "note": d.no_personal_data})
            continue
        out.append({"table": name, "label": d.label, "personal_data": True, "purpose": d.purpose,
                    "legal_basis": d.basis, "retention": retention_of(d, days), "seen_by": d.seen_by,
                    "identifies_by": d.subject or (f"via {d.via[1]}" if d.via else ""),
                    "on_erase": erasure_of(d)})
    return out


def _tables(args: argparse.Namespace) -> int:
    rows = tables_rows(config_of(args))
    emit(rows, args.json, lambda rs: "\n".join(
        f"{r['table']}\t{r['label']}\t" + (f"{r['retention']}\t{r['on_erase']}" if r["personal_data"] else "无个人信息")
        for r in rs))
    return 0


def _purge(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from storage.privacy import purge

    cfg = config_of(args)

    async def go() -> dict[str, int]:
        async with database(cfg) as db, db.session() as s:
            return await purge(s, SystemClock().now(), cfg.privacy.retention_days())

    done = run(go())
    emit(done, args.json, lambda d: "\n".join(f"{k}\t{n}" for k, n in sorted(d.items())) or "nothing to purge")
    return 0


def _check(args: argparse.Namespace) -> int:
    from storage.privacy import check

    problems = check()
    for p in problems:
        print(p)
    print("ok: every table is declared" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0
