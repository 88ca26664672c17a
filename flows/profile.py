"""我的信息: name, phone, township and veteran/family/other; shows and edits what is stored."""

from __future__ import annotations

import re

from flows.api import PHONE_RE, Context, Flow, clean_phone, clip, flow, match_township, parse_yes_no
from flows.privacy.consent import gate

NAME_RE = re.compile(r"^[\u4e00-\u9fffA-Za-z·•．.]{2,20}$")
KINDS = [("退役军人", "veteran"), ("军属 / 烈属 / 家属", "family"), ("其他", "other")]
KIND_LABEL = {"veteran": "退役军人", "family": "军属/家属", "other": "其他"}
FIELDS = [("姓名", "name"), ("手机号", "phone"), ("乡镇（街道）", "township"), ("身份", "kind")]

PROMPTS = {
    "name": "请输入您的姓名：",
    "phone": "请输入您的手机号（11位）：",
    "township": "请输入您所在的乡镇或街道，例如：城关镇",
    "kind": "",
}


def mask_phone(phone: str | None) -> str:
    return f"{phone[:3]}****{phone[-4:]}" if phone and len(phone) == 11 else (phone or "未填写")


@flow
class Profile(Flow):
    name = "profile"
    title = "我的信息"

    def _card(self, ctx: Context) -> str:
        u = ctx.user
        return "\n".join([
            "【我的信息】",
            f"姓名：{u.name or '未填写'}",
            f"手机：{mask_phone(u.phone)}",
            f"乡镇：{u.township or '未填写'}",
            f"身份：{KIND_LABEL.get(u.kind or '', '未填写')}",
        ])

    async def start(self, ctx: Context) -> None:
        u = ctx.user
        ask = ctx.intent_slots.get("ask")
        if ask in PROMPTS:  # back from the consent question (同意): go on where we were
            ctx.slots["mode"] = ctx.intent_slots.get("mode") or "one"
            await self._ask(ctx, ask)
            return
        if not (u.name or u.phone or u.township or u.kind):
            ctx.slots["mode"] = "all"
            ctx.say("您还没有登记信息，登记后办事更方便。")
            await self._ask(ctx, "name")
            return
        await self._menu(ctx)

    async def _menu(self, ctx: Context) -> None:
        ctx.step = "menu"
        ctx.say(self._card(ctx))
        ctx.choose([(f"修改{label}", key) for label, key in FIELDS] + [("全部重新填写", "all")],
                   header="需要修改请回复数字：", footer="不需要修改请回复“取消”。")

    async def _ask(self, ctx: Context, field: str) -> None:
        # Nothing personal is asked before the person has read the notice and agreed (个人信息保护法 第十四条).
        if not await gate(ctx, "profile", resume=self.name,
                          resume_slots={"ask": field, "mode": str(ctx.slots.get("mode") or "one")}):
            return
        if field == "kind":
            await ctx.ask("kind", "")
            ctx.choose(KINDS, header="请选择您的身份：")
            return
        prompt = PROMPTS[field]
        towns = ctx.config.bot.townships
        if field == "township" and towns:
            prompt = f"请输入您所在的乡镇或街道，例如：{towns[0]}"
        await ctx.ask(field, prompt)

    async def prompt(self, ctx: Context, step: str) -> None:
        if step == "menu":
            await self._menu(ctx)
        elif step == "township_confirm":
            await self._ask(ctx, "township")
        else:
            await self._ask(ctx, step)

    async def _next(self, ctx: Context, done: str) -> None:
        order = [key for _, key in FIELDS]
        if ctx.slots.get("mode") == "all" and done != order[-1]:
            await self._ask(ctx, order[order.index(done) + 1])
            return
        ctx.say("已保存。\n" + self._card(ctx))
        ctx.end()

    async def step(self, ctx: Context) -> None:
        u = ctx.user
        if ctx.step == "menu":
            if ctx.picked is None:
                ctx.reask("请回复数字 1-5 选择要修改的项目，或回复“取消”。")
                if not ctx.ended:
                    await self._menu(ctx)
                return
            if ctx.picked == "all":
                ctx.slots["mode"] = "all"
                await self._ask(ctx, "name")
            else:
                ctx.slots["mode"] = "one"
                await self._ask(ctx, ctx.picked)
            return
        if ctx.step == "name":
            name = ctx.text.replace(" ", "")
            if not NAME_RE.match(name):
                ctx.reask("姓名请填 2-20 个汉字或字母，例如：张建国")
                return
            u.name = name
            await self._next(ctx, "name")
        elif ctx.step == "phone":
            phone = clean_phone(ctx.text)
            if not PHONE_RE.match(phone):
                ctx.reask("手机号格式不对，请输入 11 位手机号，例如：13800001234")
                return
            u.phone = phone
            await self._next(ctx, "phone")
        elif ctx.step == "township":
            await self._township(ctx)
        elif ctx.step == "township_confirm":
            await self._township_confirm(ctx)
        elif ctx.step == "kind":
            if ctx.picked is None:
                if ctx.reask("请回复数字 1、2 或 3 选择身份。"):
                    ctx.choose(KINDS, header="请选择您的身份：")
                return
            u.kind = ctx.picked
            for role in ("veteran", "family"):
                u.remove_role(role)
            if ctx.picked in ("veteran", "family"):
                u.add_role(ctx.picked)
            await self._next(ctx, "kind")

    # --- township: matched to bot.townships -------------------------------------------------------
    def _town_hint(self, towns: list[str]) -> str:
        if len(towns) <= 12:
            return "本县的乡镇（街道）有：" + "、".join(towns)
        return f"请输入乡镇或街道的名字，例如：{towns[0]}、{towns[1]}"

    async def _township(self, ctx: Context) -> None:
        """Free text when ``bot.townships`` is empty; otherwise one of its names (asked back when unsure)."""
        towns = ctx.config.bot.townships
        if not towns:
            town = ctx.text.replace(" ", "")
            if not 2 <= len(town) <= 20:
                ctx.reask("请输入乡镇或街道名称（2-20个字），例如：城关镇")
                return
            ctx.user.township = town
            await self._next(ctx, "township")
            return
        m = match_township(ctx.text, towns)
        if m is None:
            ctx.reask(f"没有找到“{clip(ctx.text.strip(), 12)}”。{self._town_hint(towns)}\n请再输入一次：")
            return
        if m.sure:
            ctx.user.township = m.name
            await self._next(ctx, "township")
            return
        options = [m.name, *m.alternatives]
        await ctx.ask("township_confirm", "")
        ctx.slots["towns"] = options
        if len(options) == 1:
            ctx.choose([("是", m.name), ("不是，重新输入", "")], header=f"您是说 {m.name} 吗？")
        else:
            ctx.choose([(n, n) for n in options] + [("都不是，重新输入", "")], header="您说的是哪一个？")

    async def _township_confirm(self, ctx: Context) -> None:
        options = list(ctx.slots.get("towns") or [])
        picked = ctx.picked
        if picked is None:
            yn = parse_yes_no(ctx.text, digits=False)
            if yn is True and len(options) == 1:
                picked = options[0]
            elif yn is False:
                picked = ""
            else:
                await self._township(ctx)  # the name typed again (or another one)
                return
        if picked in ctx.config.bot.townships:
            ctx.user.township = picked
            await self._next(ctx, "township")
            return
        await self._ask(ctx, "township")
