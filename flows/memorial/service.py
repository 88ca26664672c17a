"""What a tribute or a message does, the same from chat and from the memorial page.

The chat flow and ``bot/web/memorial.py`` both call :func:`pay_tribute` and :func:`leave_message` inside
their transaction, so the counting rule, the moderation rule and the texts exist once.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import FlowError, Services, clip, fmt_local, plain_text, to_local
from flows.memorial import texts
from flows.memorial.wordfilter import WordFilter
from storage import linktokens
from storage import memorial as store
from storage.outbox import HIGH, Push, enqueue

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

SILENCE_S = 60


def local_day(now: datetime, tz: str) -> date:
    """The local calendar day (``bot.timezone``) of a naive UTC time: the unit of "once per day"."""
    return to_local(now, tz).date()


#: ``kind`` of the memorial's link tokens (:mod:`storage.linktokens`).
LINK_KIND = "memorial"


def page_path(martyr_id: int) -> str:
    return "/m/" if martyr_id == store.MEMORIAL else f"/m/{martyr_id}"


def public_link(config: Any, martyr_id: int) -> str:
    """The page anyone may read (no tribute buttons): for pushes read later, when a personal link would
    have expired."""
    return f"{config.server.public_url.rstrip('/')}{page_path(martyr_id)}"


def link_ttl(config: Any) -> timedelta:
    """How long a personal memorial link lives (``memorial.link_ttl_h``)."""
    return timedelta(hours=config.memorial.link_ttl_h)


async def page_link(session: AsyncSession, config: Any, openid: str, martyr_id: int, now: datetime,
                    ttl: timedelta | None = None) -> str:
    """A personal link to a memorial page: its tribute buttons and 寄语 form act as ``openid`` without a
    login. The link holds an opaque random token (stored hashed with its owner, see
    :mod:`storage.linktokens`) valid ``memorial.link_ttl_h``; it reveals nothing about the user."""
    token = await linktokens.issue(session, LINK_KIND, openid, None, ttl or link_ttl(config), now=now)
    return f"{public_link(config, martyr_id)}?t={token}"


def word_filter(services: Services) -> WordFilter:
    """The current word list (reloaded when staff edit the file)."""
    wf = services.words
    if wf is None:
        raise FlowError("the memorial word list is not loaded (flows.memorial.flow's on_startup hook sets "
                        "services.words)")
    fresh = wf.current()
    if fresh is not wf:
        services.words = fresh
    return fresh


_PARTICIPANTS: dict[str, tuple[float, int]] = {}
PARTICIPANTS_TTL_S = 30.0


async def participants(session: AsyncSession) -> int:
    """参与人数 for the memorial menu and page: a count(*) kept for 30 s (it is shown, not counted on)."""
    now = time.monotonic()
    hit = _PARTICIPANTS.get("n")
    if hit is not None and now - hit[0] < PARTICIPANTS_TTL_S:
        return hit[1]
    n = await store.participant_count(session)
    _PARTICIPANTS["n"] = (now, n)
    return n


@dataclass
class TributeOutcome:
    counted: bool
    n: int | None
    text: str


async def pay_tribute(session: AsyncSession, config: Any, *, openid: str, martyr_id: int, name: str | None,
                      action: str, now: datetime, silence_push: bool = True) -> TributeOutcome:
    """Count (or thank for) one tribute; for 默哀 in chat, queue the "minute is over" reply."""
    day = local_day(now, config.bot.timezone)
    res = await store.record_tribute(session, openid, martyr_id, action, day)
    text = (texts.counted_text(action, name, res.n or 0) if res.counted else texts.repeat_text(action, name))
    if action == "silence" and silence_push:
        due = now + timedelta(seconds=SILENCE_S)
        who = texts.target_name(name)
        end = f"一分钟默哀结束。感谢您{texts.phrase('silence', name)}，英雄永垂不朽。"
        # The public page: this push is on the peak's hot path (no token row to write) and the user who
        # just paid the tribute needs no buttons from it.
        url = public_link(config, martyr_id)
        await enqueue(session, Push(
            openid=openid, purpose="memorial_reminder",
            key=f"memorial:silence:{martyr_id}:{now:%Y%m%d%H%M}", text=end, priority=HIGH, due_at=due,
            data={"title": "默哀结束", "content": end, "time": fmt_local(due, config.bot.timezone), "url": url,
                  "martyr": who},
            url=url, ref_type="memorial_martyr", ref_id=martyr_id), now)
        text += f"\n请起立，为{who}默哀一分钟……一分钟后我会告诉您。"
    return TributeOutcome(res.counted, res.n, text)


@dataclass
class MessageOutcome:
    """``status`` is approved / pending / rejected, or ``invalid`` when nothing was stored."""

    status: str
    text: str
    message_id: int | None = None
    #: The author may try again now (too short, too long, filtered); False for the daily cap.
    retry: bool = False


async def leave_message(session: AsyncSession, config: Any, words: WordFilter, *, openid: str, martyr_id: int,
                        name: str | None, text: str, preset: bool, now: datetime) -> MessageOutcome:
    """A 寄语: a preset phrase is public at once; free text goes through the word filter, then waits for
    staff (pending). Filter hits are stored as rejected (staff can see what was tried) and the author is
    asked kindly to rephrase."""
    mc = config.memorial
    day = local_day(now, config.bot.timezone)
    body = " ".join(_CONTROL.sub(" ", text).split())  # control characters (a NUL from a web form) go
    if not preset:
        if len(body) < 2:
            return MessageOutcome("invalid", "寄语太短了，请再多写几个字。", retry=True)
        if len(body) > mc.message_max_chars:
            return MessageOutcome("invalid", f"寄语最多 {mc.message_max_chars} 个字，您写了 {len(body)} 个字，请精简一些。", retry=True)
    if await store.messages_today(session, openid, martyr_id, day) >= mc.messages_per_day:
        return MessageOutcome("invalid", f"您今天已经{texts.phrase('message', name)} {mc.messages_per_day} 条了，"
                                         "明天可以再来。谢谢您！")
    if preset:
        msg = await store.add_message(session, openid=openid, martyr_id=martyr_id, text=body, preset=True,
                                      status=store.APPROVED, now=now, day=day)
        res = await store.record_tribute(session, openid, martyr_id, "message", day)
        lead = texts.counted_text("message", name, res.n or 0) if res.counted else "寄语已献上。"
        return MessageOutcome(store.APPROVED, f"{lead}\n“{plain_text(body)}”已展示在纪念馆中。", msg.id)
    hits = words.hits(body)
    if hits:
        await store.add_message(session, openid=openid, martyr_id=martyr_id, text=body, preset=False,
                                status=store.REJECTED, now=now, day=day,
                                reason=("敏感词：" + "、".join(hits))[:200])
        return MessageOutcome(store.REJECTED, "您的寄语里有不适合公开展示的字词，没能提交。"
                                              "请换一种说法再写，或回复数字选一句预设寄语。", retry=True)
    msg = await store.add_message(session, openid=openid, martyr_id=martyr_id, text=body, preset=False,
                                  status=store.PENDING, now=now, day=day)
    res = await store.record_tribute(session, openid, martyr_id, "message", day)
    lead = texts.counted_text("message", name, res.n or 0) if res.counted else "寄语已收到。"
    return MessageOutcome(store.PENDING, f"{lead}\n您的寄语已提交，工作人员审核后公开展示，请耐心等待。", msg.id)


#: Longest staff reason quoted to the author (the push stays phone-sized).
REASON_CHARS = 80


async def notify_decision(session: AsyncSession, config: Any, msg: store.MemorialMessage, name: str | None,
                          now: datetime, reason: str | None = None) -> None:
    """Tell the author how staff decided, in the transaction of the decision; a rejection kindly, with
    staff's reason when they gave one (``reason``, else the one stored with the decision), as plain text:
    it is put into a chat message."""
    who = texts.target_name(name)
    why = clip(" ".join(plain_text(reason if reason is not None else (msg.reason or "")).split()), REASON_CHARS)
    if msg.status == store.APPROVED:
        text = f"您给{who}写的寄语已审核通过，已在网上纪念馆展示。谢谢您！"
        title, content = "寄语已展示", text
    else:
        text = (f"您给{who}写的寄语这次没能公开展示" + (f"，原因：{why}" if why else "") + "。感谢您的理解。"
                "如愿意，可以换一种说法再写一条，或选用预设寄语。")
        title, content = "寄语审核结果", (f"未能展示：{why}" if why else "寄语未能公开展示")
    # The public page: a decision may be read days later, when a personal link would have expired.
    url = public_link(config, msg.martyr_id)
    await enqueue(session, Push(openid=msg.openid, purpose="notice", key=f"memorial:msg:{msg.id}:decided",
                                text=text, url=url, ref_type="memorial_message", ref_id=msg.id,
                                data={"title": title, "content": content,
                                      "time": fmt_local(now, config.bot.timezone), "url": url}), now)
