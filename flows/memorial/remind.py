"""祭扫提醒: 提醒我 opts in and 取消提醒 opts out, each in one message, from anywhere.

Intents ``memorial_remind`` (提醒我, 清明节提醒我, 记得提醒我, 开启提醒 …) and ``memorial_unremind``
(取消提醒, 不要提醒了, 别再提醒我了 …) in ``intents/memorial.yaml`` start the one-step flows below; the
memorial menu's 提醒我 / 取消提醒 item says the same through :func:`remind`. The reply says what will be
reminded and when — the next campaign days (清明 computed per year, 9·30, and any campaign staff added)
and the hour (``memorial.reminder_hour``) — so nobody thinks it is done when it is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import Context, Flow, flow, plain_text, to_local
from flows.memorial.calendar import builtin_campaigns
from flows.notices import offer
from storage import memorial as store

#: How many coming campaign days the confirmation lists.
SHOWN = 2
KIND_NAME = {"qingming": "清明节", "martyrs_day": "烈士纪念日"}


@dataclass(frozen=True)
class Upcoming:
    day: date
    name: str


def hour_text(hour: int) -> str:
    """8 → 上午8点, 12 → 中午12点, 15 → 下午3点, 20 → 晚上8点, 5 → 凌晨5点."""
    if hour < 6:
        return f"凌晨{hour}点"
    if hour < 12:
        return f"上午{hour}点"
    if hour == 12:
        return "中午12点"
    return f"{'下午' if hour < 18 else '晚上'}{hour - 12}点"


def day_text(day: date, today: date) -> str:
    return f"{day.month}月{day.day}日" if day.year == today.year else f"{day.year}年{day.month}月{day.day}日"


async def upcoming(session: AsyncSession, config: Any, now: datetime, limit: int = SHOWN) -> list[Upcoming]:
    """The next campaign days a reminder will go out on: built-in ones (computed, so they are known
    before the campaign tick writes them) and the ones staff added, soonest first."""
    local = to_local(now, config.bot.timezone)
    today = local.date()
    # Today's reminders are still to come before the reminder hour; after it, they went out already.
    passed = local.hour >= config.memorial.reminder_hour
    found: dict[str, Upcoming] = {}
    for year in (today.year, today.year + 1):
        for c in builtin_campaigns(year):
            found[c.code] = Upcoming(c.day, KIND_NAME.get(c.kind, c.title))
        for row in await store.campaigns(session, year):
            if row.code not in found and row.reminded_at is None:
                found[row.code] = Upcoming(row.day, plain_text(row.title))
    days = sorted((u for u in found.values() if u.day > today or (u.day == today and not passed)),
                  key=lambda u: u.day)
    return days[:limit]


async def remind(ctx: Context, on: bool) -> None:
    """Opt ``ctx.openid`` in or out and say so, with what will be reminded and when."""
    if not on:
        gone = await store.opt_out(ctx.session, ctx.openid)
        ctx.say("好的，已关闭祭扫提醒，以后清明节、烈士纪念日不再给您发提醒。\n想再开启，回复“提醒我”。" if gone else
                "您没有开启祭扫提醒，不会收到提醒消息。\n想开启，回复“提醒我”。")
        return
    new = await store.opt_in(ctx.session, ctx.openid, ctx.now)
    days = await upcoming(ctx.session, ctx.config, ctx.now)
    lines = ["好的，已为您开启祭扫提醒。" if new else "您已经开启了祭扫提醒，不用重复设置。"]
    if days:
        today = to_local(ctx.now, ctx.config.bot.timezone).date()
        lines.append("接下来会在这些日子提醒您：")
        lines += [f"· {day_text(u.day, today)} {u.name}" for u in days]
    hour = hour_text(ctx.config.memorial.reminder_hour)
    lines.append(f"当天{hour}以后，我们会给您发一条消息，请您来云端祭英烈（献花、寄语）。"
                 if new else f"当天{hour}以后会给您发消息。")
    lines.append("不想要了，随时回复“取消提醒”。")
    ctx.say("\n".join(lines))
    if line := await offer(ctx, "memorial_reminder"):  # 订阅通知 consent (flows/notices.py)
        ctx.say(line)


@flow
class RemindOn(Flow):
    """提醒我: opt in, in one message."""

    name = "memorial_remind"
    title = "祭扫提醒"

    async def start(self, ctx: Context) -> None:
        await remind(ctx, True)
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)


@flow
class RemindOff(Flow):
    """取消提醒: opt out, in one message."""

    name = "memorial_unremind"
    title = "取消祭扫提醒"

    async def start(self, ctx: Context) -> None:
        await remind(ctx, False)
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)
