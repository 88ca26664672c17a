"""`vetbot callup`: create, watch, close and audit emergency call-ups (应急集结) from the terminal."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("callup", help="应急集结：发起、状态、结束、列表、审计、统计",
                       description="Emergency call-ups of the volunteer teams.")
    csub = c.add_subparsers(dest="callup_cmd", required=True)
    cr = csub.add_parser("create", help="create a call-up and queue its pushes; prints the id",
                         description="Targets every available member of the teams and queues an emergency "
                                     "push to each (delivered by the outbox sender of `vetbot serve`).")
    add_config(cr)
    cr.add_argument("--title", required=True)
    cr.add_argument("--place", required=True)
    cr.add_argument("--assemble-at", required=True, metavar="TIME", help="local time, YYYY-MM-DD HH:MM")
    cr.add_argument("--needed", required=True, type=int, help="how many people in total")
    cr.add_argument("--skill", action="append", default=[], metavar="SKILL=N",
                    help="at least N of them with SKILL (repeatable), e.g. --skill 驾驶=2")
    cr.add_argument("--teams", default="all", help="team names or townships, comma-separated, or 'all' (default)")
    cr.add_argument("--widen", action="append", default=None, metavar="TEAMS",
                    help="escalation: widen to these teams/townships (repeatable, in order); default: the "
                         "other teams of the same townships, then all teams")
    cr.add_argument("--type", dest="kind", default=None, help="call-up type (callup.kinds; default: the last, 其他)")
    cr.add_argument("--drill", action="store_true", help="a drill (演练): marked in every text, kept out of stats")
    cr.add_argument("--json", action="store_true")
    cr.set_defaults(func=_create)

    st = csub.add_parser("status", help="the live roster of a call-up")
    add_config(st)
    st.add_argument("id", type=int)
    st.add_argument("--members", action="store_true", help="list every member and answer")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)

    cl = csub.add_parser("close", help="close a call-up (everyone coming is told it is over)")
    add_config(cl)
    cl.add_argument("id", type=int)
    cl.add_argument("--by", default="cli", help="who closes it (audit trail)")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=_close)

    ls = csub.add_parser("list", help="active call-ups (--all: every one)")
    add_config(ls)
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    au = csub.add_parser("audit", help="every event, answer and push (channel, result) of a call-up")
    add_config(au)
    au.add_argument("id", type=int)
    au.add_argument("--json", action="store_true")
    au.set_defaults(func=_audit)

    sa = csub.add_parser("stats", help="response statistics of real call-ups (drills excluded)")
    add_config(sa)
    sa.add_argument("--drills", action="store_true", help="statistics of the drills instead")
    sa.add_argument("--json", action="store_true")
    sa.set_defaults(func=_stats)


def _fail(msg: str) -> int:
    print(f"vetbot: {msg}", file=sys.stderr)
    return 2


def _services(cfg: Any, db: Any) -> Any:
    from bot.clock import SystemClock
    from flows.api import Services

    return Services(config=cfg, clock=SystemClock(), db=db)


def _create(args: argparse.Namespace) -> int:
    from flows.callup import service
    from flows.callup.parse import ParseError, parse_cli_time, parse_skill_option
    from flows.callup.staff import resolve_teams

    cfg = config_of(args)
    try:
        when = parse_cli_time(args.assemble_at, cfg.bot.timezone)
        skills: dict[str, int] = {}
        for opt in args.skill:
            name, k = parse_skill_option(opt, cfg.callup.skills)
            skills[name] = skills.get(name, 0) + k
    except ParseError as e:
        return _fail(str(e))
    kind = args.kind or cfg.callup.kinds[-1]
    if kind not in cfg.callup.kinds:
        return _fail(f"--type {kind!r}: unknown; known: {', '.join(cfg.callup.kinds)} (callup.kinds)")
    if args.needed < 1:
        return _fail("--needed must be at least 1")
    if any(k > args.needed for k in skills.values()):
        return _fail("--skill: a skill needs more people than --needed")

    async def go() -> int:
        async with database(cfg) as db:
            services = _services(cfg, db)
            now = services.clock.now()
            async with db.session() as s:
                team_ids = None
                if args.teams.strip().lower() not in ("all", "全部"):
                    teams, problems = await resolve_teams(s, args.teams)
                    if problems or not teams:
                        return _fail("--teams: " + "; ".join(problems or ["no team given"]))
                    team_ids = [t.id for t in teams]
                widen = None
                if args.widen:
                    widen = []
                    for w in args.widen:
                        teams, problems = await resolve_teams(s, w)
                        if problems:
                            return _fail("--widen: " + "; ".join(problems))
                        widen.append([t.id for t in teams])
                spec = service.CallupSpec(kind=kind, title=args.title, place=args.place, assemble_at=when,
                                          needed=args.needed, skills_needed=skills, team_ids=team_ids,
                                          drill=args.drill, created_by="cli", widen=widen)
                try:
                    c = await service.create_callup(s, services, spec, now)
                except service.CallupError as e:
                    return _fail(str(e))
                r = await service.roster(s, services, c, now)
                r["chain"] = [service.step_label(x) for x in c.chain]
                r["roster_url"] = service.roster_link(cfg, c, now)
        if args.json:
            emit(r, True, str)
        else:
            print(c.id)
            sms = r["sms"]["sent"] + r["sms"]["waiting"]
            print(f"call-up #{c.id} created: {r['targets']} targeted ({sms} without WeChat reached by SMS, "
                  f"{r['unreachable']} without WeChat to phone, {r['skipped_away']} on leave skipped); "
                  f"escalation: {' → '.join(r['chain'])}", file=sys.stderr)
        return 0

    return run(go())


async def _roster(cfg: Any, callup_id: int, members: bool = False) -> dict[str, Any] | None:
    from flows.callup import service
    from flows.callup.texts import roster_text
    from storage.callup import CallUp

    async with database(cfg) as db:
        services = _services(cfg, db)
        async with db.session() as s:
            c = await s.get(CallUp, callup_id)
            if c is None:
                return None
            r = await service.roster(s, services, c, services.clock.now())
            if members:
                r["members"] = await service.roster_members(s, c)
            r["_text"] = roster_text(c, r, cfg.bot.timezone)
            return r


#: The outbox status of a member's call-up SMS, as `vetbot callup status --members` prints it.
SMS_WORDS = {"sent": "已发", "pending": "待发", "sending": "发送中", "failed": "失败", "cancelled": "未发"}


def _status(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    r = run(_roster(cfg, args.id, args.members))
    if r is None:
        return _fail(f"no call-up #{args.id} (see vetbot callup list --all)")
    text = r.pop("_text")
    if args.json:
        emit(r, True, str)
        return 0
    print(text)
    for m in r.get("members", []):
        from flows.callup.texts import STATUS_WORDS

        eta = f" {m['eta_min']}分" if m["eta_min"] else ""
        how = "" if m["bound"] else "\t(未绑定" + (f"·短信{SMS_WORDS.get(m['sms'], m['sms'])}" if m["sms"] else "") + ")"
        if m["by_sms"]:
            how += "\t(短信回复)"
        print(f"  {STATUS_WORDS[m['status']]}{eta}\t{m['name']}\t{m['phone']}\t{m['team']}\t{'|'.join(m['skills'])}"
              + how)
    return 0


def _close(args: argparse.Namespace) -> int:
    from flows.callup import service

    cfg = config_of(args)

    async def go() -> int:
        async with database(cfg) as db:
            services = _services(cfg, db)
            async with db.session() as s:
                try:
                    c, r, closed_now = await service.close_callup(s, services, args.id, args.by, services.clock.now())
                except service.CallupError:
                    return _fail(f"no call-up #{args.id} (see vetbot callup list --all)")
        if args.json:
            emit({**r, "closed_now": closed_now}, True, str)
        else:
            print(f"call-up #{c.id} {'closed' if closed_now else 'was already closed'}: confirmed {r['confirmed']}, "
                  f"late {r['late']}, declined {r['declined']}, no answer {r['no_answer']}, standby {r['standby']}"
                  + (f"; told {r['told']} member(s) coming" if closed_now else ""))
        return 0

    return run(go())


def _list(args: argparse.Namespace) -> int:
    from flows.callup import service
    from storage.callup import list_callups

    cfg = config_of(args)

    async def go() -> list[dict[str, Any]]:
        async with database(cfg) as db:
            services = _services(cfg, db)
            async with db.session() as s:
                out = []
                for c in await list_callups(s, active_only=not args.all):
                    r = await service.roster(s, services, c)
                    out.append({k: r[k] for k in ("id", "state", "title", "kind", "drill", "place", "assemble_at",
                                                  "needed", "confirmed", "late", "declined", "no_answer", "standby",
                                                  "created_at")})
                return out

    rows = run(go())
    emit(rows, args.json, lambda rs: "\n".join(
        f"#{r['id']}\t{r['state']}\t{'[演练] ' if r['drill'] else ''}{r['title']}\t{r['place']}\t{r['assemble_at']}\t"
        f"到 {r['confirmed']}/{r['needed']} 晚到 {r['late']} 不能到 {r['declined']} 未回复 {r['no_answer']}"
        for r in rs) or "(no active call-ups; --all lists closed ones too)")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from flows.callup import audit

    cfg = config_of(args)

    async def go() -> list[dict[str, Any]] | None:
        async with database(cfg) as db, db.session() as s:
            return await audit.trail(s, args.id, cfg.bot.timezone)

    rows = run(go())
    if rows is None:
        return _fail(f"no call-up #{args.id} (see vetbot callup list --all)")
    emit(rows, args.json, lambda rs: "\n".join(audit.line(r) for r in rs))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from flows.callup import audit

    cfg = config_of(args)

    async def go() -> dict[str, Any]:
        async with database(cfg) as db, db.session() as s:
            return await audit.stats(s, drills=args.drills)

    st = run(go())
    emit(st, args.json, audit.stats_text)
    return 0
