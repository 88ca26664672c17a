"""``vetbot console``: the staff console from the terminal (a one-time login link for the first admin)."""

from __future__ import annotations

import argparse
import getpass
import sys

from bot.commands.common import add_config, config_of, database, emit, run

LINK_HELP = """\
Print a one-time login link to the staff console (/staff/) for OPENID. The link logs in once and
expires after console.link_ttl_min minutes (at most 10). OPENID must have the staff or admin role:
the user writes to the account once, then

  vetbot users role -c vetbot.yaml OPENID admin      # the first administrator (admin includes staff)
  vetbot console link -c vetbot.yaml OPENID          # prints https://…/staff/login/link?t=…

Staff members get their own links by sending 登录后台 to the account, or log in by scanning the QR code
on the console's login page with WeChat. The link is printed to stdout only; do not paste it anywhere
others can read it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vetbot console link``."""
    c = sub.add_parser("console", help="工作人员后台：生成一次性登录链接",
                       description="The staff console served by `vetbot serve` under /staff/.")
    csub = c.add_subparsers(dest="console_cmd", required=True)
    ln = csub.add_parser("link", help="print a one-time login link for a staff member", description=LINK_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(ln)
    ln.add_argument("openid", help="the staff member's openid (see `vetbot users list --role staff`)")
    ln.add_argument("--json", action="store_true", help="print {url, expires_in_min} as JSON")
    ln.set_defaults(func=_link)


def _login() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _link(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from bot.clock import SystemClock
    from flows.console import login_link
    from storage.console import audit, create_link, is_staff
    from storage.models import User

    cfg = config_of(args)
    if not cfg.console.enabled:
        print("vetbot: the staff console is off (console.enabled: false)", file=sys.stderr)
        return 2

    async def go() -> str | None:
        now = SystemClock().now()
        async with database(cfg) as db, db.session() as s:
            user = await s.get(User, args.openid)
            if user is None:
                print(f"vetbot: no user {args.openid!r} (they must write to the account first)", file=sys.stderr)
                return None
            if not is_staff(user.role_set):
                print(f"vetbot: {args.openid} has no staff role (roles: {user.roles or 'none'}); grant it first: "
                      f"vetbot users role -c CONFIG {args.openid} staff", file=sys.stderr)
                return None
            raw = await create_link(s, user.openid, now, timedelta(minutes=cfg.console.link_ttl_min))
            await audit(s, actor=_login(), via="cli", action="console.link", target_type="user",
                        target_id=user.openid, now=now, summary="生成一次性后台登录链接")
            return login_link(cfg, raw)

    url = run(go())
    if url is None:
        return 2
    emit({"url": url, "expires_in_min": cfg.console.link_ttl_min}, args.json,
         lambda d: d["url"])
    if not args.json:
        print(f"(valid for {cfg.console.link_ttl_min} minutes, one login)", file=sys.stderr)
    return 0
