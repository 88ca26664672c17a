"""群发通知 in chat (staff only): 标题 → 正文 → 对象 → 确认, with 返回 / 取消 at every step.

The staff role is checked at every step, not only at the start: a member whose role was removed in the
middle of the wizard cannot finish it. The count shown before 确认 comes with the same explanation
the console and ``vetbot broadcast --dry-run`` give (who the audience covers and why).
"""

from __future__ import annotations

from flows.api import Context, Flow, flow, match_township
from flows.broadcast import service
from flows.callup.staff import resolve_teams
from storage.console import STAFF_ROLES, is_staff

EXIT = "（回复“取消”退出，“返回”回到上一步）"
AUDIENCES = [("全部关注者", "all"), ("按身份（退役军人、军属等）", "role"), ("按乡镇", "township"), ("按应急队伍", "team")]


@flow
class BroadcastChat(Flow):
    """群发通知: a staff notice to followers, queued through the outbox."""

    name = "broadcast"
    title = "群发通知"
    roles = STAFF_ROLES

    async def start(self, ctx: Context) -> None:
        await self.prompt(ctx, "title")

    async def prompt(self, ctx: Context, step: str) -> None:
        if step == "title":
            await ctx.ask("title", f"【群发通知】请输入通知标题（{service.TITLE_MAX}字以内）：\n{EXIT}")
        elif step == "text":
            await ctx.ask("text", f"请输入通知正文：\n{EXIT}")
        elif step == "audience":
            await ctx.ask("audience", "")
            ctx.choose(AUDIENCES, header="发给谁？", footer=EXIT)
        elif step == "role":
            await ctx.ask("role", "")
            ctx.choose([(w, r) for r, w in service.ROLES.items()], header="按哪种身份发送？", footer=EXIT)
        elif step == "township":
            await ctx.ask("township", "")
            towns = await service.known_townships(ctx.session, 9)
            if towns:
                ctx.choose([(f"{t}（{n}人登记）", t) for t, n in towns], header="发给哪个乡镇？",
                           footer="也可以直接输入乡镇名称。\n" + EXIT)
            else:
                ctx.say(f"还没有关注者登记乡镇。请输入乡镇名称：\n{EXIT}")
        elif step == "team":
            await ctx.ask("team", "")
            teams = (await service.teams(ctx.session))[:9]
            if teams:
                ctx.choose([(t.name, t.id) for t in teams], header="发给哪支队伍？",
                           footer="也可以直接输入队伍名称。\n" + EXIT)
            else:
                ctx.say("还没有导入任何应急队伍。请回复“返回”选择其他对象。")
        elif step == "confirm":
            await self._confirm(ctx)

    async def step(self, ctx: Context) -> None:
        if not is_staff(ctx.user.role_set):
            ctx.say("您已没有工作人员权限，群发通知已退出，没有发送。")
            ctx.end()
            return
        s = ctx.slots
        if ctx.step == "title":
            title = ctx.text
            try:
                service.clean(title, "x", None)
            except service.BroadcastError as e:
                ctx.reask(f"{e}请重新输入标题。")
                return
            s["title"] = title
            await self.prompt(ctx, "text")
        elif ctx.step == "text":
            try:
                service.clean(s.get("title", "x"), ctx.text, None)
            except service.BroadcastError as e:
                ctx.reask(f"{e}请重新输入正文。")
                return
            s["text"] = ctx.text
            await self.prompt(ctx, "audience")
        elif ctx.step == "audience":
            if ctx.picked is None:
                if ctx.reask("请回复数字选择发送对象。"):
                    ctx.choose(AUDIENCES)
                return
            if ctx.picked == "all":
                s["audience"] = {}
                await self.prompt(ctx, "confirm")
            else:
                await self.prompt(ctx, str(ctx.picked))
        elif ctx.step == "role":
            if ctx.picked is None:
                if ctx.reask("请回复数字选择身份。"):
                    ctx.choose([(w, r) for r, w in service.ROLES.items()])
                return
            s["audience"] = {"role": ctx.picked}
            await self.prompt(ctx, "confirm")
        elif ctx.step == "township":
            town = str(ctx.picked) if ctx.picked is not None else ctx.text.replace(" ", "")
            if ctx.picked is None:
                # 城关 → 城关镇: the names people registered, then the configured list (bot.townships).
                known = [t for t, _ in await service.known_townships(ctx.session)]
                names = list(dict.fromkeys([*known, *ctx.services.config.bot.townships]))
                got = match_township(town, names)
                if got is not None and got.confidence >= 0.9 and not got.alternatives:
                    town = got.name
            if not 2 <= len(town) <= 20:
                ctx.reask("请输入乡镇名称（2-20个字），例如：城关镇")
                return
            s["audience"] = {"township": town}
            await self.prompt(ctx, "confirm")
        elif ctx.step == "team":
            if ctx.picked is not None:
                s["audience"] = {"team_id": int(ctx.picked)}
            else:
                found, problems = await resolve_teams(ctx.session, ctx.text)
                if problems or len(found) != 1:
                    ctx.reask("；".join(problems) or "请只写一支队伍的名称。")
                    return
                s["audience"] = {"team_id": found[0].id}
            await self.prompt(ctx, "confirm")
        elif ctx.step == "confirm":
            if ctx.picked == "go":
                await self._send(ctx)
            elif ctx.picked == "stop":
                ctx.say("已取消，没有发送任何通知。")
                ctx.end()
            elif ctx.reask("请回复 1 确认发送，或 2 不发了。"):
                ctx.choose([("确认发送", "go"), ("不发了", "stop")])

    async def _confirm(self, ctx: Context) -> None:
        s = ctx.slots
        try:
            r = await service.resolve(ctx.session, service.Audience.from_dict(s.get("audience")), with_openids=False)
        except service.BroadcastError as e:
            ctx.say(str(e))
            await self.prompt(ctx, "audience")
            return
        if not r.count:
            ctx.say(f"{r.explain()}\n按“{r.label}”发送，没有人能收到。请换一个发送对象。")
            await self.prompt(ctx, "audience")
            return
        text = s["text"] if len(s["text"]) <= 80 else s["text"][:80] + "…"
        await ctx.ask("confirm", "\n".join([
            f"【{s['title']}】", text, f"对象：{r.label}", f"将发送给 {r.count} 人。", r.explain()]))
        ctx.choose([("确认发送", "go"), ("不发了", "stop")], header="请确认：")

    async def _send(self, ctx: Context) -> None:
        s = ctx.slots
        try:
            q = await service.queue(ctx.session, ctx.now, title=s["title"], text=s["text"],
                                    audience=service.Audience.from_dict(s.get("audience")),
                                    tz=ctx.config.bot.timezone, by=ctx.openid, via="chat")
        except service.BroadcastError as e:
            ctx.say(f"没能发送：{e}")
            ctx.end()
            return
        report = "发送情况可在工作人员后台“群发通知”里查看（回复“登录后台”获取登录链接）。"
        if q.fan_out:
            ctx.say(f"人数较多（{q.recipients} 人），正在分批排队，一两分钟内开始发送。\n{report}")
        elif q.queued:
            ctx.say(f"已开始发送给 {q.queued} 人。\n{report}")
        elif q.already_queued:
            ctx.say("今天已经发过同样的通知，没有重复发送。")
        else:
            ctx.say("没有人能收到这条通知，没有发送。")
        ctx.end()
