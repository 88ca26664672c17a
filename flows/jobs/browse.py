"""找工作: browse open postings in chat — optional words (找工作 保安 大竹), numbered, paginated, a
detail card. Expired postings never show. Anything the flow does not understand is a new request
(``ctx.reroute``), so "找工作 司机" while a list is open simply starts a new search."""

from __future__ import annotations

import re

from flows.api import Context, Flow, flow, plain_text
from flows.jobs.alerts import criteria_of, settings
from flows.jobs.matching import PostingView, matches, norm_place, rank, related_job_words
from flows.jobs.texts import card, short_line
from storage.jobs import (
    ACTIVE,
    PAUSED,
    JobPosting,
    active_clause,
    get_postings,
    get_subscription,
    search_postings,
)

#: Most postings a "matching my subscription" list holds (kept in the conversation).
MAX_MINE = 200
NEXT_WORDS = ("下一页", "下页", "更多", "下一", "next", "n")
PREV_WORDS = ("上一页", "上页", "上一", "prev", "p")


def word_groups(text: str, categories: dict[str, list[str]]) -> list[list[str]]:
    """Each typed word becomes a group of alternatives: a category name stands for its words; a
    place name also matches without its suffix (庙坝镇 → 庙坝); a kind of work also matches the words
    postings use for it (开车 → 司机, 驾驶; :func:`flows.jobs.matching.related_job_words`). Traditional
    characters are read as simplified (開車 → 开车)."""
    from flows.api import normalize

    groups: list[list[str]] = []
    for raw in re.split(r"[\s,，、;；/]+", text.strip()):
        w = normalize(raw)
        if not w:
            continue
        if raw in categories:
            groups.append([normalize(x) for x in categories[raw]])
            continue
        alts = [w]
        p = norm_place(raw)
        if p != w:
            alts.append(p)
        alts += [x for x in related_job_words(w) if x not in alts]
        groups.append(alts)
    return groups


async def matching_my_subscription(ctx: Context) -> list[int] | None:
    """Ids of open postings matching the user's subscription, best first (None: no subscription)."""
    from sqlalchemy import select

    sub = await get_subscription(ctx.session, ctx.openid)
    if sub is None or sub.status not in (ACTIVE, PAUSED):
        return None
    s = settings(ctx.config)
    crit = criteria_of(sub, s)
    rows = (await ctx.session.execute(select(JobPosting).where(active_clause(ctx.now)))).scalars()
    views = [v for v in (PostingView.of(p) for p in rows) if matches(crit, v)]
    views.sort(key=lambda v: rank(crit, v), reverse=True)
    return [v.id for v in views[:MAX_MINE]]


@flow
class JobSearch(Flow):
    name = "jobs_search"
    title = "找工作"

    async def start(self, ctx: Context) -> None:
        words = (ctx.intent_slots.get("words") or "").strip()
        ctx.slots.update({"words": words, "page": 0})
        if ctx.intent_slots.get("mine"):
            ids = await matching_my_subscription(ctx)
            if ids is None:
                ctx.say("您还没有订阅岗位。回复“订阅岗位”设置条件。")
                ctx.end()
                return
            ctx.slots["ids"] = ids
        await self._page(ctx)

    async def _fetch(self, ctx: Context, page: int) -> tuple[int, list[JobPosting]]:
        size = settings(ctx.config).page_size
        if "ids" in ctx.slots:
            ids = ctx.slots["ids"]
            chunk = ids[page * size:(page + 1) * size]
            got = await get_postings(ctx.session, chunk)
            # A posting may have expired since the list was made.
            live = [got[i] for i in chunk if i in got and (got[i].expires_at is None or got[i].expires_at > ctx.now)]
            return len(ids), live
        groups = word_groups(ctx.slots.get("words", ""), settings(ctx.config).categories)
        return await search_postings(ctx.session, ctx.now, groups, offset=page * size, limit=size)

    async def _page(self, ctx: Context) -> None:
        size = settings(ctx.config).page_size
        page = int(ctx.slots.get("page", 0))
        total, items = await self._fetch(ctx, page)
        pages = max(1, (total + size - 1) // size)
        if page >= pages:
            page = pages - 1
            ctx.slots["page"] = page
            total, items = await self._fetch(ctx, page)
        words = ctx.slots.get("words", "")
        if total == 0:
            if words:
                ctx.say(f"没有找到与“{plain_text(words)}”相关的在招岗位。\n可以少写几个词再试，如“找工作 保安”；"
                        "回复“订阅岗位”，有合适的新岗位时通知您。")
            else:
                ctx.say("目前没有在招的岗位。\n回复“订阅岗位”，有合适的新岗位时第一时间通知您。")
            ctx.end()
            return
        ctx.step = "list"
        what = f"“{plain_text(words)}”相关" if words else ("符合您订阅条件的" if "ids" in ctx.slots else "在招")
        header = f"找到 {total} 个{what}岗位" + (f"（第 {page + 1}/{pages} 页）" if pages > 1 else "") + "："
        options: list[tuple[str, str]] = [(short_line(p), f"p:{p.id}") for p in items]
        if page + 1 < pages:
            options.append(("下一页", "next"))
        if page > 0:
            options.append(("上一页", "prev"))
        footer = "回复数字看详情（★退役军人优先）。\n换条件请发“找工作 保安 大竹”这样的词；回复“取消”退出。"
        ctx.choose(options, header=header, footer=footer)

    async def step(self, ctx: Context) -> None:
        value = ctx.picked
        if value is None:
            t = ctx.norm
            if t in NEXT_WORDS:
                value = "next"
            elif t in PREV_WORDS:
                value = "prev"
        if ctx.step == "detail" and value is None and ctx.norm in ("列表", "返回列表"):
            value = "list"
        if value is None:
            ctx.reroute()  # a new request, not a wrong answer
            return
        if value in ("next", "prev"):
            ctx.slots["page"] = max(0, int(ctx.slots.get("page", 0)) + (1 if value == "next" else -1))
            await self._page(ctx)
            return
        if value == "list":
            await self._page(ctx)
            return
        if value == "sub":
            ctx.switch("jobs_subscribe")
            return
        if isinstance(value, str) and value.startswith("p:"):
            await self._detail(ctx, int(value[2:]))
            return
        ctx.reroute()

    async def _detail(self, ctx: Context, posting_id: int) -> None:
        p = (await get_postings(ctx.session, [posting_id])).get(posting_id)
        if p is None or (p.expires_at is not None and p.expires_at <= ctx.now):
            ctx.say("这个岗位已经截止或撤下了。")
            await self._page(ctx)
            return
        await ctx.ask("detail", card(p))
        ctx.choose([("返回列表", "list"), ("订阅类似岗位的提醒", "sub")], footer="回复“取消”退出。")

    async def prompt(self, ctx: Context, step: str) -> None:
        await self._page(ctx)
