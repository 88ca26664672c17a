"""`vetbot teams`: import the volunteer roster (CSV), list teams, print a team's QR scene and code."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sqlalchemy import func, select

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


def _import(args: argparse.Namespace) -> int:
    def done(report: Any) -> list[str]:
        if report.details.get("teams_created"):
            return ["print binding codes and QR scenes with: vetbot teams list / vetbot teams qr TEAM"]
        return []

    return run_import(args, "roster", dry_run=args.dry_run, done=done)


async def team_rows(s: Any, now: Any) -> list[dict[str, Any]]:
    from storage.callup import Member, Team

    counts = {tid: (n, b) for tid, n, b in (await s.execute(
        select(Member.team_id, func.count(Member.id), func.count(Member.openid)).group_by(Member.team_id))).all()}
    away = dict((await s.execute(select(Member.team_id, func.count(Member.id))
                                 .where(Member.away_until > now).group_by(Member.team_id))).all())
    out = []
    for t in (await s.execute(select(Team).order_by(Team.id))).scalars():
        n, b = counts.get(t.id, (0, 0))
        out.append({"id": t.id, "name": t.name, "township": t.township, "leader": t.leader, "code": t.code,
                    "scene": f"team:{t.id}", "members": n, "bound": b, "away": away.get(t.id, 0)})
    return out


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
    from storage.callup import Team, team_by_ref

    cfg = config_of(args)

    async def go() -> dict[str, Any] | None:
        async with database(cfg) as db, db.session() as s:
            t = await team_by_ref(s, args.team)
            if t is None:
                return None
            if args.new_code:
                taken = set((await s.execute(select(Team.code))).scalars())
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
