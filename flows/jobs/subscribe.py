"""岗位订阅: subscribe (region, work, lowest pay, type, instant/daily + time, quiet hours), 我的订阅
(show, edit one item, pause, resume), 退订, 暂停推送, 恢复推送.

A message that says 退订 / 取消订阅 in the middle of these questions is never taken as an answer
(it would otherwise become a place name): it leaves the flow and is routed afresh, to 退订.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import update

from flows.api import Context, Flow, flow, parse_yes_no
from flows.jobs.alerts import settings
from flows.jobs.matching import split_words
from flows.jobs.texts import sub_summary
from flows.jobs.timeutil import fmt_hm, parse_hm, parse_range
from flows.notices import offer
from storage.jobs import (
    ACTIVE,
    CANCELLED,
    DAILY,
    INSTANT,
    PAUSED,
    JobSubscription,
    get_subscription,
    max_posting_id,
)
from storage.models import OutboxMessage

STEPS = ("place", "work", "salary", "type", "mode", "time", "quiet")
EDITABLE = [("修改地区", "place"), ("修改岗位", "work"), ("修改月薪", "salary"), ("修改类型", "type"),
            ("修改推送方式", "mode"), ("修改免打扰时段", "quiet")]
SALARIES = [("不限", 0), ("2000元以上", 2000), ("3000元以上", 3000), ("4000元以上", 4000), ("5000元以上", 5000)]
TYPES = [("不限", ""), ("全职", "全职"), ("兼职", "兼职"), ("实习", "实习")]
TIMES = [("早上 8:00", 8 * 60), ("中午 12:00", 12 * 60), ("晚上 19:00", 19 * 60)]
LEAVE_WORDS = ("退订", "取消订阅", "不订了", "不要订阅", "不想订阅", "取消推送", "不要推送", "别推送")
_BAD_WORD = re.compile(r"\d")
EXIT = "回复“取消”退出，“返回”回到上一步。"


def _number(step: str, mode: str) -> int:
    """Which question this is; daily subscribers get one more (the time of day)."""
    if step == "quiet":
        return 7 if mode == DAILY else 6
    return STEPS.index(step) + 1


def wants_out(ctx: Context) -> bool:
    """The message asks to unsubscribe rather than answer the question."""
    return any(w in ctx.norm for w in LEAVE_WORDS)


def raw_words(text: str) -> list[str]:
    """Words as typed (for display), split on spaces and punctuation."""
    return [w for w in re.split(r"[\s,，、;；/|。.]+", text.strip()) if w]


async def _cancel_pending(ctx: Context) -> int:
    """Queued job alerts of this user are dropped when they pause or unsubscribe."""
    result = await ctx.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.openid == ctx.openid, OutboxMessage.purpose == "job_alert",
               OutboxMessage.status == "pending")
        .values(status="cancelled", last_error="job alerts paused or unsubscribed")
    )
    return max(result.rowcount or 0, 0)


def _draft_defaults(ctx: Context) -> dict[str, Any]:
    s = settings(ctx.config)
    return {"places": [], "keywords": [], "categories": [], "min_salary": 0, "job_type": "", "mode": INSTANT,
            "digest_minute": s.digest_minute, "quiet_start": s.quiet[0], "quiet_end": s.quiet[1]}


def _draft_of(sub: JobSubscription) -> dict[str, Any]:
    return {"places": list(sub.places), "keywords": list(sub.keywords), "categories": list(sub.categories),
            "min_salary": sub.min_salary, "job_type": sub.job_type, "mode": sub.mode,
            "digest_minute": sub.digest_minute, "quiet_start": sub.quiet_start, "quiet_end": sub.quiet_end}


def _as_sub(d: dict[str, Any], status: str = ACTIVE) -> JobSubscription:
    return JobSubscription(status=status, **d)


@flow
class JobSubscribe(Flow):
    """New subscription (6-7 questions, then confirm); an existing one opens 我的订阅."""

    name = "jobs_subscribe"
    title = "岗位订阅"

    async def start(self, ctx: Context) -> None:
        sub = await get_subscription(ctx.session, ctx.openid)
        if sub is not None and sub.status in (ACTIVE, PAUSED):
            await self._menu(ctx, sub, intro="您已订阅岗位推送。")
            return
        ctx.slots.update({"d": _draft_defaults(ctx), "edit": ""})
        ctx.say("订阅后，有符合条件的新岗位会推送给您。共几个问题，随时回复“取消”退出。")
        await self._ask(ctx, "place")

    # --- 我的订阅 menu -----------------------------------------------------------------------------
    async def _menu(self, ctx: Context, sub: JobSubscription, intro: str = "") -> None:
        ctx.step = "menu"
        ctx.slots.update({"d": _draft_of(sub), "edit": ""})
        if intro:
            ctx.say(intro)
        ctx.say(sub_summary(sub))
        toggle = ("恢复推送", "resume") if sub.status == PAUSED else ("暂停推送", "pause")
        ctx.choose([*EDITABLE, toggle, ("查看符合条件的在招岗位", "browse"), ("退订", "unsubscribe")],
                   header="需要修改请回复数字：", footer="不需要修改请回复“取消”。")

    # --- questions --------------------------------------------------------------------------------
    async def _ask(self, ctx: Context, step: str) -> None:
        s = settings(ctx.config)
        d = ctx.slots["d"]
        n = "" if ctx.slots.get("edit") or step not in STEPS else f"第{_number(step, d['mode'])}步："
        if step == "place":
            await ctx.ask("place", "")
            opts: list[tuple[str, Any]] = [("不限地区", "any")]
            if ctx.user.township:
                opts.append((f"{ctx.user.township}（我登记的乡镇）", ctx.user.township))
            ctx.choose(opts, header=f"{n}想在哪里工作？",
                       footer="也可以直接输入地名，多个用空格隔开，如：大竹 庙坝镇\n" + EXIT)
        elif step == "work":
            await ctx.ask("work", "")
            ctx.choose([("不限", "any"), *[(c, f"c:{c}") for c in s.categories]], header=f"{n}想找什么工作？",
                       footer="也可以直接输入关键词，多个用空格隔开，如：保安 门卫\n" + EXIT)
        elif step == "salary":
            await ctx.ask("salary", "")
            ctx.choose(SALARIES, header=f"{n}月薪最低要多少？", footer="也可以直接输入数字，如：3500\n" + EXIT)
        elif step == "type":
            await ctx.ask("type", "")
            ctx.choose(TYPES, header=f"{n}全职还是兼职？", footer=EXIT)
        elif step == "mode":
            await ctx.ask("mode", "")
            ctx.choose([(f"有新岗位立即提醒（每天最多{s.cap}条）", INSTANT), ("每天汇总推送一次", DAILY)],
                       header=f"{n}怎么推送给您？", footer=EXIT)
        elif step == "time":
            await ctx.ask("time", "")
            ctx.choose(TIMES, header=f"{n}每天几点推送？", footer="也可以直接输入时间，如：19:30\n" + EXIT)
        elif step == "quiet":
            await ctx.ask("quiet", "")
            dq = f"{fmt_hm(s.quiet[0])}-{fmt_hm(s.quiet[1])}" if s.quiet[0] != s.quiet[1] else "22:00-07:00"
            ctx.choose([(f"{dq}（推荐）", dq), ("21:00-08:00", "21:00-08:00"), ("不需要免打扰", "none")],
                       header=f"{n}夜间免打扰时段（这段时间不推送）：",
                       footer="也可以直接输入，如：22-7\n" + EXIT)
        elif step == "confirm":
            await ctx.ask("confirm", "请确认您的订阅：\n" + sub_summary(_as_sub(d)).split("\n", 2)[2])
            ctx.choose([("确认订阅", "yes"), ("重新填写", "redo")], footer=EXIT)

    async def prompt(self, ctx: Context, step: str) -> None:
        if step == "menu":
            sub = await get_subscription(ctx.session, ctx.openid)
            if sub is not None and sub.status in (ACTIVE, PAUSED):
                await self._menu(ctx, sub)
                return
            await self.start(ctx)
            return
        await self._ask(ctx, step)

    async def _next(self, ctx: Context, done: str) -> None:
        """After answering ``done``: the next question, or save the one edited item."""
        if ctx.slots.get("edit"):
            if done == "mode" and ctx.slots["d"]["mode"] == DAILY:
                await self._ask(ctx, "time")
                return
            await self._save(ctx, edited=True)
            return
        order = ["place", "work", "salary", "type", "mode", "time", "quiet", "confirm"]
        nxt = order[order.index(done) + 1]
        if nxt == "time" and ctx.slots["d"]["mode"] != DAILY:
            nxt = "quiet"
        await self._ask(ctx, nxt)

    async def step(self, ctx: Context) -> None:
        if wants_out(ctx):
            ctx.reroute()
            return
        handler = getattr(self, f"_on_{ctx.step}", None)
        if handler is None:
            await self.start(ctx)
            return
        await handler(ctx)

    # --- answers ----------------------------------------------------------------------------------
    async def _on_menu(self, ctx: Context) -> None:
        v = ctx.picked
        if v is None:
            ctx.reroute()
            return
        if v in ("place", "work", "salary", "type", "mode", "quiet"):
            ctx.slots["edit"] = v
            await self._ask(ctx, v)
        elif v == "pause":
            ctx.switch("jobs_pause")
        elif v == "resume":
            ctx.switch("jobs_resume")
        elif v == "unsubscribe":
            ctx.switch("jobs_unsubscribe")
        elif v == "browse":
            ctx.switch("jobs_search", {"mine": "1"})

    async def _on_place(self, ctx: Context) -> None:
        d = ctx.slots["d"]
        if ctx.picked is not None:
            d["places"] = [] if ctx.picked == "any" else [ctx.picked]
        else:
            if ctx.norm in ("不限", "不限地区", "都行", "哪里都行", "无所谓"):
                d["places"] = []
            else:
                words = raw_words(ctx.text)
                bad = [w for w in words if not 2 <= len(w) <= 12 or _BAD_WORD.search(w)]
                if not words or bad or len(words) > 5:
                    ctx.reask("请回复数字，或输入地名（2-12个字，最多5个，用空格隔开），如：大竹 庙坝镇")
                    return
                d["places"] = list(dict.fromkeys(words))
        await self._next(ctx, "place")

    async def _on_work(self, ctx: Context) -> None:
        d = ctx.slots["d"]
        cats = settings(ctx.config).categories
        if ctx.picked is not None:
            d["keywords"], d["categories"] = [], []
            if ctx.picked != "any":
                d["categories"] = [str(ctx.picked)[2:]]
        else:
            if ctx.norm in ("不限", "都行", "什么都行", "无所谓"):
                d["keywords"], d["categories"] = [], []
            else:
                words = raw_words(ctx.text)
                if not words or len(words) > 8 or any(len(w) > 10 for w in words) or not split_words(ctx.text):
                    ctx.reask("请回复数字，或输入岗位关键词（每个最多10个字，最多8个，用空格隔开），如：保安 门卫")
                    return
                d["categories"] = [w for w in dict.fromkeys(words) if w in cats]
                d["keywords"] = [w for w in dict.fromkeys(words) if w not in cats]
        await self._next(ctx, "work")

    async def _on_salary(self, ctx: Context) -> None:
        d = ctx.slots["d"]
        if ctx.picked is not None:
            d["min_salary"] = int(ctx.picked)
        else:
            t = ctx.norm.replace("元", "").replace("以上", "").replace("块", "")
            if t in ("不限", "面议", "都行"):
                d["min_salary"] = 0
            elif t.isdigit() and 500 <= int(t) <= 100000:
                d["min_salary"] = int(t)
            else:
                ctx.reask("请回复数字 1-5，或直接输入月薪（元），如：3500")
                return
        await self._next(ctx, "salary")

    async def _on_type(self, ctx: Context) -> None:
        d = ctx.slots["d"]
        if ctx.picked is not None:
            d["job_type"] = ctx.picked
        elif ctx.norm in ("全职", "兼职", "实习"):
            d["job_type"] = ctx.norm
        elif ctx.norm in ("不限", "都行"):
            d["job_type"] = ""
        else:
            ctx.reask("请回复数字 1-4 选择。")
            return
        await self._next(ctx, "type")

    async def _on_mode(self, ctx: Context) -> None:
        d = ctx.slots["d"]
        if ctx.picked is not None:
            d["mode"] = ctx.picked
        elif "立即" in ctx.norm or "马上" in ctx.norm:
            d["mode"] = INSTANT
        elif "每天" in ctx.norm or "汇总" in ctx.norm:
            d["mode"] = DAILY
        else:
            ctx.reask("请回复数字 1 或 2 选择推送方式。")
            return
        await self._next(ctx, "mode")

    async def _on_time(self, ctx: Context) -> None:
        d = ctx.slots["d"]
        if ctx.picked is not None:
            d["digest_minute"] = int(ctx.picked)
        else:
            m = parse_hm(ctx.text)
            if m is None:
                ctx.reask("请回复数字 1-3，或输入时间，如：19:30")
                return
            d["digest_minute"] = m
        await self._next(ctx, "time")

    async def _on_quiet(self, ctx: Context) -> None:
        d = ctx.slots["d"]
        value = ctx.picked if ctx.picked is not None else ctx.text
        if value == "none" or ctx.norm in ("不需要", "不用", "无", "没有"):
            d["quiet_start"] = d["quiet_end"] = 0
        else:
            r = parse_range(str(value))
            if r is None:
                ctx.reask("请回复数字 1-3，或输入时段，如：22-7（晚上10点到早上7点）")
                return
            d["quiet_start"], d["quiet_end"] = r
        await self._next(ctx, "quiet")

    async def _on_confirm(self, ctx: Context) -> None:
        yn = parse_yes_no(ctx.text, digits=False) if ctx.picked is None else None
        if ctx.picked == "yes" or yn is True:
            await self._save(ctx, edited=False)
        elif yn is False:
            ctx.say("好的，这次没有订阅。想订阅时回复“订阅岗位”。")
            ctx.end()
        elif ctx.picked == "redo" or ctx.norm in ("重新填写", "重填"):
            ctx.slots["d"] = _draft_defaults(ctx)
            await self._ask(ctx, "place")
        else:
            ctx.reask("请回复 1 确认订阅，或 2 重新填写。")

    async def _save(self, ctx: Context, *, edited: bool) -> None:
        d = ctx.slots["d"]
        sub = await get_subscription(ctx.session, ctx.openid)
        fresh = sub is None or sub.status == CANCELLED
        if sub is None:
            sub = JobSubscription(openid=ctx.openid, created_at=ctx.now, next_digest_at=None)
            ctx.session.add(sub)
        for k, v in d.items():
            setattr(sub, k, v)
        sub.updated_at = ctx.now
        if fresh:
            # Only postings imported from now on are pushed; older ones are one 找工作 away.
            sub.status, sub.cursor, sub.next_digest_at = ACTIVE, await max_posting_id(ctx.session), None
        await ctx.session.flush()
        if edited:
            ctx.say("已修改。\n" + sub_summary(sub))
            ctx.end()
            return
        ctx.say("订阅成功！有符合条件的新岗位会按您的设置推送。\n回复“我的订阅”可修改、暂停或退订。")
        if line := await offer(ctx, "job_alert"):  # 订阅通知 consent is given in WeChat's popup (flows/notices.py)
            ctx.say(line)
        ctx.step = "done"
        ctx.choose([("现在就看看符合条件的在招岗位", "browse")], footer="不看请回复“取消”。")

    async def _on_done(self, ctx: Context) -> None:
        if ctx.picked is None and (yn := parse_yes_no(ctx.text, digits=False)) is not None:
            if not yn:
                ctx.say("好的。回复“找工作”随时可以查看岗位。")
                ctx.end()
                return
            ctx.picked = "browse"
        if ctx.picked == "browse":
            ctx.switch("jobs_search", {"mine": "1"})
            return
        ctx.reroute()


@flow
class JobMine(JobSubscribe):
    """我的订阅: the card and what can be changed."""

    name = "jobs_mine"
    title = "我的订阅"

    async def start(self, ctx: Context) -> None:
        sub = await get_subscription(ctx.session, ctx.openid)
        if sub is None or sub.status == CANCELLED:
            ctx.say("您还没有订阅岗位推送。" if sub is None else "您已退订岗位推送。")
            ctx.step = "offer"
            ctx.choose([("现在订阅", "subscribe")], footer="不需要请回复“取消”。")
            return
        await self._menu(ctx, sub)

    async def _on_offer(self, ctx: Context) -> None:
        if ctx.picked is None and parse_yes_no(ctx.text, digits=False):
            ctx.picked = "subscribe"
        if ctx.picked == "subscribe":
            ctx.switch("jobs_subscribe")
            return
        ctx.reroute()


@flow
class JobUnsubscribe(Flow):
    """退订: confirm (or pause instead), then stop every job push."""

    name = "jobs_unsubscribe"
    title = "退订岗位推送"

    async def start(self, ctx: Context) -> None:
        sub = await get_subscription(ctx.session, ctx.openid)
        if sub is None or sub.status == CANCELLED:
            ctx.say("您目前没有订阅岗位推送，不会收到招聘信息。")
            ctx.end()
            return
        await ctx.ask("confirm", "")
        ctx.choose([("确定退订", "yes"), ("先暂停推送（保留设置）", "pause"), ("不退订了", "no")],
                   header="确定退订岗位推送吗？", footer="回复“取消”退出。")

    async def step(self, ctx: Context) -> None:
        v = ctx.picked
        if v is None and ctx.norm in ("确定退订", "退订"):
            v = "yes"
        if v is None:  # 确定退订吗？ 是的 / 退吧 / 不用了 / 算了
            v = {True: "yes", False: "no", None: None}[parse_yes_no(ctx.text, digits=False)]
        if v == "yes":
            sub = await get_subscription(ctx.session, ctx.openid)
            if sub is not None:
                sub.status, sub.next_digest_at, sub.updated_at = CANCELLED, None, ctx.now
            await _cancel_pending(ctx)
            ctx.say("已退订岗位推送，以后不会再给您发招聘信息。\n想重新订阅请回复“订阅岗位”。")
            ctx.end()
        elif v == "pause":
            ctx.switch("jobs_pause")
        elif v == "no":
            ctx.say("好的，订阅保持不变。回复“我的订阅”可查看。")
            ctx.end()
        else:
            ctx.reask("请回复数字 1-3 选择。")

    async def prompt(self, ctx: Context, step: str) -> None:
        await self.start(ctx)


@flow
class JobPause(Flow):
    name = "jobs_pause"
    title = "暂停岗位推送"

    async def start(self, ctx: Context) -> None:
        sub = await get_subscription(ctx.session, ctx.openid)
        if sub is None or sub.status == CANCELLED:
            ctx.say("您目前没有订阅岗位推送。回复“订阅岗位”可以订阅。")
        elif sub.status == PAUSED:
            ctx.say("岗位推送已经是暂停状态。想恢复请回复“恢复推送”。")
        else:
            sub.status, sub.next_digest_at, sub.updated_at = PAUSED, None, ctx.now
            await _cancel_pending(ctx)
            ctx.say("已暂停岗位推送，设置都保留着。\n想恢复时回复“恢复推送”。")
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)


@flow
class JobResume(Flow):
    name = "jobs_resume"
    title = "恢复岗位推送"

    async def start(self, ctx: Context) -> None:
        sub = await get_subscription(ctx.session, ctx.openid)
        if sub is None or sub.status == CANCELLED:
            ctx.say("您目前没有订阅岗位推送。回复“订阅岗位”可以订阅。")
        elif sub.status == ACTIVE:
            ctx.say("岗位推送正在进行中，不需要恢复。回复“我的订阅”可查看设置。")
        else:
            # Postings that came in during the pause are not pushed late; 找工作 lists them.
            sub.status, sub.cursor, sub.next_digest_at = ACTIVE, await max_posting_id(ctx.session), None
            sub.updated_at = ctx.now
            ctx.say("已恢复岗位推送。以后有符合条件的新岗位会推送给您。\n暂停期间的岗位可回复“找工作”查看。")
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)
