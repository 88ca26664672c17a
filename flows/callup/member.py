"""Member flows: 绑定 (code or team QR), 我的队伍, 请假 / 恢复, and answering a call-up in chat."""

from __future__ import annotations

from datetime import timedelta

from bot.clock import fmt_local
from bot.text import PHONE_RE, clean_phone
from flows.api import Context, Flow, flow, on_scene
from flows.callup import service, texts
from flows.callup.parse import parse_eta, parse_until
from storage import callup as repo
from storage.callup import LATE, PENDING, Member, Team, active_targets_of, answerable, member_by_openid

NOT_BOUND = ("您还没有绑定应急队伍。\n请扫描队伍的二维码，或回复“绑定 队伍码”（队伍码向队长索取），"
             "例如：绑定 123456")
ASK_PHONE = "请输入您在队伍名册上登记的手机号（11位）：\n（回复“取消”退出）"
ANSWER_WORDS = {"1": "yes", "到": "yes", "收到到": "yes", "2": "late", "晚到": "late", "3": "no", "不能到": "no",
                "不到": "no", "来不了": "no", "去不了": "no"}


def _skills(m: Member) -> str:
    return "、".join(m.skills or []) or "无"


async def _team(ctx: Context, team_id: int) -> Team | None:
    return await ctx.session.get(Team, team_id)


@flow
class Bind(Flow):
    """绑定 + team code (or a scanned team QR), then the phone the roster has: attaches this WeChat."""

    name = "callup_bind"
    title = "绑定队伍"

    async def start(self, ctx: Context) -> None:
        m = await member_by_openid(ctx.session, ctx.openid)
        if m is not None:
            team = await _team(ctx, m.team_id)
            ctx.say(f"您已绑定：{m.name}（{team.name if team else ''}）。如需更换，请联系队长或工作人员。")
            ctx.end()
            return
        code = (ctx.intent_slots.get("code") or "").strip()
        if code:
            await self._code(ctx, code)
            return
        await ctx.ask("code", "请输入队伍码（向队长索取的数字），例如：123456\n（回复“取消”退出）")

    async def _code(self, ctx: Context, code: str) -> None:
        team = await repo.team_by_code(ctx.session, clean_phone(code))
        if team is None:
            ctx.reask("没有找到这个队伍码，请核对后重新输入（回复“取消”退出）。")
            if ctx.step != "code" and not ctx.ended:
                ctx.step = "code"
            return
        ctx.slots["team_id"] = team.id
        await ctx.ask("phone", f"队伍：{team.name}\n{ASK_PHONE}")

    async def step(self, ctx: Context) -> None:
        if ctx.step == "code":
            await self._code(ctx, ctx.text)
            return
        if ctx.step == "scan_confirm":
            if ctx.picked == "bind":
                team = await _team(ctx, int(ctx.slots.get("team_id", 0)))
                await ctx.ask("phone", f"队伍：{team.name if team else ''}\n{ASK_PHONE}")
                return
            if PHONE_RE.match(clean_phone(ctx.text)):
                ctx.step = "phone"
                await self._phone(ctx)
                return
            ctx.reroute()  # something else entirely: route it as a new request
            return
        if ctx.step == "phone":
            await self._phone(ctx)

    async def _phone(self, ctx: Context) -> None:
        phone = clean_phone(ctx.text)
        if not PHONE_RE.match(phone):
            ctx.reask("手机号格式不对，请输入 11 位手机号，例如：13800001234（回复“取消”退出）")
            return
        team = await _team(ctx, int(ctx.slots.get("team_id", 0)))
        if team is None:
            ctx.say("队伍已不存在，请联系工作人员。")
            ctx.end()
            return
        m = await repo.member_in_team(ctx.session, team.id, phone)
        if m is None:
            ctx.reask(f"“{team.name}”的名册里没有这个手机号。请核对后重新输入，或联系队长把您加入名册。"
                      "（回复“取消”退出）")
            return
        if m.openid and m.openid != ctx.openid:
            ctx.say("这个手机号已被另一个微信绑定。如需更换，请联系队长或工作人员。")
            ctx.end()
            return
        m.openid, m.bound_at, m.updated_at = ctx.openid, ctx.now, ctx.now
        u = ctx.user
        u.add_role("volunteer")
        if not u.phone:
            u.phone = m.phone
        if not u.name:
            u.name = m.name
        if not u.township and m.township:
            u.township = m.township
        ctx.say(f"绑定成功！\n姓名：{m.name}\n队伍：{team.name}\n技能：{_skills(m)}\n"
                "收到集结通知时，回复 1 到 / 2 晚到 / 3 不能到。\n回复“我的队伍”查看队伍信息，"
                "回复“请假”暂停接收通知。")
        await ctx.session.flush()
        pending = [(c, t) for c, t in await active_targets_of(ctx.session, m.id) if t.status == PENDING]
        if pending:
            c, _ = pending[0]
            ctx.say(f"您的队伍正在集结：{texts.label(c)}\n地点：{c.place}\n集合："
                    f"{texts.when(c, ctx.config.bot.timezone)}\n{texts.REPLY_HINT}")
        ctx.end()

    async def prompt(self, ctx: Context, step: str) -> None:
        if step == "phone":
            ctx.say(ASK_PHONE)
        else:
            await ctx.ask("code", "请输入队伍码（向队长索取的数字），例如：123456\n（回复“取消”退出）")


@on_scene("team:")
async def team_scene(ctx: Context, rest: str) -> bool:
    """A team's parameter QR (scene ``team:<id>``): start binding to that team."""
    team = await _team(ctx, int(rest)) if rest.strip().isdigit() else None
    if team is None:
        ctx.say("这个二维码对应的队伍不存在，请联系队长。")
        return True
    m = await member_by_openid(ctx.session, ctx.openid)
    if m is not None:
        mine = await _team(ctx, m.team_id)
        ctx.say(f"您已绑定：{m.name}（{mine.name if mine else ''}）。回复“我的队伍”查看。")
        return True
    ctx.flow, ctx.slots, ctx.stack, ctx.reasks, ctx.ended = "callup_bind", {"team_id": team.id}, [], 0, False
    if (ctx.inbound.event or "").lower() == "subscribe":
        # The welcome adds the help menu unless we offer a choice: offer the one that matters here.
        ctx.step = "scan_confirm"
        ctx.choose([("绑定到该队伍", "bind")], header=f"您扫描的是“{team.name}”的二维码。",
                   footer="也可以直接输入您在名册上的手机号。不是队员请回复“帮助”。")
        return True
    ctx.step = "phone"
    ctx.say(f"您正在加入“{team.name}”。\n{ASK_PHONE}")
    return True


@flow
class MyTeam(Flow):
    """我的队伍: the member's team, skills, availability and open call-ups."""

    name = "callup_my_team"
    title = "我的队伍"

    async def start(self, ctx: Context) -> None:
        ctx.end()
        m = await member_by_openid(ctx.session, ctx.openid)
        if m is None:
            ctx.say(NOT_BOUND)
            return
        tz = ctx.config.bot.timezone
        team = await _team(ctx, m.team_id)
        lines = ["【我的队伍】", f"姓名：{m.name}", f"队伍：{team.name if team else ''}",
                 f"乡镇：{m.township or (team.township if team else '')}", f"技能：{_skills(m)}"]
        if team is not None and team.leader:
            lines.append(f"队长：{team.leader}" + (f" {team.leader_phone}" if team.leader_phone else ""))
        if m.available(ctx.now):
            lines.append("状态：在岗（回复“请假”暂停接收通知）")
        else:
            lines.append(f"状态：请假至 {fmt_local(m.away_until, tz, '%m月%d日')}（回复“恢复”恢复在岗）")
        active = await active_targets_of(ctx.session, m.id)
        if active:
            lines.append("")
            lines.append("进行中的集结：")
            for c, t in active[:3]:
                answer = texts.STATUS_WORDS.get(t.status, t.status)
                lines.append(f"· {texts.label(c)}｜{c.place}｜{texts.when(c, tz)}｜您的回复：{answer}")
            lines.append(texts.REPLY_HINT + "（回复最新一次集结）")
        else:
            lines.append("目前没有进行中的集结。")
        ctx.say("\n".join(lines))

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)


@flow
class Leave(Flow):
    """请假: unavailable until a date (skipped by new call-ups and reminders)."""

    name = "callup_leave"
    title = "请假"
    ASK = "请假到哪天？例如：3天、明天、5月20日\n（回复“取消”退出）"

    async def start(self, ctx: Context) -> None:
        m = await member_by_openid(ctx.session, ctx.openid)
        if m is None:
            ctx.say(NOT_BOUND)
            ctx.end()
            return
        until = (ctx.intent_slots.get("until") or "").strip()
        if until:
            await self._set(ctx, m, until)
            return
        await ctx.ask("until", self.ASK)

    async def _set(self, ctx: Context, m: Member, text: str) -> None:
        tz = ctx.config.bot.timezone
        until = parse_until(text, ctx.now, tz)
        if until is None:
            if ctx.step != "until":
                await ctx.ask("until", "没看懂日期。" + self.ASK)
            else:
                ctx.reask("没看懂日期。" + self.ASK)
            return
        m.away_until, m.updated_at = until, ctx.now
        last = fmt_local(until - timedelta(minutes=1), tz, "%m月%d日")
        ctx.say(f"已请假至 {last}（含）。期间不会收到新的集结通知，到期自动恢复。\n提前回来请回复“恢复”。")
        ctx.end()

    async def step(self, ctx: Context) -> None:
        m = await member_by_openid(ctx.session, ctx.openid)
        if m is None:
            ctx.say(NOT_BOUND)
            ctx.end()
            return
        await self._set(ctx, m, ctx.text)

    async def prompt(self, ctx: Context, step: str) -> None:
        ctx.say(self.ASK)


@flow
class Resume(Flow):
    """恢复 / 销假: available again."""

    name = "callup_resume"
    title = "恢复在岗"

    async def start(self, ctx: Context) -> None:
        ctx.end()
        m = await member_by_openid(ctx.session, ctx.openid)
        if m is None:
            ctx.say(NOT_BOUND)
            return
        if m.available(ctx.now):
            ctx.say("您目前就是在岗状态，可以接收集结通知。")
            return
        m.away_until, m.updated_at = None, ctx.now
        ctx.say("已恢复在岗，可以接收集结通知。")

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)


def read_answer(text: str) -> str | None:
    """'1' / '到' -> yes, '2' / '晚到' -> late, '3' / '不能到' -> no."""
    return ANSWER_WORDS.get(text.strip())


@flow
class Answer(Flow):
    """1 / 2 / 3 (到 / 晚到 / 不能到) answers the member's latest open call-up; 晚到 asks the ETA."""

    name = "callup_answer"
    title = "回复集结"
    ASK_ETA = "大约晚多久到？请回复分钟数，例如：30（不确定可回复“取消”）"

    async def start(self, ctx: Context) -> None:
        word = (ctx.intent_slots.get("a") or ctx.text).strip()
        answer = read_answer(word)
        member_id, active = await answerable(ctx.session, ctx.openid)
        if member_id is None or answer is None:
            ctx.say(NOT_BOUND if member_id is None else "请回复：1 到 / 2 晚到 / 3 不能到")
            ctx.end()
            return
        if not active:
            ctx.say("目前没有需要您回复的集结。回复“我的队伍”查看队伍信息，回复“帮助”查看功能。")
            ctx.end()
            return
        eta = parse_eta(ctx.intent_slots.get("eta") or "") if answer == "late" else None
        try:
            r = await service.record_answer(ctx.session, ctx.services, active[0], member_id, answer, ctx.now,
                                            eta_min=eta, via="chat")
        except service.CallupError as e:
            ctx.say(str(e))
            ctx.end()
            return
        ctx.say(r.message)
        if len(active) > 1:
            ctx.say(f"（您还有 {len(active) - 1} 个进行中的集结，回复“我的队伍”查看，或点通知里的链接分别回复。）")
        if r.recorded_as == LATE and eta is None:
            ctx.slots.update(callup_id=active[0], member_id=member_id)
            await ctx.ask("eta", self.ASK_ETA)
            return
        ctx.end()

    async def step(self, ctx: Context) -> None:
        if ctx.step != "eta":
            ctx.end()
            return
        eta = parse_eta(ctx.text)
        if eta is None:
            if read_answer(ctx.text) is not None:  # a fresh 1 / 2 / 3: answer again
                ctx.reroute()
                return
            ctx.reask("请回复分钟数，例如：30；不确定请回复“取消”。")
            return
        ok = await service.set_eta(ctx.session, int(ctx.slots["callup_id"]), int(ctx.slots["member_id"]), eta, ctx.now)
        ctx.say(f"已记录：约晚 {eta} 分钟到。注意安全！" if ok else "您的回复已有变化，未记录到达时间。")
        ctx.end()

    async def prompt(self, ctx: Context, step: str) -> None:
        ctx.say(self.ASK_ETA)
