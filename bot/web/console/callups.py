"""应急集结 in the console: create (the chat's fields and checks), a live board per call-up (by skill, ETA,
unbound members to phone; refreshed by ``/static/refresh.js``, or a meta refresh without JavaScript),
close, and the audit trail. The operations are :mod:`flows.callup.service`'s, as in chat and CLI.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy
from sqlalchemy import select

from bot.clock import fmt_local
from bot.web.console.base import Console, field, form, int_or_none, see_other, staff_of
from flows.broadcast.service import CHANNEL_WORDS
from flows.broadcast.service import STATUS_WORDS as PUSH_WORDS
from flows.callup import audit as trail
from flows.callup import service, texts
from flows.callup.parse import ParseError, parse_need, parse_when
from flows.callup.staff import team_headcount
from storage.callup import CallUp, Member, Team
from storage.console import audit
from storage.models import User

EVENT_WORDS = {"created": "发起集结", "no_targets": "没有可通知的队员", "renotified": "再次提醒未回复人员",
               "widened": "扩大通知范围", "filled": "人数已满", "promoted": "备用人员补上", "reopened": "人数不足，重新开放",
               "staff_alert": "提醒工作人员：升级时限已到", "closed": "结束集结"}
DETAIL_WORDS = {"targets": "通知人数", "skipped_away": "请假未通知", "unbound": "未绑定微信", "sms": "已发短信",
                "chain": "升级顺序",
                "scope": "队伍", "told": "已告知", "confirmed": "到", "late": "晚到", "members": "人数", "step": "步骤",
                "n": "第几次", "teams": "队伍编号"}
PURPOSE_WORDS = {"callup": "集结通知", "callup_progress": "集结进度（工作人员）", "callup_sms": "集结短信（未绑定微信）"}
GROUPS = (("confirmed", "到"), ("late", "晚到"), ("pending_bound", "未回复（已通知）"),
          ("pending_sms", "未回复 · 未绑定微信，已发短信"),
          ("pending_unbound", "未回复 · 未绑定微信，请电话通知"), ("declined", "不能到"), ("standby", "备用"))


def _values(c: Console, data: MultiDictProxy[Any] | None) -> dict[str, Any]:
    g = (lambda n, lim=200: field(data, n, lim)) if data is not None else (lambda n, lim=200: "")
    v: dict[str, Any] = {n: g(n) for n in ("kind", "title", "place", "time", "needed", "scope", "drill")}
    v["skills"] = {sk: g(f"skill_{sk}", 5) for sk in c.cfg.callup.skills}
    v["teams"] = [t for t in (data.getall("teams", []) if data is not None else []) if isinstance(t, str)]
    v["scope"] = "teams" if v["scope"] == "teams" else "all"
    return v


async def _check(c: Console, s: Any, v: dict[str, Any]) -> tuple[dict[str, str], service.CallupSpec | None]:
    """The chat's checks (flows/callup/staff.py) on the form; errors by field, or the spec to create."""
    cfg = c.cfg.callup
    errors: dict[str, str] = {}
    now = c.now()
    if v["kind"] not in cfg.kinds:
        errors["kind"] = "请选择类型。"
    if not 2 <= len(v["place"]) <= 100:
        errors["place"] = "地点请写 2-100 个字，例如：城关镇防汛物资仓库"
    if len(v["title"]) > 30:
        errors["title"] = "标题最多 30 个字。"
    when = parse_when(v["time"].replace("T", " "), now, c.tz) if v["time"] else None
    if when is None:
        errors["time"] = "没看懂时间。请写：立即、30分钟后、20:30、明天7点 或 2026-07-01 08:00"
    elif when < now - timedelta(minutes=5):
        errors["time"] = f"{fmt_local(when, c.tz)} 已经过去了，请重新填写集合时间。"
    needed = int_or_none(v["needed"])
    skills: dict[str, int] = {}
    if needed is None:
        errors["needed"] = "请填写需要的总人数，例如：20"
    else:
        parts = []
        for sk, raw in v["skills"].items():
            k = int_or_none(raw) if raw else 0
            if k is None:
                errors[f"skill_{sk}"] = f"“{sk}”的人数请写数字。"
            elif k:
                parts.append(f"{sk}{k}")
        try:
            needed, skills = parse_need(" ".join([str(needed), *parts]), cfg.skills)
        except ParseError as e:
            errors["needed"] = str(e)
    team_ids: list[int] | None = None
    if v["scope"] == "teams":
        wanted = {i for i in (int_or_none(t) for t in v["teams"]) if i is not None}
        found = list((await s.execute(select(Team.id).where(Team.id.in_(wanted))))
                     .scalars()) if wanted else []
        if not found:
            errors["teams"] = "请至少选择一支队伍，或选“全部队伍”。"
        team_ids = sorted(found)
    if v["drill"] not in ("yes", "no"):
        errors["drill"] = "请选择这次是演练还是真实集结。"
    if errors or when is None or needed is None:
        return errors, None
    return {}, service.CallupSpec(kind=v["kind"], title=v["title"] or f"{v['kind']}集结", place=v["place"],
                                  assemble_at=when, needed=needed, skills_needed=skills, team_ids=team_ids,
                                  drill=v["drill"] == "yes", created_by="")


def _group(members: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    by: dict[str, list[dict[str, Any]]] = {k: [] for k, _ in GROUPS}
    for m in members:
        key = m["status"]
        if key == "pending":
            # An SMS that went or is going out reaches the member; a failed one (or none) needs a call.
            key = ("pending_bound" if m["bound"] else
                   "pending_sms" if m.get("sms") not in (None, "failed", "cancelled") else "pending_unbound")
        by.setdefault(key, []).append(m)
    return [(k, label, sorted(by[k], key=lambda m: (m["team"], m["name"]))) for k, label in GROUPS]


def routes(app: web.Application, c: Console) -> None:
    services = c.rt.services

    async def form_page(request: web.Request, v: dict[str, Any], errors: dict[str, str] | None = None,
                        status: int = 200) -> web.Response:
        async with c.db.session() as s:
            teams = list((await s.execute(select(Team).order_by(Team.township, Team.name))).scalars())
        return c.page(request, "console/callup_new.html", status=status, title="发起集结", v=v, errors=errors or {},
                      teams=teams, kinds=c.cfg.callup.kinds, skills=c.cfg.callup.skills)

    async def index(request: web.Request) -> web.Response:
        async with c.db.session() as s:
            active = await service.active_callups(s)
            boards = [(cu, await service.roster(s, services, cu, c.now())) for cu in active]
            closed = list((await s.execute(select(CallUp).where(CallUp.state == "closed")
                                           .order_by(CallUp.id.desc()).limit(20))).scalars())
            teams = (await s.execute(select(Team.id).limit(1))).first() is not None
        return c.page(request, "console/callups.html", title="应急集结", boards=boards, closed=closed, has_teams=teams,
                      state_words=texts.STATE_WORDS)

    async def new(request: web.Request) -> web.Response:
        return await form_page(request, _values(c, None))

    async def preview(request: web.Request) -> web.Response:
        v = _values(c, await form(request))
        async with c.db.session() as s:
            errors, spec = await _check(c, s, v)
            if spec is None:
                return await form_page(request, v, errors, status=400)
            total, avail, bound = await team_headcount(s, spec.team_ids, c.now())
            names = ("全部队伍" if spec.team_ids is None else "、".join(
                (await s.execute(select(Team.name).where(Team.id.in_(spec.team_ids)).order_by(Team.name))).scalars()))
        return c.page(request, "console/callup_confirm.html", title="确认发起集结", v=v, spec=spec, scope=names,
                      heads={"total": total, "away": total - avail, "unbound": avail - bound, "bound": bound,
                             "sms": service.sms_enabled(services)},
                      drill_word=texts.DRILL)

    async def create(request: web.Request) -> web.Response:
        data = await form(request)
        v = _values(c, data)
        if field(data, "do") == "edit":
            return await form_page(request, v)
        staff = staff_of(request)
        now = c.now()
        async with c.db.session() as s:
            errors, spec = await _check(c, s, v)
            if spec is None:
                return await form_page(request, v, errors, status=400)
            spec.created_by = staff.openid
            try:
                cu = await service.create_callup(s, services, spec, now)
            except service.CallupError as e:
                return await form_page(request, v, {"kind": str(e)}, status=400)
            await audit(s, actor=staff.openid, actor_name=staff.name, action="callup.create", target_type="callup",
                        target_id=cu.id, now=now, summary=f"{texts.label(cu)}，{cu.place}，需要 {cu.needed} 人")
        return see_other(f"/staff/callups/{cu.id}?done=created")

    async def _board(request: web.Request) -> dict[str, Any] | web.Response:
        cid = int_or_none(request.match_info["id"])
        async with c.db.session() as s:
            cu = await s.get(CallUp, cid) if cid is not None else None
            if cu is None:
                return c.message(request, 404, "没有这次集结", "这次集结不存在。", back="/staff/callups")
            r = await service.roster(s, services, cu, c.now())
            members = await service.roster_members(s, cu)
        return {"cu": cu, "r": r, "groups": _group(members), "label": texts.label(cu), "when": texts.when(cu, c.tz),
                "need": texts.need_text(cu), "state_word": texts.STATE_WORDS.get(cu.state, cu.state),
                "status_words": texts.STATUS_WORDS, "live": cu.state != "closed"}

    async def board(request: web.Request) -> web.Response:
        ctx = await _board(request)
        if isinstance(ctx, web.Response):
            return ctx
        return c.page(request, "console/callup_board.html", title=f"集结 #{ctx['cu'].id}",
                      done=request.query.get("done", ""), **ctx)

    async def board_part(request: web.Request) -> web.Response:
        ctx = await _board(request)
        if isinstance(ctx, web.Response):
            return ctx
        return c.page(request, "console/_callup_board.html", **ctx)

    async def close_page(request: web.Request) -> web.Response:
        ctx = await _board(request)
        if isinstance(ctx, web.Response):
            return ctx
        return c.page(request, "console/callup_close.html", title="结束集结", **ctx)

    async def close(request: web.Request) -> web.Response:
        cid = int_or_none(request.match_info["id"])
        staff = staff_of(request)
        now = c.now()
        async with c.db.session() as s:
            try:
                cu, r, closed_now = await service.close_callup(s, services, cid or 0, staff.openid, now)
            except service.CallupError:
                return c.message(request, 404, "没有这次集结", "这次集结不存在。", back="/staff/callups")
            if closed_now:
                await audit(s, actor=staff.openid, actor_name=staff.name, action="callup.close", target_type="callup",
                            target_id=cu.id, now=now, summary=f"{texts.label(cu)}：{texts.counts_line(r)}")
        return see_other(f"/staff/callups/{cu.id}?done={'closed' if closed_now else 'was_closed'}")

    async def audit_page(request: web.Request) -> web.Response:
        cid = int_or_none(request.match_info["id"])
        async with c.db.session() as s:
            cu = await s.get(CallUp, cid) if cid is not None else None
            rows = await trail.trail(s, cu.id, c.tz) if cu is not None else None
            openids = {r.get("openid") or r.get("actor") for r in rows or []} - {None, ""}
            names: dict[str, str] = {}
            if openids:
                names.update((await s.execute(select(User.openid, User.name).where(
                    User.openid.in_(openids), User.name.is_not(None)))).all())
                names.update((await s.execute(select(Member.openid, Member.name).where(
                    Member.openid.in_(openids)))).all())
        if cu is None or rows is None:
            return c.message(request, 404, "没有这次集结", "这次集结不存在。", back="/staff/callups")

        def who(openid: str | None) -> str:
            return names.get(openid or "") or (openid or "")

        def detail(d: dict[str, Any] | None) -> str:
            parts = []
            for k, v in (d or {}).items():
                value = " → ".join(map(str, v)) if k == "chain" and isinstance(v, list) else (
                    "、".join(map(str, v)) if isinstance(v, list) else str(v))
                parts.append(f"{DETAIL_WORDS.get(k, k)}：{value}")
            return "；".join(parts)

        return c.page(request, "console/callup_audit.html", title=f"集结 #{cu.id} 记录", cu=cu, rows=rows,
                      label=texts.label(cu), event_words=EVENT_WORDS, answer_words=texts.ANSWER_WORDS,
                      status_words=texts.STATUS_WORDS, push_words=PUSH_WORDS, channel_words=CHANNEL_WORDS,
                      purpose_words=PURPOSE_WORDS, who=who, detail=detail)

    app.router.add_get("/staff/callups", index)
    app.router.add_get("/staff/callups/new", new)
    app.router.add_post("/staff/callups/preview", preview)
    app.router.add_post("/staff/callups/create", create)
    app.router.add_get("/staff/callups/{id}", board)
    app.router.add_get("/staff/callups/{id}/board", board_part)
    app.router.add_get("/staff/callups/{id}/close", close_page)
    app.router.add_post("/staff/callups/{id}/close", close)
    app.router.add_get("/staff/callups/{id}/audit", audit_page)
