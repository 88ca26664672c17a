"""The staff console's two ways in from WeChat.

* 登录后台 (staff only): a one-time login link, valid ``console.link_ttl_min`` minutes (at most 10) and
  for one login. The reply is not kept for WeChat's retries (``ctx.secret_reply``): the token exists in
  the database only as a hash.
* Scanning the login page's QR code (scene ``login:<random>``): the bot checks the staff role and asks
  the staff member to confirm, naming the computer that asked (address and browser), because a login
  QR code sent to someone by a stranger would otherwise log the stranger in. 1 confirms; the page,
  which polls, then logs in.
"""

from __future__ import annotations

from datetime import timedelta

from flows.api import Context, Flow, TickContext, flow, on_scene, tick
from storage.console import STAFF_ROLES, confirm_qr, create_link, is_staff, refuse_qr, scan_qr

LOGIN_PATH = "/staff/login"
CHOICES = [("确认登录", "go"), ("不是我，取消", "stop")]


def login_link(config: object, raw: str) -> str:
    """The absolute URL of a one-time login link."""
    base = config.server.public_url.rstrip("/")  # type: ignore[attr-defined]
    return f"{base}{LOGIN_PATH}/link?t={raw}"


@flow
class ConsoleLink(Flow):
    """登录后台: a one-time link to the staff console."""

    name = "console_login"
    title = "登录后台"
    roles = STAFF_ROLES

    async def start(self, ctx: Context) -> None:
        cfg = ctx.config.console
        if not cfg.enabled:
            ctx.say("工作人员后台没有开启（配置 console.enabled）。")
            ctx.end()
            return
        raw = await create_link(ctx.session, ctx.openid, ctx.now, timedelta(minutes=cfg.link_ttl_min))
        base = ctx.config.server.public_url.rstrip("/")
        ctx.say(f"工作人员后台登录链接（{cfg.link_ttl_min}分钟内有效，只能用一次，请勿转发）：\n"
                f"{login_link(ctx.config, raw)}\n\n"
                f"在电脑上登录：打开 {base}{LOGIN_PATH} ，用微信扫一扫页面上的二维码。")
        ctx.secret_reply = True
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover - the flow ends at once
        await self.start(ctx)


@on_scene("login:")
async def login_scene(ctx: Context, rest: str) -> bool:
    """The console login page's QR code was scanned."""
    ctx.user.qr_scene = "login"  # the scene is a one-time secret: not kept on the user's row
    staff = is_staff(ctx.user.role_set)
    row = await scan_qr(ctx.session, rest, ctx.openid, staff, ctx.now) if rest else None
    if row is None:
        ctx.say("这个登录二维码已过期或已经用过了。请在电脑上刷新登录页面，再扫一次。")
        return True
    if not staff:
        ctx.say("您的微信号没有工作人员后台的权限，无法登录。如需开通，请联系管理员。")
        return True
    ctx.flow, ctx.step, ctx.slots, ctx.stack, ctx.reasks, ctx.ended = (
        ConsoleLoginConfirm.name, "confirm", {"login_id": row.id}, [], 0, False)
    ctx.choose(CHOICES, header=_question(row.client), footer="回复数字。")
    return True


def _question(client: str) -> str:
    return ("您正在登录工作人员后台。\n"
            f"请求登录的电脑：{client or '未知'}\n"
            "如果不是您本人刚在电脑上扫的码，请回复 2。")


@flow
class ConsoleLoginConfirm(Flow):
    """The confirmation after a login QR code was scanned (entered only from the scene handler)."""

    name = "console_login_confirm"
    title = "确认登录后台"
    roles = STAFF_ROLES

    async def start(self, ctx: Context) -> None:
        ctx.say(f"请在电脑上打开工作人员后台（{ctx.config.server.public_url.rstrip('/')}{LOGIN_PATH}），"
                "用微信扫一扫页面上的二维码。")
        ctx.end()

    async def prompt(self, ctx: Context, step: str) -> None:
        ctx.step = "confirm"
        ctx.choose(CHOICES, header="请确认是否登录工作人员后台：", footer="回复数字。")

    async def step(self, ctx: Context) -> None:
        login_id = int(ctx.slots.get("login_id") or 0)
        if not is_staff(ctx.user.role_set):
            await refuse_qr(ctx.session, login_id, ctx.openid)
            ctx.say("您已没有工作人员权限，无法登录后台。")
            ctx.end()
            return
        if ctx.picked == "go":
            if await confirm_qr(ctx.session, login_id, ctx.openid, ctx.now):
                ctx.say("已确认。电脑上的工作人员后台马上会自动登录。\n用完请点页面右上角的“退出”。")
            else:
                ctx.say("这个登录二维码已过期。请在电脑上刷新登录页面，再扫一次。")
            ctx.end()
        elif ctx.picked == "stop":
            await refuse_qr(ctx.session, login_id, ctx.openid)
            ctx.say("已取消，这台电脑不会登录。如果有人冒用您的身份，请告诉管理员。")
            ctx.end()
        else:
            ctx.reroute()


@tick("console_purge", 600)
async def purge_console(t: TickContext) -> None:
    """Housekeeping: dead console sessions and spent login links go; Q&A decision rows older than
    :data:`storage.qa.ASK_KEEP_DAYS` too (the dashboard only shows today)."""
    from sqlalchemy import delete

    from storage.console import purge
    from storage.qa import ASK_KEEP_DAYS, QAAsk

    idle = timedelta(minutes=t.services.config.console.session_idle_min)
    async with t.db.session() as s:
        await purge(s, t.now, idle)
        await s.execute(delete(QAAsk).where(QAAsk.at < t.now - timedelta(days=ASK_KEEP_DAYS)))
