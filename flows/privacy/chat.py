"""In chat: 个人信息保护 (the notice and what one can do), 我的数据 (everything stored, with a link to the page
and its JSON download) and 注销 / 删除我的信息 (says what will go, asks for 确认, erases)."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import partial
from typing import Any

from flows.api import Context, Flow, flow, normalize, parse_yes_no
from flows.privacy import texts
from flows.privacy.notice import load_notice
from flows.privacy.service import erase_person
from storage import linktokens
from storage import privacy as store
from storage.turnio import LazySession

#: link_tokens kind of the 我的数据 page links.
EXPORT_KIND = "privacy_export"
#: A reply to the 注销 question is byte-limited like any reply; the link must never be the part cut off.
_BUDGET = 1900
_WEAK = frozenset({"嗯", "嗯嗯", "恩", "恩恩", "嗯呐", "嗯哪", "好吧", "那好", "那行", "哦", "噢", "好吧好吧"})
_STRONG_YES = re.compile(r"确认|确定|同意")
_KEEP_WORDS = re.compile(r"^(?:我)?(?:不|别|不要|先不|暂时不|还是不)(?:要)?(?:删|注销|清除)")
_ERASE_WORDS = re.compile(r"^(?:我)?(?:确认|确定|同意|要)?(?:删除|注销|删掉|删了|清除)(?:吧|掉|了|全部|我的信息|我的数据|信息|数据)*$")


def _fit(head: str, lines: list[str], tail: str) -> str:
    """``head``, as many of ``lines`` as fit in the reply budget, ``tail`` (which always stays)."""
    used = len(head.encode()) + len(tail.encode()) + 40
    kept: list[str] = []
    for i, line in enumerate(lines):
        size = len(line.encode()) + 1
        if used + size > _BUDGET:
            kept.append(f"……另有 {len(lines) - i} 类，见下面的链接")
            break
        kept.append(line)
        used += size
    return "\n".join([head, *kept, tail])


@flow
class PrivacyHub(Flow):
    """个人信息保护 / 隐私: the short notice, then 1 我的数据 · 2 注销 · the page link."""

    name = "privacy_hub"
    title = "个人信息保护"

    async def start(self, ctx: Context) -> None:
        notice = load_notice(ctx.config)
        ctx.step = "menu"
        ctx.choose([("查看我保存在这里的数据（我的数据）", "privacy_data"), ("注销：删除我的信息", "privacy_erase")],
                   header=notice.chat() + f"\n完整说明：{texts.notice_url(ctx.config)}",
                   footer="回复数字选择，回复“取消”退出。")

    async def step(self, ctx: Context) -> None:
        if ctx.picked in ("privacy_data", "privacy_erase"):
            ctx.switch(ctx.picked)
            return
        ctx.reroute()  # anything else is a new request


@flow
class MyData(Flow):
    """我的数据: one line per kind of stored data, and a short-lived personal link to the page."""

    name = "privacy_data"
    title = "我的数据"

    async def start(self, ctx: Context) -> None:
        ctx.end()
        cfg = ctx.config
        # Mentions in other people's texts need a text search of big tables: the page counts them, the
        # chat turn (which on SQLite holds every other turn meanwhile) does not.
        found = await store.collect(ctx.session, ctx.openid, mentions=False)
        ttl = cfg.privacy.export_link_ttl_min
        token = await linktokens.issue(ctx.session, EXPORT_KIND, ctx.openid, None, timedelta(minutes=ttl), now=ctx.now)
        url = f"{cfg.server.public_url.rstrip('/')}{texts.MINE_PATH}?t={token}"
        head = "【我的数据】本服务号保存的与您有关的信息："
        lines = texts.summary_lines(found, cfg.bot.timezone) or ["· 除了这次对话，没有保存您的信息。"]
        tail = (f"全部内容（包括其他记录里提到您的地方）和下载（JSON）：{url}\n（{ttl} 分钟内有效，只能在第一次打开它的手机上查看）\n"
                "修改请回复“我的信息”，删除全部请回复“注销”。")
        ctx.say(_fit(head, lines, tail))

    async def step(self, ctx: Context) -> None:  # pragma: no cover - ends at once
        await self.start(ctx)


def _confirmed(text: str) -> bool | None:
    """True for a clear yes to erasing (确认, 确定, 同意, 删除吧), False for a no, None otherwise. An
    everyday yes (嗯, 好的, 行) is not enough for something that cannot be undone."""
    bare = re.sub(r"\W+", "", normalize(text))
    if _KEEP_WORDS.match(bare):
        return False
    if _ERASE_WORDS.match(bare):
        return True
    yn = parse_yes_no(text, digits=False)
    if yn is True and (bare in _WEAK or not _STRONG_YES.search(bare)):
        return None  # 好的 / 行 / 可以 agree to anything; erasing cannot be undone: ask for 确认
    return yn


async def _erase_after_turn(openid: str, now: Any, session: Any) -> None:
    """Run after the dispatcher wrote the turn's own rows (conversation, user, dedup), in the same
    transaction, so that nothing the turn writes brings the openid back."""
    await erase_person(session, openid, by="self", now=now)
    if isinstance(session, LazySession):
        await session.commit()  # releases the SAVEPOINT into the batch transaction (SQLite)
    else:
        await session.flush()


@flow
class Erase(Flow):
    """注销 / 删除我的信息 / 撤回同意: what will be erased, then 确认."""

    name = "privacy_erase"
    title = "注销（删除我的信息）"

    async def start(self, ctx: Context) -> None:
        found = await store.collect(ctx.session, ctx.openid, mentions=False)
        gone: list[str] = []
        anonymous: list[str] = []
        roster = False
        for f in texts.ordered(found):
            d = f.decl
            if f.relation != "subject":
                continue
            if d.on_erase == store.DELETE:
                gone.append(f"· {d.label}" + (f" {len(f.rows)} 条" if len(f.rows) > 1 else ""))
            elif d.on_erase == store.PSEUDONYMISE:
                anonymous.append(d.label)
            elif d.on_erase == store.UNBIND:
                roster = True
        lines = ["注销将删除本服务号保存的您的个人信息："]
        lines += gone or ["· 关注记录和对话进度"]
        if anonymous:
            lines.append(f"只以匿名数字保留（不再关联到您）：{'、'.join(dict.fromkeys(anonymous))}。")
        if roster:
            lines.append("您在应急队伍名册上的登记由工作人员管理：将解除微信绑定（不再收到微信集结通知），"
                         "并告知工作人员；名册和集结记录保留。")
        lines.append(texts.ERASE_CONFIRM)
        await ctx.ask("confirm", "\n".join(lines))

    async def step(self, ctx: Context) -> None:
        ok = _confirmed(ctx.text)
        if ok is True:
            ctx.after_save.append(partial(_erase_after_turn, ctx.openid, ctx.now))
            ctx.say(texts.ERASE_DONE.format(kept="祭扫次数等统计只以匿名数字保留。"))
            ctx.end()
            return
        if ok is False:
            ctx.say(texts.ERASE_CANCELLED)
            ctx.end()
            return
        ctx.reask(texts.ERASE_REASK)

    async def prompt(self, ctx: Context, step: str) -> None:
        await self.start(ctx)
