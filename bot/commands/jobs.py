"""`vetbot jobs`: import postings from a job fair's CSV, list them, end them, see subscription counts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run
from bot.commands.imports import add_import_args, run_import


def register(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("jobs", help="就业岗位：导入招聘会岗位、查看、截止", description="Job postings and alerts.")
    jsub = j.add_subparsers(dest="jobs_cmd", required=True)

    im = jsub.add_parser(
        "import", help="import postings from a CSV and push them to matching subscribers",
        description="Columns: company,title,location,salary_min,salary_max,type,requirements,contact,deadline,"
                    "veteran_priority,source (any order; Chinese names too: 单位,岗位,工作地点,最低月薪,最高月薪,类型,"
                    "要求,联系方式,截止日期,退役军人优先,来源); UTF-8, UTF-8 with BOM or GBK/GB18030. Every row is "
                    "validated first; any bad row stops the import with all problems listed as 'line N, column "
                    "X: …' and nothing stored. The same posting (company + title + location) is updated, never "
                    "stored twice; new postings are matched against subscriptions and their alerts queued in "
                    "the same transaction. HTML in a field is dropped (its text kept).")
    add_config(im)
    add_import_args(im, dry_run_help="validate and show what would change, store nothing")
    im.add_argument("--source", default="", help="source (which fair) for rows whose source column is empty")
    im.add_argument("--skip-expired", action="store_true", help="leave out rows whose deadline has passed")
    im.add_argument("--no-notify", action="store_true", help="store postings without pushing them")
    im.set_defaults(func=_import)

    ls = jsub.add_parser("list", help="list postings (open ones by default, newest first)")
    add_config(ls)
    ls.add_argument("--all", action="store_true", help="include expired postings")
    ls.add_argument("--source", help="only this source (fair)")
    ls.add_argument("--search", help="only postings containing this word")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    ex = jsub.add_parser("expire", help="end postings now (by id or source); cancel queued alerts of ended postings",
                         description="Without --id/--source only cancels queued alerts of postings past their "
                                     "deadline (the jobs_expire job does that every 10 minutes too).")
    add_config(ex)
    ex.add_argument("--id", type=int, action="append", default=[], help="posting id (repeatable)")
    ex.add_argument("--source", help="every posting of this source (e.g. a fair that ended)")
    ex.add_argument("--json", action="store_true")
    ex.set_defaults(func=_expire)

    st = jsub.add_parser("stats", help="postings and subscriptions at a glance")
    add_config(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_stats)


def _fail(msg: str) -> int:
    print(f"vetbot: {msg}", file=sys.stderr)
    return 2


def _import(args: argparse.Namespace) -> int:
    from flows.jobs.alerts import settings

    settings(config_of(args))  # a bad jobs: section is one line and exit 2 before the file is read

    def done(report: Any) -> list[str]:
        d = report.details
        return [f"matched against {d['subscribers']} subscriber(s): {d['matched_users']} with new matches, "
                f"{d['instant_pushes']} instant alert(s) queued, {d['digests_scheduled']} digest(s) scheduled"]

    return run_import(args, "jobs", dry_run=args.dry_run, done=done, default_source=args.source,
                      skip_expired=args.skip_expired, notify=not args.no_notify)


def _list(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.jobs.texts import deadline_text, salary_text
    from storage.jobs import list_postings

    cfg = config_of(args)
    now = SystemClock().now()

    async def go() -> list[dict[str, Any]]:
        async with database(cfg) as db, db.session() as session:
            rows = await list_postings(session, now, include_expired=args.all, source=args.source,
                                       word=args.search, limit=args.limit)
            return [{"id": p.id, "company": p.company, "title": p.title, "location": p.location,
                     "salary": salary_text(p.salary_min, p.salary_max), "type": p.job_type,
                     "deadline": p.deadline.isoformat() if p.deadline else None,
                     "expired": p.expires_at is not None and p.expires_at <= now,
                     "veteran_priority": p.veteran_priority, "source": p.source} for p in rows]

    data = run(go())

    def render(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return "no postings"
        out = []
        for r in rows:
            flag = " [expired]" if r["expired"] else ""
            star = " ★" if r["veteran_priority"] else ""
            dl = deadline_text(None) if r["deadline"] is None else r["deadline"]
            out.append(f"{r['id']:>6}  {r['title']} | {r['company']} | {r['location']} | {r['salary']} | "
                       f"{r['type']} | 截止 {dl}{star}{flag}")
        return "\n".join(out)

    emit(data, args.json, render)
    return 0


def _expire(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.jobs.alerts import expire_due
    from storage.jobs import expire_postings

    cfg = config_of(args)
    now = SystemClock().now()

    async def go() -> dict[str, int]:
        async with database(cfg) as db, db.session() as session:
            ended = await expire_postings(session, now, ids=args.id, source=args.source)
            cancelled = await expire_due(session, now)
            return {"ended": ended, "alerts_cancelled": cancelled}

    data = run(go())
    emit(data, args.json, lambda d: f"ended {d['ended']} posting(s); cancelled {d['alerts_cancelled']} queued alert(s)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from storage.jobs import posting_counts, subscription_counts

    cfg = config_of(args)
    now = SystemClock().now()

    async def go() -> dict[str, Any]:
        async with database(cfg) as db, db.session() as session:
            return {"postings": await posting_counts(session, now), "subscriptions": await subscription_counts(session)}

    data = run(go())
    emit(data, args.json, lambda d: (
        f"postings: {d['postings']['active']} open of {d['postings']['total']}\n"
        "subscriptions: " + (", ".join(f"{k} {v}" for k, v in sorted(d["subscriptions"].items())) or "none")))
    return 0
