"""``vetbot outbox``: see what the push queue is doing, requeue failures, run a sender on its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run

STATUS_HELP = """\
Counts of the push queue (outbox): by status, by channel of sent pushes (kefu, subscribe = 订阅通知,
template, sms), by purpose, and the reasons of failed and cancelled pushes. 'sending' rows older than outbox.claim_timeout_s belong to
a sender that stopped; they are handed back automatically.

  vetbot outbox status -c vetbot.yaml
  vetbot outbox status -c vetbot.yaml --json
"""

RETRY_HELP = """\
Queue failed pushes again (due now, attempts reset). Sent pushes are never sent twice, and
cancelled ones (the user unfollowed) are never sent.

  vetbot outbox retry -c vetbot.yaml 12 13
  vetbot outbox retry -c vetbot.yaml --all-failed
"""

SCHEDULED_HELP = """\
Broadcast notices with pushes still waiting: scheduled ones (vetbot broadcast --at) and sends in
progress, with the key to cancel them by.

  vetbot outbox scheduled -c vetbot.yaml
"""

CANCEL_HELP = """\
Take back a broadcast notice: its pushes that have not gone out yet (pending, or failed) are cancelled;
pushes a sender holds right now or has sent are not. KEY is what `vetbot outbox scheduled` lists
(`vetbot broadcast` prints it with --at or --json). The same notice queued again later goes out anew.

  vetbot outbox cancel -c vetbot.yaml broadcast:2026-04-04T0800:3f9a0c1d2b4e5f60
"""

RUN_HELP = """\
Run an outbox sender without the web server (e.g. an extra sender process on PostgreSQL, or
delivering a backlog with the bot stopped). `vetbot serve` already runs one.

  vetbot outbox run -c vetbot.yaml            # until Ctrl-C / SIGTERM
  vetbot outbox run -c vetbot.yaml --once     # deliver what is due now, then exit
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``vetbot outbox status|retry|scheduled|cancel|run``."""
    p = sub.add_parser("outbox", help="推送队列：查看状态、重发失败、单独运行发送进程",
                       description="The push queue (outbox).")
    osub = p.add_subparsers(dest="outbox_cmd", required=True)
    st = osub.add_parser("status", help="counts by status, channel, purpose and failure reason",
                         description=STATUS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)
    rt = osub.add_parser("retry", help="queue failed pushes again", description=RETRY_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(rt)
    rt.add_argument("ids", nargs="*", type=int, metavar="ID", help="outbox row ids (see status / the database)")
    rt.add_argument("--all-failed", action="store_true", help="every failed push")
    rt.set_defaults(func=_retry)
    sc = osub.add_parser("scheduled", help="broadcast notices still waiting to go out (with their keys)",
                         description=SCHEDULED_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(sc)
    sc.add_argument("--json", action="store_true", help="machine-readable output")
    sc.set_defaults(func=_scheduled)
    ca = osub.add_parser("cancel", help="take back a broadcast notice that has not gone out",
                         description=CANCEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(ca)
    ca.add_argument("key", help="the notice's key (broadcast:…)")
    ca.add_argument("--json", action="store_true", help="machine-readable output")
    ca.set_defaults(func=_cancel)
    rn = osub.add_parser("run", help="run a sender process without the web server", description=RUN_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config(rn)
    rn.add_argument("--once", action="store_true", help="deliver what is due now and exit")
    rn.add_argument("--worker", help="name recorded in claimed_by (default: host:pid:random)")
    rn.set_defaults(func=_run)


# ---------------------------------------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from storage.outbox_repo import status_counts

    cfg = config_of(args)

    async def go() -> dict[str, Any]:
        async with database(cfg) as db:
            return await status_counts(db, SystemClock().now(), claim_timeout_s=cfg.outbox.claim_timeout_s)

    data = run(go())
    from bot.outbox import CHANNELS

    # Every channel, in the order they are tried (kefu, subscribe = 订阅通知, template, sms), even at 0.
    data["by_channel"] = {**{ch: 0 for ch in CHANNELS}, **data["by_channel"]}
    emit(data, args.json, lambda d: render_status(d, cfg.bot.timezone))
    return 0


def render_status(d: dict[str, Any], tz: str = "Asia/Shanghai") -> str:
    """The human view of :func:`storage.outbox_repo.status_counts`."""
    from bot.clock import fmt_local

    s = d["by_status"]
    lines = [f"推送队列 outbox: {d['total']} 条"]
    oldest = d.get("oldest_pending_due_at")
    pend = f"pending {s['pending']}（到期 {d['pending_due_now']}，重试中 {d['pending_retrying']}"
    if oldest is not None:
        pend += f"，最早到期 {fmt_local(oldest, tz, '%Y-%m-%d %H:%M')}"
    pend += "）"
    lines.append(f"  {pend}")
    lines.append(f"  sending {s['sending']}（超时未完成 {d['sending_stale']}）  sent {s['sent']}  "
                 f"failed {s['failed']}  cancelled {s['cancelled']}")
    if d["by_channel"]:
        lines.append("已发送渠道: " + "  ".join(f"{k} {v}" for k, v in d["by_channel"].items())
                     + "   (kefu 客服消息 · subscribe 订阅通知 · template 模板消息 · sms 短信)")
    if d["template_delivery"]:
        lines.append("模板送达回执: " + "  ".join(f"{k} {v}" for k, v in sorted(d["template_delivery"].items())))
    if d["by_purpose"]:
        cols = ("pending", "sending", "sent", "failed", "cancelled")
        width = max(len(p) for p in d["by_purpose"]) + 2
        lines.append("按用途:")
        lines.append("  " + "purpose".ljust(width) + "".join(c.rjust(10) for c in cols))
        for purpose, counts in d["by_purpose"].items():
            lines.append("  " + purpose.ljust(width) + "".join(str(counts.get(c, 0)).rjust(10) for c in cols))
    if d["failure_reasons"]:
        lines.append("失败原因:")
        lines += [f"  {r['count']:>6}  {r['reason']}" for r in d["failure_reasons"]]
    if d["cancel_reasons"]:
        lines.append("取消原因:")
        lines += [f"  {r['count']:>6}  {r['reason']}" for r in d["cancel_reasons"]]
    return "\n".join(lines)


def _retry(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from storage.outbox_repo import retry_failed

    if bool(args.ids) == bool(args.all_failed):
        print("vetbot: give outbox row ids or --all-failed (one of them)", file=sys.stderr)
        return 2
    cfg = config_of(args)

    async def go() -> tuple[int, list[int]]:
        async with database(cfg) as db:
            return await retry_failed(db, SystemClock().now(), None if args.all_failed else args.ids)

    done, refused = run(go())
    print(f"已重新排队 {done} 条推送（requeued {done}）")
    if refused:
        print(f"vetbot: not requeued (not failed, or no such id): {', '.join(map(str, refused))}", file=sys.stderr)
        return 2
    return 0


def _scheduled(args: argparse.Namespace) -> int:
    from bot.clock import fmt_local
    from storage.outbox_repo import pending_broadcasts

    cfg = config_of(args)

    async def go() -> list[dict[str, Any]]:
        async with database(cfg) as db:
            return await pending_broadcasts(db)

    items = run(go())
    for e in items:
        e["due_at"] = fmt_local(e["due_at"], cfg.bot.timezone, "%Y-%m-%d %H:%M")

    def render(xs: list[dict[str, Any]]) -> str:
        if not xs:
            return "没有等待发送的群发通知。"
        lines = [f"等待发送的群发通知 {len(xs)} 条（取消：vetbot outbox cancel -c … KEY）"]
        lines += [f"  {e['due_at']}  {e['pending']:>6} 人  {e['title']}\n      {e['key']}" for e in xs]
        return "\n".join(lines)

    emit(items, args.json, render)
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from storage.outbox_repo import cancel_broadcast

    key = args.key.strip()
    if not key.startswith("broadcast:"):
        print(f"vetbot: {key!r} is not a broadcast key (they start with broadcast:; see `vetbot outbox scheduled`)",
              file=sys.stderr)
        return 2
    cfg = config_of(args)

    async def go() -> dict[str, int]:
        async with database(cfg) as db:
            return await cancel_broadcast(db, key)

    r = run(go())
    if not any(r.values()):
        print(f"vetbot: no broadcast with key {key} (see `vetbot outbox scheduled`)", file=sys.stderr)
        return 2

    def render(d: dict[str, int]) -> str:
        line = f"已取消 {d['cancelled']} 条未发出的推送（cancelled {d['cancelled']}）"
        if d["sent"]:
            line += f"；{d['sent']} 条已发出，无法撤回"
        if d["sending"]:
            line += (f"；{d['sending']} 条正在发送：发出的无法撤回，因临时错误退回队列的，"
                     "几分钟后再执行一次本命令即可取消")
        return line

    emit(r, args.json, render)
    return 0


def _run(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from bot.outbox import build_sender

    cfg = config_of(args)
    logging.getLogger().setLevel(cfg.logging.level.upper())

    async def go() -> int:
        async with database(cfg) as db:
            sender = build_sender(cfg, db, SystemClock(), worker=args.worker)
            try:
                if args.once:
                    r = await sender.deliver_due()
                    print(f"claimed {r.claimed}  sent {r.sent}  failed {r.failed}  cancelled {r.cancelled}  "
                          f"retry later {r.retried}  reclaimed {r.reclaimed}", flush=True)
                    return 0
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError):
                        loop.add_signal_handler(sig, stop.set)
                task = sender.start()
                print(f"outbox sender {sender.worker} running", flush=True)
                waiter = asyncio.create_task(stop.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                return 0
            finally:
                await sender.close()

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    return run(go())
