"""`vetbot teams`: import the volunteer roster (CSV), list teams, print a team's QR scene and code, and
decide binding requests that wait for approval."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run
from bot.commands.imports import add_import_args, run_import


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("teams", help="应急队伍：导入名册、列表、二维码场景与队伍码",
                       description="Volunteer teams for call-ups (应急集结).")
    tsub = t.add_subparsers(dest="teams_cmd", required=True)
    i = tsub.add_parser("import", help="import FILE.csv (team,name,phone,skills,township[,openid][,leader])",
                        description="Columns in any order, Chinese names too (队伍,姓名,手机号,技能,乡镇,openid,队长); "
                                    "UTF-8, UTF-8 with BOM or GBK/GB18030. Every row is checked first and every "
                                    "problem listed as 'line N, column X: …'; nothing is imported while any row "
                                    "is bad. Re-importing updates members by phone, never duplicates.")
    add_config(i)
    add_import_args(i)
    i.set_defaults(func=_import)
    ls = tsub.add_parser("list", help="teams with member, bound and on-leave counts and binding codes")
    add_config(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    qr = tsub.add_parser("qr", help="print a team's QR scene string and binding code")
    add_config(qr)
    qr.add_argument("team", help="team name, id or code")
    qr.add_argument("--new-code", action="store_true", help="issue a new binding code (the old one stops working)")
    qr.add_argument("--json", action="store_true")
    qr.set_defaults(func=_qr)
    rq = tsub.add_parser("requests", help="binding requests waiting for approval (no SMS set up)",
                         description="Members asked to bind their WeChat (绑定) and wait for a leader or staff to "
                                     "approve. Phone the member first, then approve or reject.")
    add_config(rq)
    rq.add_argument("--json", action="store_true")
    rq.set_defaults(func=_requests)
    for verb, helptext in (("approve", "approve a binding request (after phoning the member)"),
                           ("reject", "reject a binding request (the member is told)")):
        p = tsub.add_parser(verb, help=helptext)
        add_config(p)
        p.add_argument("id", type=int, help="request id (see vetbot teams requests)")
        p.add_argument("--by", default="cli", help="who decides (audit trail)")
        p.set_defaults(func=_decide, approve=verb == "approve")


def _import(args: argparse.Namespace) -> int:
    def done(report: Any) -> list[str]:
        if report.details.get("teams_created"):
            return ["print binding codes and QR scenes with: vetbot teams list / vetbot teams qr TEAM"]
        return []

    return run_import(args, "roster", dry_run=args.dry_run, done=done)


async def team_rows(s: Any, now: Any) -> list[dict[str, Any]]:
    """The rows `vetbot teams list` prints (see :func:`storage.callup.team_summaries`)."""
    from storage.callup import team_summaries

    return await team_summaries(s, now)


def _list(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock

    cfg = config_of(args)

    async def go() -> list[dict[str, Any]]:
        async with database(cfg) as db, db.session() as s:
            return await team_rows(s, SystemClock().now())

    rows = run(go())
    emit(rows, args.json, lambda rs: "\n".join(
        f"#{r['id']}\t{r['name']}\t{r['township']}\t队长 {r['leader'] or '-'}\t码 {r['code']}\t"
        f"{r['members']} 人（已绑定 {r['bound']}，请假 {r['away']}）" for r in rs) or "(no teams; run vetbot teams import)")
    return 0


def _qr(args: argparse.Namespace) -> int:
    from flows.callup.roster import new_code
    from storage.callup import team_by_ref, team_codes

    cfg = config_of(args)

    async def go() -> dict[str, Any] | None:
        async with database(cfg) as db, db.session() as s:
            t = await team_by_ref(s, args.team)
            if t is None:
                return None
            if args.new_code:
                taken = await team_codes(s)
                t.code = new_code(taken)
            scene = f"team:{t.id}"
            return {"id": t.id, "name": t.name, "scene": scene, "code": t.code,
                    "qrcode_create": {"action_name": "QR_LIMIT_STR_SCENE",
                                      "action_info": {"scene": {"scene_str": scene}}}}

    info = run(go())
    if info is None:
        print(f"vetbot: no team {args.team!r} (see vetbot teams list)", file=sys.stderr)
        return 2
    emit(info, args.json, lambda i: "\n".join([
        f"team #{i['id']} {i['name']}",
        f"scene:  {i['scene']}",
        f"code:   {i['code']}      (members send: 绑定 {i['code']})",
        "QR:     POST /cgi-bin/qrcode/create with "
        f'{{"action_name": "QR_LIMIT_STR_SCENE", "action_info": {{"scene": {{"scene_str": "{i["scene"]}"}}}}}}',
        "        (a permanent parameter QR code; scanning it binds the member to this team)",
    ]))
    return 0


def _requests(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock, fmt_local
    from flows.api import Services
    from flows.callup import binding

    cfg = config_of(args)

    async def go() -> list[dict[str, Any]]:
        now = SystemClock().now()
        async with database(cfg) as db, db.session() as s:
            services = Services(config=cfg, clock=SystemClock(), db=db)
            return [{"id": r.id, "team": t.name, "name": m.name, "phone": m.phone, "rebind": m.openid is not None,
                     "created_at": fmt_local(r.created_at, cfg.bot.timezone, "%Y-%m-%d %H:%M")}
                    for r, m, t in await binding.pending(s, services, now, None)]

    rows = run(go())
    emit(rows, args.json, lambda rs: "\n".join(
        f"#{r['id']}\t{r['created_at']}\t{r['team']}\t{r['name']}\t{r['phone']}"
        + ("\t(already bound to another WeChat: approving moves it)" if r["rebind"] else "") for r in rs)
        or "(no binding requests waiting)")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.api import Services
    from flows.callup import binding

    cfg = config_of(args)

    async def go() -> Any:
        async with database(cfg) as db, db.session() as s:
            services = Services(config=cfg, clock=SystemClock(), db=db)
            return await binding.decide(s, services, args.id, args.approve, SystemClock().now(), by=args.by,
                                        allowed_teams=None)

    d = run(go())
    if not d.done:
        print(f"vetbot: request #{args.id}: {d.reply}", file=sys.stderr)
        return 2
    print(d.reply)
    return 0
