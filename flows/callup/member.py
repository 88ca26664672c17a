"""Member flows: 绑定 (code or team QR), 我的队伍, 请假 / 恢复, and answering a call-up in chat."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flows.api import (
    CONFIRM,
    PHONE_RE,
    CallupReading,
    Context,
    Flow,
    ascii_uint,
    before_route,
    clean_phone,
    flow,
    fmt_local,
    on_scene,
    parse_callup_answer,
    parse_yes_no,
)
from flows.callup import binding, service, texts
from flows.callup.parse import leave_last_day, parse_eta, parse_until
from flows.privacy.consent import gate
from storage import callup as repo
from storage.callup import (
    LATE,
    PENDING,
    BindRequest,
    CallUp,
    Member,
    Team,
    active_targets_of,
    answerable,
    member_by_openid,
)

NOT_BOUND = ("您还没有绑定应急队伍。\n请扫描队伍的二维码，或回复“绑定 队伍码”（队伍码向队长索取），"
             "例如：绑定 123456")
ASK_PHONE = "请输入您在队伍名册上登记的手机号（11位）：\n（回复“取消”退出）"
#: The numbered answers of every call-up notice (texts.REPLY_HINT).
DIGIT_ANSWERS = {1: "yes", 2: "late", 3: "no", "1": "yes", "2": "late", "3": "no"}
LATE_ANSWER = "late"


def _skills(m: Member) -> str:
    return "、".join(m.skills or []) or "无"


async def _team(ctx: Context, team_id: int) -> Team | None:
    return await ctx.session.get(Team, team_id)


ASK_CODE = "请输入队伍码（向队长索取的数字），例如：123456\n（回复“取消”退出）"
RESEND_WORDS = {"重发", "重新发送", "再发一次", "再发", "没收到"}


@flow
class Bind(Flow):
    """绑定 + team code (or a scanned team QR), then the phone the roster has, then a confirmation: an SMS
    code sent to the roster phone, or the team leader's / staff's approval (see :mod:`.binding`)."""

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
        since = ctx.now - timedelta(hours=ctx.config.callup.bind_request_ttl_h)
        req = await repo.open_bind_request(ctx.session, ctx.openid, since)
        if req is not None and req.method == "sms" and req.code_expires_at and req.code_expires_at > ctx.now:
            ctx.slots["req"] = req.id
            await ctx.ask("otp", "请回复短信里的 6 位验证码（没收到请回复“重发”，回复“取消”退出）。")
            return
        if req is not None and req.method == "approval":
            ctx.say(f"您的绑定申请（{fmt_local(req.created_at, ctx.config.bot.timezone, '%m月%d日 %H:%M')}提交）"
                    "正在等待队长或工作人员确认，确认后公众号会通知您。")
            await ctx.ask("code", "如要重新申请，请输入队伍码；回复“取消”退出。")
            return
        await ctx.ask("code", ASK_CODE)

    async def _code(self, ctx: Context, code: str) -> None:
        blocked = await binding.blocked_until(ctx.session, ctx.services, ctx.openid, None, ctx.now)
        if blocked is not None:
            ctx.say(binding.blocked_text(ctx.services, *blocked))
            ctx.end()
            return
        digits = clean_phone(code)
        team = await repo.team_by_code(ctx.session, digits) if 4 <= len(digits) <= 16 else None
        if team is None:
            binding.count_attempt(ctx.session, ctx.openid, None, "code", ctx.now)
            ctx.reask("没有找到这个队伍码，请核对后重新输入（回复“取消”退出）。")
            if ctx.step != "code" and not ctx.ended:
                ctx.step = "code"
            return
        ctx.slots["team_id"] = team.id
        if not await gate(ctx, "team", resume=self.name, resume_slots={"code": team.code}, lead=f"队伍：{team.name}"):
            return
        await ctx.ask("phone", f"队伍：{team.name}\n{ASK_PHONE}")

    async def step(self, ctx: Context) -> None:
        if ctx.step == "code":
            await self._code(ctx, ctx.text)
            return
        if ctx.step == "scan_confirm":
            if ctx.picked is None and parse_yes_no(ctx.text, digits=False):
                ctx.picked = "bind"  # 绑定到该队伍？ 好的 / 要得
            if ctx.picked == "bind":
                team = await _team(ctx, int(ctx.slots.get("team_id", 0)))
                if team is not None and not await gate(ctx, "team", resume=self.name, resume_slots={"code": team.code},
                                                       lead=f"队伍：{team.name}"):
                    return
                await ctx.ask("phone", f"队伍：{team.name if team else ''}\n{ASK_PHONE}")
                return
            if PHONE_RE.match(clean_phone(ctx.text)):
                team = await _team(ctx, int(ctx.slots.get("team_id", 0)))
                if team is not None and not await gate(ctx, "team", resume=self.name, resume_slots={"code": team.code},
                                                       lead=f"队伍：{team.name}\n请先阅读下面的提示，同意后再输入手机号。"):
                    return
                ctx.step = "phone"
                await self._phone(ctx)
                return
            ctx.reroute()  # something else entirely: route it as a new request
            return
        if ctx.step == "phone":
            await self._phone(ctx)
        elif ctx.step == "otp":
            await self._otp(ctx)

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
        blocked = await binding.blocked_until(ctx.session, ctx.services, ctx.openid, team.id, ctx.now)
        if blocked is not None:
            ctx.say(binding.blocked_text(ctx.services, *blocked))
            ctx.end()
            return
        # The same reply whether the phone is on the roster or not (and whoever it is bound to now).
        started = await binding.start(ctx.session, ctx.services, openid=ctx.openid, team=team, phone=phone,
                                      now=ctx.now)
        if started.request.method == "sms":
            ctx.slots["req"] = started.request.id
            await ctx.ask("otp", started.reply)
            return
        ctx.say(started.reply)
        ctx.end()

    async def _otp(self, ctx: Context) -> None:
        req = await ctx.session.get(BindRequest, int(ctx.slots.get("req", 0)))
        if req is None or req.openid != ctx.openid or req.status != "pending":
            ctx.say("这次绑定已经结束，请重新发送“绑定”。")
            ctx.end()
            return
        if ctx.text.strip() in RESEND_WORDS:
            ctx.say(await binding.resend(ctx.session, ctx.services, req, ctx.now))
            return
        code = clean_phone(ctx.text)
        if len(code) != 6:
            ctx.reask("请回复短信里的 6 位数字验证码（没收到请回复“重发”，回复“取消”退出）。")
            return
        blocked = await binding.blocked_until(ctx.session, ctx.services, ctx.openid, req.team_id, ctx.now)
        if blocked is not None:
            ctx.say(binding.blocked_text(ctx.services, *blocked))
            ctx.end()
            return
        wrong = await binding.check_code(ctx.session, ctx.services, req, code, ctx.now)
        if wrong is not None:
            ctx.reask(wrong)
            return
        b = await binding.bind(ctx.session, ctx.services, req, ctx.now, by="sms", user=ctx.user)
        if b is None:
            ctx.say("绑定没有完成：这个微信已绑定了其他队员。如需更换，请联系队长或工作人员。")
            ctx.end()
            return
        ctx.say(binding.bound_text(b))
        await _tell_open_callup(ctx, b.member)
        ctx.end()

    async def prompt(self, ctx: Context, step: str) -> None:
        if step == "phone":
            ctx.say(ASK_PHONE)
        elif step == "otp":
            ctx.say("请回复短信里的 6 位验证码（没收到请回复“重发”，回复“取消”退出）。")
        else:
            await ctx.ask("code", ASK_CODE)


async def _tell_open_callup(ctx: Context, m: Member) -> None:
    """A member who just bound is told about a call-up of their team that waits for their answer."""
    pending = [(c, t) for c, t in await active_targets_of(ctx.session, m.id) if t.status == PENDING]
    if pending:
        c, _ = pending[0]
        ctx.say(f"您的队伍正在集结：{texts.label(c)}\n地点：{c.place}\n集合："
                f"{texts.when(c, ctx.config.bot.timezone)}\n{texts.REPLY_HINT}")


@on_scene("team:")
async def team_scene(ctx: Context, rest: str) -> bool:
    """A team's parameter QR (scene ``team:<id>``): start binding to that team."""
    # ascii_uint: '²'.isdigit() is True and int('²') raises; 23 digits overflow the id column.
    team_id = ascii_uint(rest.strip(), 9)
    team = await _team(ctx, team_id) if team_id is not None else None
    if team is None:
        ctx.say("这个二维码对应的队伍不存在，请联系队长。")
        return True
    m = await member_by_openid(ctx.session, ctx.openid)
    if m is not None:
        mine = await _team(ctx, m.team_id)
        ctx.say(f"您已绑定：{m.name}（{mine.name if mine else ''}）。回复“我的队伍”查看。")
        return True
    ctx.enter("callup_bind", slots={"team_id": team.id})
    if (ctx.inbound.event or "").lower() == "subscribe":
        # The welcome adds the help menu unless we offer a choice: offer the one that matters here.
        ctx.step = "scan_confirm"
        ctx.choose([("绑定到该队伍", "bind")], header=f"您扫描的是“{team.name}”的二维码。",
                   footer="也可以直接输入您在名册上的手机号。不是队员请回复“帮助”。")
        return True
    if not await gate(ctx, "team", resume=Bind.name, resume_slots={"code": team.code},
                      lead=f"您正在加入“{team.name}”。"):
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
            lines.append(f"状态：请假至 {leave_last_day(m.away_until, tz)}（含，回复“恢复”恢复在岗）")
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
    ASK = "请假到哪天？例如：三天、下周三、5月20日、五一以后\n（回复“取消”退出）"

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
        ctx.say(f"已请假至 {leave_last_day(until, tz)}（含）。期间不会收到新的集结通知，到期自动恢复。\n提前回来请回复“恢复”。")
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


#: Said back when an answer was read from words rather than 1 / 2 / 3, so a misreading is one message away.
CHANGE_HINT = "如有变化，随时回复：1 到 / 2 晚到 / 3 不能到。"
ASK_WHICH = "没太明白您的意思。请回复数字：1 到 / 2 晚到 / 3 不能到"
def read_answer(text: str) -> str | None:
    """1 / 到 / 马上到 / 收到 -> yes, 2 / 晚到 / 晚半个钟头 -> late, 3 / 不能到 / 去不了 -> no; None when the text
    is not an answer that can be recorded (see :func:`bot.answers.parse_callup_answer`)."""
    reading = parse_callup_answer(text)
    return reading.answer if reading is not None and reading.recordable else None


async def _minutes_late(ctx: Context, callup_id: int, at: tuple[int, int]) -> int:
    """A stated arrival time (九点到) as minutes after the assembly time (0 when not late)."""
    c = await ctx.session.get(CallUp, callup_id)
    if c is None:
        return 0
    return service.minutes_late(c, at, ctx.config.bot.timezone)


async def _record(ctx: Context, callup_id: int, member_id: int, reading: CallupReading, others: int,
                  *, from_words: bool) -> None:
    """Record a reading of the member's reply on one call-up and say so; a 晚到 without a time asks once."""
    answer, eta = reading.answer, reading.eta_min
    if answer == LATE_ANSWER and eta is None and reading.at_clock is not None:
        eta = await _minutes_late(ctx, callup_id, reading.at_clock)
        if eta == 0:
            answer = "yes"  # arriving by the assembly time is 到
    try:
        r = await service.record_answer(ctx.session, ctx.services, callup_id, member_id, answer, ctx.now,
                                        eta_min=eta or None, via="chat")
    except service.CallupError as e:
        ctx.say(str(e))
        return
    ctx.say(r.message + (f"\n{CHANGE_HINT}" if from_words and r.recorded_as is not None else ""))
    if others:
        ctx.say(f"（您还有 {others} 个进行中的集结，回复“我的队伍”查看，或点通知里的链接分别回复。）")
    if r.recorded_as == LATE and not eta:
        _enter(ctx, "eta", {"callup_id": callup_id, "member_id": member_id})
        ctx.say(Answer.ASK_ETA)


def _enter(ctx: Context, step: str, slots: dict[str, Any]) -> None:
    """Put the conversation into the answer flow at ``step`` (from the hook, where no flow was started)."""
    ctx.flow, ctx.step, ctx.slots, ctx.stack, ctx.reasks, ctx.ended = Answer.name, step, slots, [], 0, False


#: Readings that only acknowledge (好的, 收到, 嗯): an answer from a member who has not answered, never a
#: change of an answer already given.
ACKNOWLEDGEMENTS = frozenset({"acknowledged", "only an interjection"})


@before_route
async def open_callup_answer_first(ctx: Context) -> bool:
    """An answer to an open call-up wins over a menu left open or a flow in progress (issue 14, item 13),
    and own words (俺去不了，腰扭了 · 大概晚半个钟头) reach the call-up although no flow waits for them.

    For a member who has NOT answered their newest call-up: 1 / 2 / 3 and clear own words are recorded;
    unsure words (嗯 · 对不起) get one "1 到 / 2 晚到 / 3 不能到" question. A question the bot asked AFTER the
    member was called (a menu opened since) keeps its digits: the member is answering that. For a member
    who has answered, only clear own words with nothing else waiting change the answer (去不了了; not 好的 or
    收到, which acknowledge the bot's reply); digits go the usual way (the callup_answer intent when no menu
    is open). A message an exact rule gives to another intent (请假 三天) is left to it."""
    if "volunteer" not in ctx.user.role_set or ctx.flow == Answer.name:
        return False
    digit = ctx.choice(3)
    reading = None
    if digit is None:
        reading = parse_callup_answer(ctx.text)
        if reading is None or reading.confidence < CONFIRM:
            return False
        matcher = ctx.services.matcher
        claimed = matcher.exact(ctx.text, ctx.user.role_set) if matcher is not None else None
        if claimed is not None and claimed.intent is not None and claimed.intent.flow != Answer.name:
            return False  # a command of its own (请假 三天 → leave, not 不能到): it runs as typed
    rows = await repo.active_answers_of(ctx.session, ctx.openid)
    if not rows:
        return False
    pending = [r for r in rows if r.status == PENDING]
    if pending:
        target = pending[0]
        if ctx.asked_at is not None and ctx.asked_at > target.created_at:
            return False  # the menu or question came after the call-up: the member is answering it
        if digit is not None:
            reading = CallupReading(DIGIT_ANSWERS[digit], 1.0)
        assert reading is not None
        if not reading.recordable:
            _enter(ctx, "which", {"callup_id": target.callup_id, "member_id": target.member_id})
            ctx.say(ASK_WHICH)
            return True
        await _record(ctx, target.callup_id, target.member_id, reading, len(rows) - 1, from_words=digit is None)
        return True
    if reading is None or not reading.recordable or ctx.asked_at is not None or reading.why in ACKNOWLEDGEMENTS:
        return False  # (好的 / 收到 after answering acknowledges the bot's reply: it changes nothing)
    latest = rows[0]
    await _record(ctx, latest.callup_id, latest.member_id, reading, len(rows) - 1, from_words=True)
    return True


@flow
class Answer(Flow):
    """1 / 2 / 3 (到 / 晚到 / 不能到, or the member's own words) answers the member's latest open call-up;
    晚到 without a time asks the ETA once."""

    name = "callup_answer"
    title = "回复集结"
    ASK_ETA = "大约晚多久到？例如：30分钟、半个钟头、一个小时（不确定可回复“不确定”）"

    async def start(self, ctx: Context) -> None:
        word = (ctx.intent_slots.get("a") or ctx.text).strip()
        reading = parse_callup_answer(ctx.text) or parse_callup_answer(word)
        member_id, active = await answerable(ctx.session, ctx.openid)
        if member_id is None:
            ctx.say(NOT_BOUND)
            ctx.end()
            return
        if not active:
            ctx.say("目前没有需要您回复的集结。回复“我的队伍”查看队伍信息，回复“帮助”查看功能。")
            ctx.end()
            return
        if reading is None or not reading.recordable:
            ctx.say(texts.REPLY_HINT)
            ctx.end()
            return
        ctx.end()
        await _record(ctx, active[0], member_id, reading, len(active) - 1,
                      from_words=word not in DIGIT_ANSWERS and word not in ("到", "晚到", "不能到"))

    async def step(self, ctx: Context) -> None:
        s = ctx.slots
        if ctx.step == "which":
            digit = ctx.choice(3)
            reading = CallupReading(DIGIT_ANSWERS[digit], 1.0) if digit else parse_callup_answer(ctx.text)
            if reading is None or not reading.recordable:
                ctx.reroute()  # asked once already: this is something else, route it afresh
                return
            ctx.end()
            await _record(ctx, int(s["callup_id"]), int(s["member_id"]), reading, 0, from_words=digit is None)
            return
        if ctx.step != "eta":
            ctx.end()
            return
        eta = parse_eta(ctx.text)
        reading = parse_callup_answer(ctx.text) if eta is None else None
        if eta is None and reading is not None and reading.at_clock is not None:
            eta = await _minutes_late(ctx, int(s["callup_id"]), reading.at_clock) or None
        if eta is None:
            if reading is not None and reading.recordable and reading.answer != LATE_ANSWER:
                ctx.reroute()  # a fresh 到 / 不能到: answer again
                return
            if ctx.reasks or re.search(r"不确定|不知道|说不准|说不好|不一定|看情况|尽快|尽量", ctx.text):
                ctx.say("好的，已记录晚到（时间未定）。请尽快前往，注意安全！")
                ctx.end()
                return
            ctx.reask("请回复大约晚多少分钟，例如：30、半个钟头；不确定请回复“不确定”。")
            return
        ok = await service.set_eta(ctx.session, int(s["callup_id"]), int(s["member_id"]), eta, ctx.now)
        ctx.say(f"已记录：约晚 {eta} 分钟到。注意安全！" if ok else "您的回复已有变化，未记录到达时间。")
        ctx.end()

    async def prompt(self, ctx: Context, step: str) -> None:
        ctx.say(self.ASK_ETA if step == "eta" else ASK_WHICH)
