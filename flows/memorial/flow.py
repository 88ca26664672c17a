"""云端祭英烈 in chat: the memorial menu, the martyr roll search, record cards, tributes, 寄语, 提醒我.

Steps (``ctx.step``) of the ``memorial`` flow (``martyr_search`` is the same flow entered at the search):

* ``home``    — the memorial as a whole (target 0): 献花 / 敬礼 / 点烛 / 默哀 / 寄语 / 查找英烈 / 提醒我
  (提醒我 and 取消提醒 themselves are :mod:`flows.memorial.remind`);
* ``search``  — waiting for a name, pinyin initials (hjg), hometown or unit;
* ``results`` — a numbered page of matches (回复数字查看, 回复“下一页”); ``slots.act`` remembers a tribute
  asked for by name (献花 张三 with several 张三: the pick pays it);
* ``card``    — one martyr's record with counts and the same actions;
* ``message`` — waiting for a 寄语: a number picks a preset phrase, any text is free text.

A tribute is one message (``献花``, ``为黄继光烈士献花``, or a digit on a menu) and costs the database three
statements — the per-day row, the participant row, the counter — plus an index lookup when a name is
given (see :func:`storage.memorial.record_tribute`): the chat path of the Qingming peak.
Global commands stay global: 留言 is 人工's word, so the memorial says 寄语.
"""

from __future__ import annotations

import re
from typing import Any

from flows.api import Context, Flow, Services, flow, normalize, on_startup, plain_text
from flows.memorial import remind, service, texts
from flows.memorial.names import clean_query, is_letters
from flows.memorial.wordfilter import WordFilter
from storage import memorial as store

ACTION_MENU = [("献花", "flower"), ("敬礼", "salute"), ("点烛", "candle"), ("默哀一分钟", "silence"),
               ("写寄语", "message")]
NEXT_PAGE = frozenset({"下一页", "下页", "更多", "下一页结果", "后一页"})
PREV_PAGE = frozenset({"上一页", "上页", "前一页"})
# The bare words inside the memorial; anything longer (清明节提醒我, 不要再提醒我了) is rerouted to the
# memorial_remind / memorial_unremind intents, which say the same.
REMIND_ON = frozenset({"提醒我", "提醒", "要提醒", "开启提醒", "清明提醒", "祭扫提醒", "祭英烈提醒"})
REMIND_OFF = frozenset({"取消提醒", "不要提醒", "不要提醒了", "关闭提醒", "停止提醒", "别提醒了"})
SEARCH_WORDS = frozenset({"查找英烈", "查找", "搜索", "查英烈", "找烈士", "英烈名录", "查找其他英烈", "查烈士"})
HOME_WORDS = frozenset({"纪念馆", "云端祭英烈", "祭英烈", "返回纪念馆"})
_QUERY_CLEAN = re.compile(r"(烈士|英烈|同志)$")
#: 查找英烈 黄继光 typed inside the flow (the martyr_search intent's regex).
SEARCH_RX = re.compile(r"^(?:查找|查询|搜索|查|找|搜)(?:英烈|烈士)\s*[:：]?\s*(?P<q>\S.{0,30})$")


@on_startup
async def _load_words(services: Services) -> None:
    """Load the sensitive-word list at start: a broken list stops start-up with file, line and hint."""
    cfg = services.config
    services.words = WordFilter.from_file(cfg.path(cfg.memorial.wordlist))


def _offer(ctx: Context, options: list[tuple[str, Any]], line: str) -> None:
    """Numbered options written on one compact line (after an action the full list is too long)."""
    ctx.choices = [{"label": label, "value": value} for label, value in options]
    ctx.choice_kind = "flow"
    ctx.say(line)


@flow
class Memorial(Flow):
    name = "memorial"
    title = "云端祭英烈"

    # --- entry ---------------------------------------------------------------------------------
    async def start(self, ctx: Context) -> None:
        s = ctx.intent_slots
        if s.get("act"):
            action = texts.action_of(normalize(s["act"])) or "flower"
            await self._by_name(ctx, action, _clean_name(s.get("name", "")))
        else:
            await self._home(ctx)

    async def prompt(self, ctx: Context, step: str) -> None:
        if step == "results":
            await self._show_page(ctx)
        elif step == "card":
            await self._card(ctx, int(ctx.slots["mid"]))
        elif step == "search":
            await self._ask_search(ctx)
        elif step == "message":
            await self._ask_message(ctx)
        else:
            await self._home(ctx)

    # --- views ---------------------------------------------------------------------------------
    async def _home(self, ctx: Context) -> None:
        ctx.step = "home"
        ctx.slots = {}
        opted = await store.is_opted_in(ctx.session, ctx.openid)
        people = await service.participants(ctx.session)
        lines = ["【云端祭英烈】缅怀先烈，致敬英雄。"]
        if people:
            lines.append(f"已有 {people:,} 人参与云端祭扫。")
        link = await service.page_link(ctx.session, ctx.config, ctx.openid, store.MEMORIAL, ctx.now)
        ctx.say("\n".join(lines))
        options = [(label + ("（向全体英烈）" if v == "flower" else ""), v) for label, v in ACTION_MENU]
        options += [("查找英烈（姓名/首字母/籍贯/部队）", "search"),
                    ("取消清明、烈士纪念日提醒" if opted else "提醒我（清明、烈士纪念日）", "unremind" if opted else "remind")]
        ctx.choose(options, header="回复数字：",
                   footer=f'<a href="{link}">打开网上纪念馆</a>\n回复“取消”退出。')

    async def _card(self, ctx: Context, martyr_id: int) -> None:
        m = await store.get_martyr(ctx.session, martyr_id)
        if m is None:
            ctx.say("这条记录已不在名录中。")
            await self._home(ctx)
            return
        ctx.slots["mid"], ctx.slots["mname"] = m.id, m.name
        ctx.slots.pop("act", None)
        c = await store.counts(ctx.session, m.id)
        messages = await store.approved_count(ctx.session, m.id)
        ctx.say(texts.card(m, c, messages, ctx.config.memorial.bio_chars))
        link = await service.page_link(ctx.session, ctx.config, ctx.openid, m.id, ctx.now)
        options = [*ACTION_MENU, ("查找其他英烈", "search")]
        ctx.choose(options, header="回复数字：", footer=f'<a href="{link}">打开纪念页（事迹全文、寄语）</a>\n回复“取消”退出。')

    def _after_action(self, ctx: Context) -> None:
        if ctx.step == "card":
            _offer(ctx, [*ACTION_MENU, ("查找其他英烈", "search")],
                   "回复 1献花 2敬礼 3点烛 4默哀 5寄语 6查找其他英烈，回复“取消”退出。")
        else:
            _offer(ctx, [*ACTION_MENU, ("查找英烈", "search")],
                   "回复 1献花 2敬礼 3点烛 4默哀 5寄语 6查找英烈，回复“取消”退出。")

    async def _ask_search(self, ctx: Context) -> None:
        await ctx.ask("search", "请输入烈士的姓名（可只输一部分）、姓名拼音首字母（如 hjg）、籍贯或部队：\n"
                                "（回复“取消”退出）")

    async def _ask_message(self, ctx: Context) -> None:
        presets = ctx.config.memorial.preset_messages
        who = texts.target_name(ctx.slots.get("mname"))
        await ctx.ask("message", "")
        ctx.choose([(p, i) for i, p in enumerate(presets)], header=f"给{who}写寄语。回复数字选一句：",
                   footer=f"或直接输入您想说的话（{ctx.config.memorial.message_max_chars}字以内，审核后展示）。"
                          "回复“返回”回到上一步。")

    # --- actions -------------------------------------------------------------------------------
    async def _tribute(self, ctx: Context, action: str) -> None:
        if action == "message":
            await self._ask_message(ctx)
            return
        mid = int(ctx.slots.get("mid") or store.MEMORIAL)
        name = ctx.slots.get("mname") if mid else None
        out = await service.pay_tribute(ctx.session, ctx.config, openid=ctx.openid, martyr_id=mid, name=name,
                                        action=action, now=ctx.now)
        ctx.say(out.text)
        self._after_action(ctx)

    async def _by_name(self, ctx: Context, action: str, name: str) -> None:
        """献花 / 为黄继光烈士献花: the memorial when no name, else the martyr (a list when ambiguous)."""
        if name in texts.ALL_NAMES:
            ctx.step, ctx.slots = "home", {}
            await self._tribute(ctx, action)
            return
        found = await store.martyrs_named(ctx.session, name)
        if len(found) == 1:
            ctx.step = "card"
            ctx.slots = {"mid": found[0][0], "mname": found[0][1]}
            await self._tribute(ctx, action)
            return
        ctx.slots = {"act": action}
        if found:
            await self._search(ctx, name)
            return
        total = await self._search(ctx, name, quiet=True)
        if total == 1:
            return
        if not total:
            ctx.step, ctx.slots = "home", {}
            ctx.choose([(texts.phrase(action, None), action), ("查找英烈", "search")],
                       header=f"名录里没有找到“{plain_text(name)}”。您可以：", footer="回复“取消”退出。")

    async def _search(self, ctx: Context, query: str, quiet: bool = False) -> int:
        """Run a search and show page 1 (one hit: its card, or the pending tribute paid). Returns the total."""
        q = clean_query(query)
        letters = is_letters(q)
        ps = ctx.config.memorial.page_size
        total, page = await store.search_martyrs(ctx.session, q, letters=letters, limit=ps)
        if total == 0:
            if not quiet:
                ctx.reask(f"没有找到“{plain_text(query.strip())}”。可以换个写法：姓名的一部分、拼音首字母（如 hjg）、"
                          "籍贯或部队。回复“取消”退出。")
            return 0
        action = ctx.slots.get("act")
        if total == 1:
            m = page[0]
            if action:
                ctx.step = "card"
                ctx.slots = {"mid": m.id, "mname": m.name}
                await self._tribute(ctx, action)
            else:
                await ctx.ask("card", "")
                await self._card(ctx, m.id)
            return 1
        await ctx.ask("results", "")
        ctx.slots.update({"q": q, "page": 0, "total": total})
        self._render_page(ctx, page, total)
        return total

    async def _show_page(self, ctx: Context) -> None:
        ps = ctx.config.memorial.page_size
        q, page_no = str(ctx.slots.get("q", "")), int(ctx.slots.get("page", 0))
        total, page = await store.search_martyrs(ctx.session, q, letters=is_letters(q), limit=ps,
                                                 offset=page_no * ps)
        if not page and page_no:
            ctx.slots["page"] = page_no = 0
            total, page = await store.search_martyrs(ctx.session, q, letters=is_letters(q), limit=ps)
        ctx.step = "results"
        ctx.slots["total"] = total
        self._render_page(ctx, page, total)

    def _render_page(self, ctx: Context, page: list[Any], total: int) -> None:
        ps = ctx.config.memorial.page_size
        page_no = int(ctx.slots.get("page", 0))
        pages = (total + ps - 1) // ps
        action = ctx.slots.get("act")
        head = f"找到 {total} 位英烈" + (f"（第 {page_no + 1}/{pages} 页）" if pages > 1 else "") + "："
        foot = "回复数字" + (f"为这位英烈{texts.LABEL[action]}" if action else "查看")
        if page_no + 1 < pages:
            foot += "，回复“下一页”看更多"
        if page_no > 0:
            foot += "，“上一页”返回前页"
        foot += "。回复“取消”退出。"
        ctx.choose([(texts.summary(m), m.id) for m in page], header=head, footer=foot)

    async def _remind(self, ctx: Context, on: bool) -> None:
        await remind.remind(ctx, on)

    # --- messages ------------------------------------------------------------------------------
    async def _message(self, ctx: Context) -> None:
        mid = int(ctx.slots.get("mid") or store.MEMORIAL)
        name = ctx.slots.get("mname") if mid else None
        presets = ctx.config.memorial.preset_messages
        preset = ctx.picked is not None
        text = presets[int(ctx.picked)] if preset else ctx.text
        out = await service.leave_message(ctx.session, ctx.config, service.word_filter(ctx.services),
                                          openid=ctx.openid, martyr_id=mid, name=name, text=text, preset=preset,
                                          now=ctx.now)
        if out.retry:
            if ctx.reask(out.text):
                ctx.choose([(p, i) for i, p in enumerate(presets)], header="回复数字选一句：",
                           footer="或重新输入。回复“返回”回到上一步。")
            return
        ctx.say(out.text)
        ctx.step = "card" if mid else "home"
        self._after_action(ctx)

    # --- turns ---------------------------------------------------------------------------------
    async def step(self, ctx: Context) -> None:
        step = ctx.step or "home"
        if step == "message":
            await self._message(ctx)
            return
        if step == "search":
            if ctx.picked is not None:  # "查找英烈" picked from a list
                await self._ask_search(ctx)
                return
            await self._search(ctx, ctx.text)
            return
        if ctx.picked is not None:
            await self._picked(ctx, step, ctx.picked)
            return
        norm = normalize(ctx.text)
        if step == "results" and norm in NEXT_PAGE | PREV_PAGE:
            ps = ctx.config.memorial.page_size
            pages = (int(ctx.slots.get("total", 0)) + ps - 1) // ps
            page_no = int(ctx.slots.get("page", 0)) + (1 if norm in NEXT_PAGE else -1)
            if not 0 <= page_no < pages:
                ctx.say("已经是最后一页了。" if norm in NEXT_PAGE else "已经是第一页了。")
                page_no = max(0, min(page_no, pages - 1))
            ctx.slots["page"] = page_no
            await self._show_page(ctx)
            return
        action = texts.action_of(norm)
        if action is not None and step in ("home", "card"):
            await self._tribute(ctx, action)
            return
        m = SEARCH_RX.match(ctx.text.strip())
        if m:
            ctx.slots.pop("act", None)
            await self._search(ctx, m.group("q"))
            return
        parsed = parse_tribute(ctx.text)
        if parsed is not None:
            await self._by_name(ctx, parsed[0], parsed[1])
            return
        if norm in REMIND_ON or norm in REMIND_OFF:
            await self._remind(ctx, norm in REMIND_ON)
            self._after_action(ctx)
            return
        if norm in SEARCH_WORDS:
            await self._ask_search(ctx)
            return
        if norm in HOME_WORDS:
            await self._home(ctx)
            return
        if step == "results":
            # Another name typed over the list: search again.
            ctx.slots.pop("act", None)
            if await self._search(ctx, ctx.text, quiet=True):
                return
            ctx.say(f"没有找到“{plain_text(ctx.text)}”。")
            await self._show_page(ctx)
            return
        if await self._maybe_search(ctx):
            return
        # Anything else is a new request, not a wrong answer (the memorial only waits for optional picks).
        ctx.reroute()

    async def _maybe_search(self, ctx: Context) -> bool:
        """On a card or the memorial menu a bare name or initials (张建国, hjg) is a new search, unless an
        intent claims the text (then it is a new request)."""
        matcher = ctx.services.matcher
        if matcher is not None and matcher.match(ctx.text, ctx.user.role_set).intent is not None:
            return False
        q = clean_query(ctx.text)
        if not q or len(q) > 12:
            return False
        ctx.slots.pop("act", None)
        return await self._search(ctx, ctx.text, quiet=True) > 0

    async def _picked(self, ctx: Context, step: str, value: Any) -> None:
        if step == "results":
            action = ctx.slots.get("act")
            m = await store.get_martyr(ctx.session, int(value))
            if m is None:
                ctx.say("这条记录已不在名录中。")
                await self._show_page(ctx)
                return
            if action:
                ctx.step = "card"
                ctx.slots = {"mid": m.id, "mname": m.name}
                await self._tribute(ctx, action)
                return
            await ctx.ask("card", "")
            await self._card(ctx, m.id)
            return
        if value == "search":
            ctx.slots = {}
            await self._ask_search(ctx)
        elif value in ("remind", "unremind"):
            await self._remind(ctx, value == "remind")
            self._after_action(ctx)
        elif value in store.ACTIONS:
            await self._tribute(ctx, value)
        else:
            await self._home(ctx)


@flow
class MartyrSearch(Memorial):
    """英烈名录: the same flow entered at the search (查找英烈 黄继光 searches at once)."""

    name = "martyr_search"
    title = "英烈名录"

    async def start(self, ctx: Context) -> None:
        q = (ctx.intent_slots.get("q") or "").strip()
        if q:
            await self._search(ctx, q)
            return
        await self._ask_search(ctx)


# The same words the intents use (intents/memorial.yaml), for a tribute by name typed inside the flow.
_BY_NAME = [
    re.compile(r"^(?:我要|我想|我来)?(?:为|给|向)?(?P<name>.{0,12}?)(?:烈士|英烈|英雄|先烈)?(?:们)?\s*"
               r"(?P<act>献花|献一束花|送花|敬礼|点烛|点蜡烛|点亮蜡烛|默哀|写寄语|献上寄语|寄语)[!.。~]*$"),
    re.compile(r"^(?P<act>献花|敬礼|点烛|点蜡烛|默哀|写寄语|寄语)\s*(?:给|为|向)?\s*(?P<name>.{1,12}?)(?:烈士)?[!.。~]*$"),
    re.compile(r"^(?:我要|我想)?(?:为|给|向)(?P<name>.{1,12}?)(?:烈士|英烈|英雄|先烈)?(?:们)?\s*(?P<act>写留言|留言)[!.。~]*$"),
]


def parse_tribute(text: str) -> tuple[str, str] | None:
    """("flower", "黄继光") for 为黄继光烈士献花 / 献花 黄继光; None when the text is not a tribute by name."""
    from flows.api import light_normalize

    t = light_normalize(text)
    for rx in _BY_NAME:
        m = rx.match(t)
        if m:
            action = texts.action_of(normalize(m.group("act"))) or "flower"
            return action, _clean_name(m.group("name") or "")
    return None


def _clean_name(name: str) -> str:
    n = "".join(name.split()).strip("，,。.!！")
    return n if n in texts.ALL_NAMES else _QUERY_CLEAN.sub("", n) or n


