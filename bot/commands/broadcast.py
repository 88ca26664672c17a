"""``vetbot broadcast``: a staff notice queued as one ``broadcast`` push per matching follower.

The logic lives in :mod:`flows.broadcast.service`, shared with the staff console and 群发通知 in chat.
Not WeChat's mass send (4 per user per month, admin confirmation): each recipient gets a push through
the outbox and its channel policy (kefu in the window, else a 订阅通知 where the person gave consent,
else SMS). WeChat allows a template message that nobody asked for only for fault and disaster
warnings: ``--warning`` marks the notice as one (a 防汛 warning), which lets the broadcast template carry
it to everyone. The same notice (title, text, filters, link) queued again for the same local day is
ignored, so running the command twice by mistake sends nothing twice. ``--at`` schedules it: the rows
wait in the outbox until then (recipients are the followers at queueing time; whoever unfollows before
it is due gets nothing); the same notice at the same send time is queued once. ``vetbot outbox
scheduled`` lists notices still waiting and ``vetbot outbox cancel KEY`` takes one back.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run

HELP = """\
Queue a notice for every follower who matches the filters (no filter: every follower). Users who
unfollowed get nothing. Delivery goes through the outbox (see `vetbot outbox status`, or the staff
console's 群发通知 page for a report per notice). The output says who the filters cover and why
(roles and townships are what people registered in 我的信息; volunteers are members bound to a team).

  vetbot broadcast -c vetbot.yaml --title 工作通知 --text "周五下午3点在局会议室开会" --role staff
  vetbot broadcast -c vetbot.yaml --title 政策宣讲 --text "…" --township 竹阳街道 --url https://…
  vetbot broadcast -c vetbot.yaml --title 防汛演练 --text "…" --team 城关镇救援队
  vetbot broadcast -c vetbot.yaml --title 清明祭扫 --text "…" --at "2026-04-04 08:00"   # later
  vetbot broadcast -c vetbot.yaml --title 防汛预警 --text "…" --warning   # a disaster warning: template to all
  vetbot broadcast -c vetbot.yaml --title … --text … --role veteran --dry-run   # only count and explain
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vetbot broadcast``."""
    from flows.broadcast.service import ROLES

    p = sub.add_parser("broadcast", help="群发通知：按角色/乡镇/队伍给关注者排队推送", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(p)
    p.add_argument("--title", required=True, help="notice title (at most 30 characters)")
    p.add_argument("--text", required=True, help="notice text (at most 1000 characters)")
    p.add_argument("--role", choices=list(ROLES), help="only users with this role")
    p.add_argument("--township", help="only users registered in this township (exact name)")
    p.add_argument("--team", help="only bound members of this volunteer team (name, id or binding code)")
    p.add_argument("--url", help="link opened by the template message (http/https)")
    p.add_argument("--priority", type=int, default=5, help="0 = emergency … 9 = low (default 5)")
    p.add_argument("--at", metavar="TIME", help="send at this local time, YYYY-MM-DD HH:MM (default: now)")
    p.add_argument("--warning", action="store_true",
                   help="a fault or disaster warning: may go out as a template message to everyone (WeChat's "
                        "rule); without it only people in the chat window, with 订阅通知 consent or a phone get it")
    p.add_argument("--dry-run", action="store_true", help="count and explain the recipients, queue nothing")
    p.add_argument("--by", default="", help="who sends it (audit log; default: cli:<login name>)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_broadcast)


def _login() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


def _broadcast(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.broadcast import service

    try:
        title, text, url = service.clean(args.title, args.text, args.url)
    except service.BroadcastError as e:
        if args.url and "链接" in str(e):
            print(f"vetbot: --url must start with http:// or https:// (got {args.url!r})", file=sys.stderr)
        else:
            print(f"vetbot: --title/--text: {e}", file=sys.stderr)
        return 2
    if not 0 <= args.priority <= 9:
        print("vetbot: --priority must be between 0 (emergency) and 9 (low)", file=sys.stderr)
        return 2
    cfg = config_of(args)
    now = SystemClock().now()
    at = None
    if args.at:
        from datetime import datetime

        from bot.clock import from_local

        try:
            at = from_local(datetime.strptime(args.at.strip(), "%Y-%m-%d %H:%M"), cfg.bot.timezone)
        except ValueError:
            print(f"vetbot: --at must be a local time like 2026-04-04 08:00 (got {args.at!r})", file=sys.stderr)
            return 2
        if at <= now:
            print(f"vetbot: --at {args.at} is in the past; leave --at out to send now", file=sys.stderr)
            return 2

    async def go() -> dict[str, Any] | str:
        from storage.callup import team_by_ref

        async with database(cfg) as db:
            async with db.session() as s:
                team_id = None
                if args.team:
                    team = await team_by_ref(s, args.team)
                    if team is None:
                        return f"--team {args.team!r}: no such team (see `vetbot teams list`)"
                    team_id = team.id
                audience = service.Audience(role=args.role, township=(args.township or "").strip() or None,
                                            team_id=team_id)
                try:
                    q = await service.queue(s, now, title=title, text=text, audience=audience, url=url,
                                            priority=args.priority, tz=cfg.bot.timezone, dry_run=args.dry_run,
                                            at=at, by=args.by or _login(), via="cli", warning=args.warning)
                except service.BroadcastError as e:
                    return str(e)
            if q.fan_out:  # many recipients: queued in chunks, each its own short transaction
                n = await service.fan_out(db, q.broadcast_id or 0, now, cfg.bot.timezone)
                q.queued, q.already_queued = n, q.recipients - n
        return q.as_dict(cfg.bot.timezone)

    result = run(go())
    if isinstance(result, str):
        print(f"vetbot: {result}", file=sys.stderr)
        return 2

    def render(r: dict[str, Any]) -> str:
        if r["dry_run"]:
            line = f"符合条件的关注者 {r['recipients']} 人（dry run：未排队）"
        else:
            line = f"已排队 {r['queued']} 条通知（recipients {r['recipients']}）"
            if at is not None:
                line += f"，{r['due_at']} 发送；撤回：vetbot outbox cancel -c … {r['key']}"
            if r["already_queued"]:
                line += (f"；{r['already_queued']} 人已排过同一通知（{'同一发送时间' if at is not None else '今天'}），"
                         "未重复")
        return "\n".join([line, *r["explain"]])

    emit(result, args.json, render)
    if result["recipients"] == 0:
        print("vetbot: no follower matches these filters", file=sys.stderr)
    return 0
