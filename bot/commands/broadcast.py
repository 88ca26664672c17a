"""``vetbot broadcast``: a staff notice queued as one ``broadcast`` push per matching follower.

Not WeChat's mass send (4 per user per month, admin confirmation): each recipient gets a push
through the outbox and its channel policy (kefu in the window, else a 订阅通知 where the person gave
consent, else SMS). WeChat allows a template message that nobody asked for only for fault and
disaster warnings: ``--warning`` marks the notice as one (a 防汛 warning), which lets the broadcast
template carry it to everyone. The same notice (title, text, filters, link) queued again for the same local day is ignored,
so running the command twice by mistake sends nothing twice. ``--at`` schedules it: the rows wait in
the outbox until then (recipients are the followers at queueing time; whoever unfollows before it is
due gets nothing); the same notice at the same send time is queued once. ``vetbot outbox scheduled``
lists notices still waiting and ``vetbot outbox cancel KEY`` takes one back.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from typing import Any

from sqlalchemy import delete, select

from bot.commands.common import add_config, config_of, database, emit, run

ROLES = ("veteran", "family", "volunteer", "staff")

HELP = """\
Queue a notice for every follower who matches the filters (no filter: every follower). Users who
unfollowed get nothing. Delivery goes through the outbox (see `vetbot outbox status`).

  vetbot broadcast -c vetbot.yaml --title 工作通知 --text "周五下午3点在局会议室开会" --role staff
  vetbot broadcast -c vetbot.yaml --title 政策宣讲 --text "…" --township 竹阳街道 --url https://…
  vetbot broadcast -c vetbot.yaml --title 清明祭扫 --text "…" --at "2026-04-04 08:00"   # later
  vetbot broadcast -c vetbot.yaml --title 防汛预警 --text "…" --warning   # a disaster warning: template to all
  vetbot broadcast -c vetbot.yaml --title … --text … --dry-run     # only count the recipients
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vetbot broadcast``."""
    p = sub.add_parser("broadcast", help="群发通知：按角色/乡镇给关注者排队推送", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(p)
    p.add_argument("--title", required=True, help="notice title (the template's first keyword field)")
    p.add_argument("--text", required=True, help="notice text")
    p.add_argument("--role", choices=ROLES, help="only users with this role")
    p.add_argument("--township", help="only users registered in this township (exact name)")
    p.add_argument("--url", help="link opened by the template message (http/https)")
    p.add_argument("--priority", type=int, default=5, help="0 = emergency … 9 = low (default 5)")
    p.add_argument("--at", metavar="TIME", help="send at this local time, YYYY-MM-DD HH:MM (default: now)")
    p.add_argument("--warning", action="store_true",
                   help="a fault or disaster warning: may go out as a template message to everyone (WeChat's "
                        "rule); without it only people in the chat window, with 订阅通知 consent or a phone get it")
    p.add_argument("--dry-run", action="store_true", help="count the recipients, queue nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_broadcast)


def notice_key(title: str, text: str, role: str | None, township: str | None, url: str | None, day: str) -> str:
    """The idempotency key of one notice: the same notice for the same local day (or, scheduled, the same
    local send time ``YYYY-MM-DDTHHMM``) is queued once."""
    digest = hashlib.sha256("\x1f".join([title, text, role or "", township or "", url or ""]).encode()).hexdigest()
    return f"broadcast:{day}:{digest[:16]}"


async def queue_broadcast(db: Any, now: Any, *, title: str, text: str, role: str | None = None,
                          township: str | None = None, url: str | None = None, priority: int = 5,
                          tz: str = "Asia/Shanghai", dry_run: bool = False,
                          at: Any = None, warning: bool = False) -> dict[str, Any]:
    """Queue the notice in one transaction, due at ``at`` (naive UTC; default ``now``); returns
    recipients, queued and already-queued counts."""
    from bot.clock import fmt_local
    from storage.models import OutboxMessage, User
    from storage.outbox import Push, enqueue
    from storage.outbox_repo import CANCELLED_BY_STAFF, broadcast_rows

    when = at if at is not None and at > now else now
    # Sent now: once per notice and local day. Scheduled: once per notice and send time, so a notice
    # scheduled for later can still be sent now, or scheduled again at a corrected time.
    slot = fmt_local(when, tz, "%Y-%m-%dT%H%M" if at is not None and at > now else "%Y-%m-%d")
    key = notice_key(title, text, role, township, url, slot)
    async with db.session() as s:
        q = select(User.openid, User.roles).where(User.subscribed.is_(True))
        if township:
            q = q.where(User.township == township)
        if role:
            q = q.where(User.roles.contains(role))
        recipients = [r.openid for r in await s.execute(q.order_by(User.openid))
                      if not role or role in (r.roles or "").split(",")]
        queued = 0
        if not dry_run and recipients:
            # A notice staff cancelled and now queue again goes out anew: its cancelled rows would
            # otherwise hold the idempotency keys and the new ones be skipped as duplicates.
            t = OutboxMessage.__table__
            await s.execute(delete(t).where(*broadcast_rows(key), t.c.status == "cancelled",
                                            t.c.last_error == CANCELLED_BY_STAFF))
            data: dict[str, Any] = {"title": title, "content": text, "time": fmt_local(when, tz)}
            if warning:  # WeChat allows unrequested template messages for fault and disaster warnings only
                data["template_basis"] = "warning"
            pushes = [Push(openid=o, purpose="broadcast", key=key, text=f"【{title}】{text}", data=data, url=url,
                           priority=priority, due_at=when) for o in recipients]
            queued = await enqueue(s, pushes, now)
    return {"key": key, "due_at": fmt_local(when, tz, "%Y-%m-%d %H:%M"), "recipients": len(recipients),
            "queued": queued,
            "already_queued": 0 if dry_run else len(recipients) - queued, "dry_run": dry_run}


def _broadcast(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock

    title, text = args.title.strip(), args.text.strip()
    if not title or not text:
        print("vetbot: --title and --text must not be empty", file=sys.stderr)
        return 2
    if args.url and not args.url.startswith(("http://", "https://")):
        print(f"vetbot: --url must start with http:// or https:// (got {args.url!r})", file=sys.stderr)
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

    async def go() -> dict[str, Any]:
        async with database(cfg) as db:
            return await queue_broadcast(db, now, title=title, text=text, role=args.role,
                                         township=args.township, url=args.url, priority=args.priority,
                                         tz=cfg.bot.timezone, dry_run=args.dry_run, at=at,
                                         warning=args.warning)

    result = run(go())

    def render(r: dict[str, Any]) -> str:
        if r["dry_run"]:
            return f"符合条件的关注者 {r['recipients']} 人（dry run：未排队）"
        line = f"已排队 {r['queued']} 条通知（recipients {r['recipients']}）"
        if at is not None:
            line += f"，{r['due_at']} 发送；撤回：vetbot outbox cancel -c … {r['key']}"
        if r["already_queued"]:
            line += f"；{r['already_queued']} 人已排过同一通知（{'同一发送时间' if at is not None else '今天'}），未重复"
        return line

    emit(result, args.json, render)
    if result["recipients"] == 0:
        print("vetbot: no follower matches these filters", file=sys.stderr)
    return 0
