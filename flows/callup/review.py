"""绑定审核: team leaders (their own team) and staff (every team) approve or reject binding requests
that wait for them (when no SMS is set up; see :mod:`.binding`). The approver's rights are checked at
every step, not only at the start: a leader replaced meanwhile cannot finish a decision."""

from __future__ import annotations

from flows.api import Context, Flow, flow, fmt_local
from flows.callup import binding

NOT_ALLOWED = "只有队长或工作人员可以审核绑定申请。"
PAGE = 9


@flow
class BindReview(Flow):
    """绑定审核: a numbered list of waiting requests → one request (phone to call) → 同意 / 拒绝."""

    name = "callup_bind_review"
    title = "绑定审核"

    async def _allowed(self, ctx: Context) -> tuple[bool, list[int] | None]:
        """(may this user decide requests now, the teams they may decide: None = all)."""
        teams = await binding.approver_teams(ctx.session, ctx.user, ctx.openid)
        if teams is not None and not teams:
            ctx.say(NOT_ALLOWED)
            ctx.end()
            return False, []
        return True, teams

    async def start(self, ctx: Context) -> None:
        ok, teams = await self._allowed(ctx)
        if ok:
            await self._list(ctx, teams)

    async def _list(self, ctx: Context, teams: list[int] | None) -> None:
        waiting = await binding.pending(ctx.session, ctx.services, ctx.now, teams)
        if not waiting:
            ctx.say("目前没有待审核的绑定申请。")
            ctx.end()
            return
        tz = ctx.config.bot.timezone
        ctx.step = "pick"
        more = f"\n（共 {len(waiting)} 条，先显示最早的 {PAGE} 条）" if len(waiting) > PAGE else ""
        ctx.choose([(f"{t.name} {m.name} {binding.mask(m.phone)}（{fmt_local(r.created_at, tz, '%m月%d日 %H:%M')}）",
                     r.id) for r, m, t in waiting[:PAGE]],
                   header="【绑定审核】请选择要处理的申请：", footer=f"回复数字查看；回复“取消”退出。{more}")

    async def step(self, ctx: Context) -> None:
        ok, allowed = await self._allowed(ctx)
        if not ok:
            return
        if ctx.step == "pick":
            if ctx.picked is None:
                ctx.reroute()
                return
            waiting = {r.id: (r, m, t) for r, m, t in await binding.pending(ctx.session, ctx.services, ctx.now,
                                                                                allowed)}
            found = waiting.get(int(ctx.picked))
            if found is None:
                ctx.say("这条申请已经处理过或已过期。")
                await self._list(ctx, allowed)
                return
            r, m, t = found
            ctx.slots["req"] = r.id
            ctx.step = "decide"
            note = "\n注意：该队员目前已绑定另一个微信，同意后将改绑到申请人的微信。" if m.openid else ""
            ctx.choose([("同意绑定", "yes"), ("拒绝", "no"), ("返回列表", "list")],
                       header=f"【绑定申请】\n姓名：{m.name}\n队伍：{t.name}\n名册手机：{m.phone}\n"
                              f"请先拨打这个号码，确认是本人申请后再同意。{note}")
            return
        if ctx.step == "decide":
            if ctx.picked == "list":
                await self._list(ctx, allowed)
                return
            if ctx.picked not in ("yes", "no"):
                if ctx.reask("请回复 1 同意、2 拒绝 或 3 返回列表。"):
                    ctx.choose([("同意绑定", "yes"), ("拒绝", "no"), ("返回列表", "list")])
                return
            d = await binding.decide(ctx.session, ctx.services, int(ctx.slots.get("req", 0)), ctx.picked == "yes",
                                     ctx.now, by=ctx.openid, allowed_teams=allowed)
            left = len(await binding.pending(ctx.session, ctx.services, ctx.now, allowed))
            ctx.say(d.reply + (f"\n还有 {left} 条待审核，回复“绑定审核”继续。" if left else ""))
            ctx.end()
            return
        ctx.reroute()

    async def prompt(self, ctx: Context, step: str) -> None:
        await self.start(ctx)
