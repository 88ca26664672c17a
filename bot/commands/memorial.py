"""`vetbot memorial`: review 寄语, statistics, campaigns and the sensitive-word list.

    vetbot memorial review -c vetbot.yaml                       # one by one: a 通过 / r 不通过 (asks why) / s 跳过 / q 退出
    vetbot memorial review -c vetbot.yaml --list [--json]       # list pending only
    vetbot memorial review -c vetbot.yaml --approve 12 --approve 13 --reject 14 [--reason 含有联系方式]
    vetbot memorial stats -c vetbot.yaml [--campaign qingming-2026 | --from 2026-04-01 --to 2026-04-07] [--json]
    vetbot memorial campaign list -c vetbot.yaml [--year 2026]
    vetbot memorial campaign add -c vetbot.yaml july1-2026 --title 七一·缅怀先烈 --day 2026-07-01
    vetbot memorial words check -c vetbot.yaml "要检查的话"
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
import unicodedata
from datetime import date, timedelta
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run

CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,39}$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("memorial", help="云端祭英烈：审核寄语、统计、活动、敏感词",
                       description="Online memorial administration.")
    msub = p.add_subparsers(dest="memorial_cmd", required=True)

    r = msub.add_parser("review", help="list and decide pending 寄语 (interactive, or --approve/--reject)")
    add_config(r)
    r.add_argument("--approve", type=int, action="append", default=[], metavar="ID", help="approve message ID")
    r.add_argument("--reject", type=int, action="append", default=[], metavar="ID", help="reject message ID")
    r.add_argument("--reason", default="", help="why a message is rejected: stored and sent to the author in a kind "
                                                "message (e.g. 含有联系方式); without it the author is told kindly, "
                                                "without a reason")
    r.add_argument("--list", action="store_true", help="only list pending messages")
    r.add_argument("--json", action="store_true", help="with --list: JSON output")
    r.add_argument("--by", default="", help="reviewer name stored with decisions (default: login name)")
    r.set_defaults(func=_review)

    st = msub.add_parser("stats", help="participants and actions per day")
    add_config(st)
    st.add_argument("--campaign", help="campaign code, e.g. qingming-2026, martyrs-day-2026 (or qingming: this year)")
    st.add_argument("--from", dest="start", help="first day YYYY-MM-DD (default: 6 days ago)")
    st.add_argument("--to", dest="end", help="last day YYYY-MM-DD (default: today)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_stats)

    c = msub.add_parser("campaign", help="commemoration campaigns (Qingming and 9·30 are built in)")
    csub = c.add_subparsers(dest="campaign_cmd", required=True)
    cl = csub.add_parser("list", help="list campaigns of a year")
    add_config(cl)
    cl.add_argument("--year", type=int)
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=_campaign_list)
    ca = csub.add_parser("add", help="add a campaign: reminders go out on --day")
    add_config(ca)
    ca.add_argument("code", help="short id, lowercase letters/digits/-, e.g. july1-2026")
    ca.add_argument("--title", required=True)
    ca.add_argument("--day", required=True, help="YYYY-MM-DD: the day reminders go out")
    ca.add_argument("--from", dest="start", help="statistics window start (default: --day)")
    ca.add_argument("--to", dest="end", help="statistics window end (default: --day)")
    ca.add_argument("--message", default="", help="reminder text")
    ca.set_defaults(func=_campaign_add)

    w = msub.add_parser("words", help="sensitive-word list tools")
    wsub = w.add_subparsers(dest="words_cmd", required=True)
    wc = wsub.add_parser("check", help="validate the list and show what a text would hit")
    add_config(wc)
    wc.add_argument("text", nargs="*")
    wc.set_defaults(func=_words_check)


def _fail(msg: str) -> int:
    print(f"vetbot: {msg}", file=sys.stderr)
    return 2


def _day(text: str | None, what: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise _UsageError(f"{what}: '{text}' is not a date (write YYYY-MM-DD)") from None


class _UsageError(Exception):
    pass


def _today(cfg: Any) -> date:
    from bot.clock import SystemClock
    from flows.memorial.service import local_day

    return local_day(SystemClock().now(), cfg.bot.timezone)


# --- review --------------------------------------------------------------------------------------------
async def _target_names(session: Any, ids: set[int]) -> dict[int, str]:
    from sqlalchemy import select

    from storage.memorial import Martyr

    ids = {i for i in ids if i}
    if not ids:
        return {}
    rows = await session.execute(select(Martyr.id, Martyr.name).where(Martyr.id.in_(ids)))
    return dict(rows.all())


def _label(names: dict[int, str], mid: int) -> str:
    from flows.memorial.texts import target_name

    return target_name(names.get(mid)) if mid else "全体英烈"


def _review(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    by = args.by or _login()
    if args.approve or args.reject:
        both = set(args.approve) & set(args.reject)
        if both:
            return _fail(f"message(s) {', '.join(map(str, sorted(both)))} both approved and rejected")
        return run(_decide_many(cfg, [(i, True) for i in args.approve] + [(i, False) for i in args.reject],
                                by, args.reason))
    if args.list or args.json:
        return run(_list_pending(cfg, args.json))
    return run(_interactive(cfg, by, args.reason))


def _login() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli"


async def _pending(cfg: Any) -> tuple[list[Any], dict[int, str]]:
    from storage.memorial import pending_messages

    async with database(cfg) as db, db.session() as s:
        msgs = await pending_messages(s, limit=500)
        return msgs, await _target_names(s, {m.martyr_id for m in msgs})


async def _list_pending(cfg: Any, as_json: bool) -> int:
    from bot.clock import fmt_local

    msgs, names = await _pending(cfg)
    tz = cfg.bot.timezone
    rows = [{"id": m.id, "target": _label(names, m.martyr_id), "martyr_id": m.martyr_id, "openid": m.openid,
             "text": m.text, "created_at": fmt_local(m.created_at, tz, "%Y-%m-%d %H:%M")} for m in msgs]

    def render(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return "no pending messages"
        body = "\n".join(f"#{r['id']}\t{r['created_at']}\t{r['target']}\t{r['text']}" for r in rs)
        return f"{body}\n{len(rs)} pending"

    emit(rows, as_json, render)
    return 0


async def _decide(cfg: Any, db: Any, message_id: int, approve: bool, by: str, reason: str) -> Any:
    from bot.clock import SystemClock
    from flows.memorial.review import review_message

    now = SystemClock().now()
    async with db.session() as s:  # the same review service the staff console calls
        return await review_message(s, cfg, message_id, approve, by=by, now=now, reason=reason, via="cli")


async def _decide_many(cfg: Any, decisions: list[tuple[int, bool]], by: str, reason: str) -> int:
    from storage.memorial import NotPending

    failed = 0
    async with database(cfg) as db:
        for mid, approve in decisions:
            try:
                await _decide(cfg, db, mid, approve, by, reason)
            except NotPending as e:
                print(f"vetbot: {e}", file=sys.stderr)
                failed += 1
                continue
            print(f"#{mid} {'approved' if approve else 'rejected'}; author notified")
    return 2 if failed else 0


async def _interactive(cfg: Any, by: str, reason: str) -> int:
    from bot.clock import fmt_local
    from storage.memorial import NotPending

    msgs, names = await _pending(cfg)
    if not msgs:
        print("没有待审核的寄语。")
        return 0
    print(f"待审核寄语 {len(msgs)} 条。每条回复：a 通过，r 不通过，s 跳过，q 退出。")
    done = {"a": 0, "r": 0}
    async with database(cfg) as db:
        for m in msgs:
            print(f"\n#{m.id}  {fmt_local(m.created_at, cfg.bot.timezone, '%Y-%m-%d %H:%M')}  "
                  f"给{_label(names, m.martyr_id)}\n  {m.text}")
            while True:
                try:
                    answer = (await asyncio.to_thread(input, "通过(a) / 不通过(r) / 跳过(s) / 退出(q)? ")).strip().lower()
                except EOFError:
                    answer = "q"
                if answer in ("a", "r", "s", "q", "通过", "不通过", "跳过", "退出"):
                    break
                print("请输入 a、r、s 或 q。")
            answer = {"通过": "a", "不通过": "r", "跳过": "s", "退出": "q"}.get(answer, answer)
            if answer == "q":
                break
            if answer == "s":
                continue
            why = reason
            if answer == "r" and not reason:
                try:
                    why = (await asyncio.to_thread(input, "不通过的原因（会委婉地告诉作者，可直接回车不写）：")).strip()
                except EOFError:
                    why = ""
            try:
                await _decide(cfg, db, m.id, answer == "a", by, why)
            except NotPending as e:
                print(f"  （{e}，已跳过）")
                continue
            done[answer] += 1
            print("  已通过，作者会收到通知。" if answer == "a" else "  已设为不通过，作者会收到委婉的通知。")
    print(f"\n本次通过 {done['a']} 条，不通过 {done['r']} 条。")
    return 0


# --- stats ---------------------------------------------------------------------------------------------
def _stats(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    try:
        start, end = _day(args.start, "--from"), _day(args.end, "--to")
    except _UsageError as e:
        return _fail(str(e))
    return run(_stats_run(cfg, args.campaign, start, end, args.json))


async def _resolve_campaign(session: Any, code: str, today: date) -> Any:
    from flows.memorial.calendar import builtin_campaigns
    from storage.memorial import campaign_by_code

    if code in ("qingming", "martyrs-day"):
        code = f"{code}-{today.year}"
    found = await campaign_by_code(session, code)
    if found is not None:
        return found
    m = re.fullmatch(r"(qingming|martyrs-day)-(\d{4})", code)
    if m and 1900 <= int(m.group(2)) <= 2100:
        for c in builtin_campaigns(int(m.group(2))):
            if c.code == code:
                return c
    return None


async def _stats_run(cfg: Any, code: str | None, start: date | None, end: date | None, as_json: bool) -> int:
    from flows.memorial.texts import LABEL
    from storage.memorial import ACTIONS, day_stats

    today = _today(cfg)
    async with database(cfg) as db, db.session() as s:
        campaign = None
        if code:
            campaign = await _resolve_campaign(s, code, today)
            if campaign is None:
                return _fail(f"no campaign {code!r} (see `vetbot memorial campaign list`)")
            start, end = start or campaign.starts_on, end or campaign.ends_on
        end = end or today
        start = start or end - timedelta(days=6)
        if start > end:
            return _fail(f"--from {start} is after --to {end}")
        if (end - start).days > 366:
            return _fail("at most 367 days at a time")
        days, overall = await day_stats(s, start, end)
    data = {
        "campaign": {"code": campaign.code, "title": campaign.title, "day": str(campaign.day)} if campaign else None,
        "from": str(start), "to": str(end), "participants": overall,
        "actions": {a: sum(d.actions[a] for d in days) for a in ACTIONS},
        "days": [{"day": str(d.day), "participants": d.participants, "actions": d.actions, "total": d.total}
                 for d in days],
    }
    data["total"] = sum(data["actions"].values())
    if as_json:
        emit(data, True, str)
        return 0
    head = f"{campaign.title}（{campaign.code}）\n" if campaign else ""
    widths = [12, 10, *([9] * len(ACTIONS)), 10]

    def row(cells: list[str]) -> str:
        return "".join(_pad(c, w, left=i == 0) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    lines = [head + row(["日期", "参与人数", *(LABEL[a] for a in ACTIONS), "合计"])]
    for d in days:
        lines.append(row([str(d.day), f"{d.participants:,}", *(f"{d.actions[a]:,}" for a in ACTIONS), f"{d.total:,}"]))
    lines.append(row(["合计", f"{overall:,}", *(f"{data['actions'][a]:,}" for a in ACTIONS), f"{data['total']:,}"]))
    lines.append("（参与人数：当天做过至少一次计数祭扫的人；合计行为整个时段去重后的人数。每人每天每项只计一次。）")
    print("\n".join(lines))
    return 0


def _pad(text: str, width: int, *, left: bool = False) -> str:
    """Pad to ``width`` terminal columns (Chinese characters take two)."""
    cols = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    space = " " * max(0, width - cols)
    return text + space if left else space + text


# --- campaigns -----------------------------------------------------------------------------------------
def _campaign_list(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from flows.memorial.campaigns import ensure_builtins
    from storage.memorial import campaigns

    cfg = config_of(args)
    year = args.year or _today(cfg).year
    if not 1900 <= year <= 2100:
        return _fail("--year must be between 1900 and 2100")

    async def go() -> list[dict[str, Any]]:
        async with database(cfg) as db, db.session() as s:
            await ensure_builtins(s, year, SystemClock().now())
            return [{"code": c.code, "title": c.title, "kind": c.kind, "day": str(c.day),
                     "from": str(c.starts_on), "to": str(c.ends_on),
                     "reminded": c.reminded_at is not None, "reminders_queued": c.reminders_queued}
                    for c in await campaigns(s, year)]

    rows = run(go())
    emit(rows, args.json, lambda rs: "\n".join(
        f"{r['code']:<22}{r['day']}  {r['title']}  ({r['from']} – {r['to']})"
        f"{'  已提醒 ' + str(r['reminders_queued']) + ' 人' if r['reminded'] else ''}" for r in rs))
    return 0


def _campaign_add(args: argparse.Namespace) -> int:
    from bot.clock import SystemClock
    from storage.memorial import ensure_campaign

    cfg = config_of(args)
    if not CODE_RE.match(args.code):
        return _fail(f"code {args.code!r}: use 2-40 lowercase letters, digits or '-', e.g. july1-2026")
    try:
        day = _day(args.day, "--day")
        start = _day(args.start, "--from") or day
        end = _day(args.end, "--to") or day
    except _UsageError as e:
        return _fail(str(e))
    assert day is not None and start is not None and end is not None
    if not start <= day <= end:
        return _fail(f"--day {day} must lie within --from {start} .. --to {end}")
    title = args.title.strip()
    if not 1 <= len(title) <= 100:
        return _fail("--title must be 1-100 characters")

    async def go() -> bool:
        async with database(cfg) as db, db.session() as s:
            return await ensure_campaign(s, code=args.code, title=title, kind="custom", day=day, starts_on=start,
                                         ends_on=end, now=SystemClock().now(), message=args.message.strip())

    if not run(go()):
        return _fail(f"campaign {args.code!r} already exists")
    print(f"campaign {args.code} added: reminders go out on {day} from {cfg.memorial.reminder_hour}:00 "
          f"to everyone who asked (提醒我)")
    return 0


# --- words ---------------------------------------------------------------------------------------------
def _words_check(args: argparse.Namespace) -> int:
    from flows.memorial.wordfilter import WordFilter, fold

    cfg = config_of(args)
    path = cfg.path(cfg.memorial.wordlist)
    wf = WordFilter.from_file(path)  # a broken list raises YamlFileError: one line, exit 2
    print(f"{path}: {len(wf.words)} entries ok")
    for text in args.text:
        hits = wf.hits(text)
        print(f"{text!r} → {fold(text)!r}: " + ("命中 " + "、".join(hits) if hits else "未命中"))
    return 0
