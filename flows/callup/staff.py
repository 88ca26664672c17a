"""Staff flows: 发起集结 (guided), 集结状态 (live roster), 结束集结."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flows.api import Context, Flow, flow, fmt_local, parse_yes_no
from flows.callup import service, texts
from flows.callup.parse import ParseError, parse_need, parse_when, split_names
from storage import callup as repo
from storage.callup import CallUp, Team

STAFF = frozenset({"staff"})
EXIT = "（回复“取消”退出，“返回”回到上一步）"


async def resolve_teams(session: Any, text: str) -> tuple[list[Team], list[str]]:
    """Team names, township names or unique parts of team names -> (teams, problems)."""
    teams = await repo.all_teams(session)
    chosen: dict[int, Team] = {}
    problems: list[str] = []
    for token in split_names(text):
        exact = [t for t in teams if t.name == token]
        town = [t for t in teams if t.township == token]
        part = [t for t in teams if token in t.name]
        hit = exact or town or part
        if not hit:
            problems.append(f"没有找到“{token}”")
        elif not exact and not town and len(part) > 1:
            problems.append(f"“{token}”对应多支队伍（{'、'.join(t.name for t in part[:5])}），请写全名")
        else:
            chosen.update((t.id, t) for t in hit)
    return list(chosen.values()), problems


async def team_headcount(session: Any, team_ids: list[int] | None, now: Any) -> tuple[int, int, int]:
    """(members, available, bound-and-available) of the teams (None = all)."""
    return await repo.headcount(session, team_ids, now)


def _reach_line(total: int, avail: int, bound: int, sms: bool) -> str:
    """将通知 N 人（…）: members without WeChat count as reached where SMS is set up."""
    if sms:
        return (f"将通知 {avail} 人（共 {total} 人，请假 {total - avail} 人，其中未绑定微信的 {avail - bound} 人"
                "发短信）")
    return f"将通知 {bound} 人（共 {total} 人，请假 {total - avail} 人，未绑定微信 {avail - bound} 人）"


@flow
class CreateCallup(Flow):
    """发起集结: 类型 → 地点 → 集合时间 → 人数(+技能) → 队伍/乡镇 → 演练? → 确认."""

    name = "callup_create"
    title = "发起集结"
    roles = STAFF

    async def start(self, ctx: Context) -> None:
        if not await repo.team_count(ctx.session):
            ctx.say("还没有任何队伍。请先用命令导入队伍名册：vetbot teams import -c 配置 名册.csv")
            ctx.end()
            return
        await self.prompt(ctx, "kind")

    async def prompt(self, ctx: Context, step: str) -> None:
        cfg = ctx.config.callup
        if step == "kind":
            await ctx.ask("kind", "")
            ctx.choose([(k, k) for k in cfg.kinds], header="【发起集结】请选择类型：", footer="（回复“取消”退出）")
        elif step == "place":
            await ctx.ask("place", f"集合地点？例如：城关镇防汛物资仓库\n{EXIT}")
        elif step == "time":
            await ctx.ask("time", f"集合时间？例如：立即、30分钟后、20:30、明天7点、7月1日 8:00\n{EXIT}")
        elif step == "need":
            await ctx.ask("need", f"需要多少人？可加技能人数，例如：20 或 20 驾驶2 医护1\n"
                                  f"技能：{'、'.join(cfg.skills)}\n{EXIT}")
        elif step == "scope":
            await ctx.ask("scope", "")
            ctx.choose([("全部队伍", "all")], header="通知哪些队伍？",
                       footer="或直接输入队伍名或乡镇名，多个用顿号隔开，例如：城关镇、河东救援队\n" + EXIT)
        elif step == "drill":
            await ctx.ask("drill", "")
            ctx.choose([("演练", True), ("真实集结", False)], header="这次是演练吗？", footer=EXIT)
        elif step == "confirm":
            await ctx.ask("confirm", await self._summary(ctx))
            ctx.choose([("确认发起", "go"), ("不发了", "stop")], header="请确认：")

    async def _summary(self, ctx: Context) -> str:
        s = ctx.slots
        tz = ctx.config.bot.timezone
        team_ids = s.get("team_ids")
        total, avail, bound = await team_headcount(ctx.session, team_ids, ctx.now)
        skills = " ".join(f"{k}{v}" for k, v in (s.get("skills") or {}).items())
        return "\n".join([
            f"{texts.DRILL if s.get('drill') else ''}【{s['kind']}集结】",
            f"地点：{s['place']}",
            f"集合：{fmt_local(_dt(s['time']), tz)}",
            f"需要：{s['needed']}人" + (f"（{skills}）" if skills else ""),
            f"队伍：{s.get('scope_label') or '全部队伍'}",
            _reach_line(total, avail, bound, service.sms_enabled(ctx.services)),
        ])

    async def step(self, ctx: Context) -> None:
        s = ctx.slots
        cfg = ctx.config.callup
        tz = ctx.config.bot.timezone
        if ctx.step == "kind":
            if ctx.picked is None:
                if ctx.reask("请回复数字选择类型。"):
                    ctx.choose([(k, k) for k in cfg.kinds], header="请选择类型：")
                return
            s["kind"] = ctx.picked
            await self.prompt(ctx, "place")
        elif ctx.step == "place":
            place = ctx.text
            if not 2 <= len(place) <= 100:
                ctx.reask("地点请写 2-100 个字，例如：城关镇防汛物资仓库")
                return
            s["place"] = place
            await self.prompt(ctx, "time")
        elif ctx.step == "time":
            when = parse_when(ctx.text, ctx.now, tz)
            if when is None:
                ctx.reask("没看懂时间。请写：立即、30分钟后、20:30、明天7点 或 7月1日 8:00")
                return
            if when < ctx.now - timedelta(minutes=5):
                ctx.reask(f"{fmt_local(when, tz)} 已经过去了，请重新输入集合时间。")
                return
            s["time"] = when.isoformat()
            await self.prompt(ctx, "need")
        elif ctx.step == "need":
            try:
                needed, skills = parse_need(ctx.text, cfg.skills)
            except ParseError as e:
                ctx.reask(str(e))
                return
            s["needed"], s["skills"] = needed, skills
            await self.prompt(ctx, "scope")
        elif ctx.step == "scope":
            if ctx.picked == "all":
                s["team_ids"], s["scope_label"] = None, "全部队伍"
            else:
                teams, problems = await resolve_teams(ctx.session, ctx.text)
                if problems or not teams:
                    if ctx.reask("；".join(problems or ["请输入队伍名或乡镇名"]) + "。请重新输入，或回复 1 选全部队伍。"):
                        ctx.choose([("全部队伍", "all")])
                    return
                s["team_ids"] = [t.id for t in teams]
                s["scope_label"] = "、".join(t.name for t in teams)
            await self.prompt(ctx, "drill")
        elif ctx.step == "drill":
            if ctx.picked is None and (yn := parse_yes_no(ctx.text, digits=False)) is not None:
                ctx.picked = yn  # 这次是演练吗？ 是的 / 不是
            if ctx.picked is None:
                if ctx.reask("请回复 1（演练）或 2（真实集结）。"):
                    ctx.choose([("演练", True), ("真实集结", False)])
                return
            s["drill"] = bool(ctx.picked)
            await self.prompt(ctx, "confirm")
        elif ctx.step == "confirm":
            if ctx.picked is None:  # 好的 / 发吧 / 不发了 / 算了 in own words
                ctx.picked = {True: "go", False: "stop", None: None}[parse_yes_no(ctx.text, digits=False)]
            if ctx.picked == "stop":
                ctx.say("已取消，没有发送任何通知。")
                ctx.end()
                return
            if ctx.picked != "go":
                if ctx.reask("请回复 1 确认发起，或 2 不发了。"):
                    ctx.choose([("确认发起", "go"), ("不发了", "stop")])
                return
            await self._create(ctx)

    async def _create(self, ctx: Context) -> None:
        s = ctx.slots
        spec = service.CallupSpec(kind=s["kind"], title=f"{s['kind']}集结", place=s["place"],
                                  assemble_at=_dt(s["time"]), needed=int(s["needed"]),
                                  skills_needed=dict(s.get("skills") or {}), team_ids=s.get("team_ids"),
                                  drill=bool(s.get("drill")), created_by=ctx.openid)
        try:
            c = await service.create_callup(ctx.session, ctx.services, spec, ctx.now)
        except service.CallupError as e:
            ctx.say(f"没能发起：{e}")
            ctx.end()
            return
        r = await service.roster(ctx.session, ctx.services, c, ctx.now)
        reached = r["targets"] - r["unreachable"]
        lines = [f"已发起集结 #{c.id}：{texts.label(c)}，已通知 {reached} 人。"]
        sms = sum(r["sms"][k] for k in ("sent", "waiting"))
        if sms:
            lines.append(f"其中 {sms} 人未绑定微信，已发短信（可回复短信）。")
        if r["unreachable"]:
            lines.append(f"另有 {r['unreachable']} 人未绑定微信，请电话通知（名单见链接）。")
        if c.chain:
            lines.append("升级顺序：" + " → ".join(service.step_label(x) for x in c.chain))
        lines.append("回复“集结状态”查看实时名单，“结束集结”结束。")
        lines.append(service.roster_link(ctx.config, c, ctx.now))
        ctx.say("\n".join(lines))
        ctx.end()


def _dt(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


async def _pick_callup(ctx: Context, flow_title: str) -> CallUp | None:
    """The one active call-up, or offer a numbered list (returns None then)."""
    active = await service.active_callups(ctx.session)
    if not active:
        last = await repo.latest_callup(ctx.session)
        ctx.say("目前没有进行中的集结。" + (f"最近一次：#{last.id} {texts.label(last)}（已结束）" if last else ""))
        ctx.end()
        return None
    if len(active) == 1:
        return active[0]
    tz = ctx.config.bot.timezone
    ctx.step = "pick"
    ctx.choose([(f"#{c.id} {texts.label(c)}（{texts.when(c, tz)}）", c.id) for c in active[:9]],
               header=f"【{flow_title}】有 {len(active)} 个进行中的集结，请选择：", footer="（回复“取消”退出）")
    return None


@flow
class CallupStatus(Flow):
    """集结状态: the live roster of an active call-up, with a link to the full page."""

    name = "callup_status"
    title = "集结状态"
    roles = STAFF

    async def start(self, ctx: Context) -> None:
        c = await _pick_callup(ctx, self.title)
        if c is not None:
            await self._show(ctx, c)

    async def _show(self, ctx: Context, c: CallUp) -> None:
        r = await service.roster(ctx.session, ctx.services, c, ctx.now)
        ctx.say(texts.roster_text(c, r, ctx.config.bot.timezone)
                + f"\n完整名单（可直接拨打电话）：\n{service.roster_link(ctx.config, c, ctx.now)}")
        ctx.end()

    async def step(self, ctx: Context) -> None:
        if ctx.step == "pick" and ctx.picked is not None:
            c = await ctx.session.get(CallUp, int(ctx.picked))
            if c is not None:
                await self._show(ctx, c)
                return
        ctx.reroute()


@flow
class CloseCallup(Flow):
    """结束集结: confirm, then close (everyone coming is told it is over)."""

    name = "callup_close"
    title = "结束集结"
    roles = STAFF

    async def start(self, ctx: Context) -> None:
        c = await _pick_callup(ctx, self.title)
        if c is not None:
            await self._confirm(ctx, c)

    async def _confirm(self, ctx: Context, c: CallUp) -> None:
        r = await service.roster(ctx.session, ctx.services, c, ctx.now)
        ctx.slots["callup_id"] = c.id
        ctx.step = "confirm"
        ctx.choose([("确认结束", "go"), ("不结束", "stop")],
                   header=f"要结束集结 #{c.id} {texts.label(c)} 吗？\n{texts.counts_line(r)}\n"
                          "结束后会通知已回复“到/晚到”的人员。")

    async def step(self, ctx: Context) -> None:
        if ctx.step == "pick":
            if ctx.picked is None:
                ctx.reroute()
                return
            c = await ctx.session.get(CallUp, int(ctx.picked))
            if c is None:
                ctx.say("没有找到这次集结。")
                ctx.end()
                return
            await self._confirm(ctx, c)
            return
        if ctx.step == "confirm":
            if ctx.picked is None:  # 好的 / 结束吧 / 不用了 in own words
                ctx.picked = {True: "go", False: "stop", None: None}[parse_yes_no(ctx.text, digits=False)]
            if ctx.picked == "go":
                c, r, now_closed = await service.close_callup(ctx.session, ctx.services, int(ctx.slots["callup_id"]),
                                                              ctx.openid, ctx.now)
                if now_closed:
                    ctx.say(f"已结束集结 #{c.id} {texts.label(c)}。\n{texts.counts_line(r)}\n"
                            + texts.closed_text(int(r.get("told", 0))))
                else:
                    ctx.say(f"集结 #{c.id} 之前已经结束了。")
                ctx.end()
                return
            if ctx.picked == "stop":
                ctx.say("好的，集结继续进行。")
                ctx.end()
                return
            ctx.reroute()
