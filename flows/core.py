"""Flows every bot needs: the numbered help menu and 人工 (leave a message for staff)."""

from __future__ import annotations

from flows.api import Context, Flow, flow


@flow
class Help(Flow):
    """帮助 / 菜单: a numbered list of what this user may do; a digit starts it."""

    name = "help"
    title = "帮助"

    async def start(self, ctx: Context) -> None:
        matcher = ctx.services.matcher
        items = matcher.menu_intents(ctx.user.role_set) if matcher is not None else []
        ctx.choose([(i.help or i.id, i.id) for i in items], header="您可以回复数字办理：",
                   footer="随时回复“取消”退出、“返回”回到上一步、“人工”给工作人员留言。", kind="intent")
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - help ends at once
        await self.start(ctx)


@flow
class Human(Flow):
    """人工: the user's next message opens a ticket and the conversation is handed over to staff until
    the ticket ends (:mod:`flows.tickets`: step ``live`` is read by its takeover hook, never by :meth:`step`)."""

    name = "human"
    title = "人工留言"

    async def start(self, ctx: Context) -> None:
        from flows.tickets import source_of

        ctx.slots["from"] = source_of(ctx)
        await ctx.ask("text", "请直接输入您要留给工作人员的话，工作人员会在这里回复您。\n（回复“取消”退出）")

    async def step(self, ctx: Context) -> None:
        from flows.tickets import open_ticket

        text = ctx.text
        if len(text) < 2:
            ctx.reask("内容太短了，请再具体说一说。（回复“取消”退出）")
            return
        await open_ticket(ctx, text, source=ctx.slots.get("from") or {})

    async def prompt(self, ctx: Context, step: str) -> None:
        await ctx.ask("text", "请直接输入您要留给工作人员的话，工作人员会在这里回复您。\n（回复“取消”退出）")
