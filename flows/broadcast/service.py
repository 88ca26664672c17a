"""群发通知: who a notice reaches and why, queueing it, its delivery report, taking it back.

The same functions serve ``vetbot broadcast``, the staff console and 群发通知 in chat. A notice is
not WeChat's mass send (4 per user per month, an admin confirms within 30 min): each recipient gets a
push through the outbox and its channel policy (kefu in the window, else the broadcast template, else
SMS), written in the caller's transaction together with the notice's row (:class:`storage.broadcast.Broadcast`).

Audience: everyone who follows (default), or by role, township or volunteer team. Roles and
townships come from what people registered themselves, so an audience is always explained: "11 位关注者
中 1 位登记为退役军人；其余 10 位未登记身份" tells staff why a notice by role reaches few people
(:func:`resolve`, used by the console, the chat and ``--dry-run`` alike).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import TickContext, fmt_local, tick
from storage import broadcast as store
from storage.callup import Member, Team
from storage.console import audit
from storage.models import OutboxMessage, User
from storage.outbox import Push, enqueue
from storage.outbox_repo import CANCELLED_BY_STAFF, broadcast_rows
from storage.sql import insert_ignore

#: Roles a notice may be addressed to, with the words staff read.
ROLES = {"veteran": "退役军人", "family": "军属/家属", "volunteer": "应急队员", "staff": "工作人员"}
TITLE_MAX, TEXT_MAX, URL_MAX = 30, 1000, 500


class BroadcastError(Exception):
    """A notice that cannot be queued as written; ``str(e)`` is a short Chinese explanation."""


@dataclass
class Audience:
    """Who a notice is for. Nothing set: everyone who follows. Filters combine (AND)."""

    role: str | None = None
    township: str | None = None
    team_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("role", self.role), ("township", self.township), ("team_id", self.team_id))
                if v not in (None, "")}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Audience:
        d = d or {}
        team = d.get("team_id")
        return cls(role=d.get("role") or None, township=d.get("township") or None,
                   team_id=int(team) if isinstance(team, int) or (isinstance(team, str) and team.isdigit()) else None)


@dataclass
class Resolved:
    """An audience resolved now: the recipients, a label, and the sentences that explain the count."""

    openids: list[str]
    label: str
    lines: list[str] = field(default_factory=list)
    #: How many people it reaches (``openids`` is empty when they were not asked for).
    count: int = 0

    def explain(self) -> str:
        return "\n".join(self.lines)


def clean(title: str, text: str, url: str | None) -> tuple[str, str, str | None]:
    """The notice's fields trimmed and checked; BroadcastError says what to fix."""
    title, text, url = (title or "").strip(), (text or "").strip(), (url or "").strip() or None
    if not title:
        raise BroadcastError("请填写标题。")
    if len(title) > TITLE_MAX:
        raise BroadcastError(f"标题最多 {TITLE_MAX} 个字，现在是 {len(title)} 个字。")
    if not text:
        raise BroadcastError("请填写正文。")
    if len(text) > TEXT_MAX:
        raise BroadcastError(f"正文最多 {TEXT_MAX} 个字，现在是 {len(text)} 个字。")
    if any(ord(c) < 32 and c not in "\n\t" for c in title + text):
        raise BroadcastError("标题或正文里有无法显示的控制字符，请重新输入。")
    if url is not None:
        if not url.startswith(("http://", "https://")) or len(url) > URL_MAX or any(c.isspace() for c in url):
            raise BroadcastError("链接须以 http:// 或 https:// 开头，不含空格，最多 500 个字符。")
    return title, text, url


def notice_key(title: str, text: str, role: str | None, township: str | None, url: str | None, day: str,
               team_id: int | None = None) -> str:
    """The idempotency key of one notice: the same notice for the same local day (or, scheduled, the same
    local send time ``YYYY-MM-DDTHHMM``) is queued once. (A team joins the digest only when set, so keys
    of notices without one are what they always were.)"""
    parts = [title, text, role or "", township or "", url or ""] + ([f"team={team_id}"] if team_id else [])
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return f"broadcast:{day}:{digest[:16]}"


async def _followers(session: AsyncSession) -> tuple[int, int]:
    """(following, unfollowed) user counts."""
    rows = dict((await session.execute(select(User.subscribed, func.count()).group_by(User.subscribed))).all())
    return int(rows.get(True, 0)), int(rows.get(False, 0))


def _has_role_sql(role: str) -> Any:
    """users.roles (comma-separated) holds exactly ``role`` (not a longer name containing it)."""
    return (literal(",") + func.coalesce(User.roles, "") + literal(",")).like(f"%,{role},%")


def _pool(team_id: int | None) -> tuple[Any, list[Any], Any]:
    """(FROM, WHERE, openid column) of the people an audience starts from: the followers, or a team's
    bound members who did not unfollow (a member bound through a roster import who never wrote has no
    user row yet: still a recipient)."""
    if team_id is None:
        return User.__table__, [User.subscribed.is_(True)], User.openid
    frm = Member.__table__.outerjoin(User.__table__, User.openid == Member.openid)
    return frm, [Member.team_id == team_id, Member.openid.is_not(None), User.subscribed.is_not(False)], Member.openid


async def resolve(session: AsyncSession, audience: Audience, *, with_openids: bool = True) -> Resolved:
    """The recipients of ``audience`` now (followers only), and why: each filter's sentence says how
    many of the people it looked at it kept and what the others lack. The figures come from one
    grouped query (a county's 180,000 followers are never loaded to count them); the openids only when
    ``with_openids``."""
    if audience.role and audience.role not in ROLES:
        raise BroadcastError(f"没有“{audience.role}”这个身份，可选：{'、'.join(ROLES.values())}")
    lines: list[str] = []
    labels: list[str] = []
    team: Team | None = None
    if audience.team_id is not None:
        team = await session.get(Team, audience.team_id)
        if team is None:
            raise BroadcastError("没有找到这支队伍。")
        total, unbound, left = (await session.execute(
            select(func.count(), func.count().filter(Member.openid.is_(None)),
                   func.count().filter(User.subscribed.is_(False)))
            .select_from(Member.__table__.outerjoin(User.__table__, User.openid == Member.openid))
            .where(Member.team_id == team.id))).one()
        parts = [f"“{team.name}”名册共 {total} 人，其中 {total - unbound - left} 位已绑定微信、能收到"]
        if unbound:
            parts.append(f"{unbound} 位未绑定微信，收不到通知，请电话告知")
        if left:
            parts.append(f"{left} 位已取消关注")
        lines.append("；".join(parts) + "。")
        labels.append(f"队伍：{team.name}")
    elif not audience.role and not audience.township:
        following, gone = await _followers(session)
        line = f"共 {following} 位关注者"
        if gone:
            line += f"（另有 {gone} 位已取消关注，收不到）"
        lines.append(line + "。")
    frm, where, openid_col = _pool(team.id if team is not None else None)
    role = _has_role_sql(audience.role) if audience.role else None
    town = audience.township
    registered = and_(User.kind.is_not(None), User.kind != "")
    q = select(case((role, 1), else_=0) if role is not None else literal(0),
               case((User.township == town, "match"), (or_(User.township.is_(None), User.township == ""), "none"),
                    else_="other") if town else literal("match"),
               case((registered, 1), else_=0), func.count()).select_from(frm).where(*where)
    groups = [(int(r), str(t), int(k), int(n)) for r, t, k, n in (await session.execute(q.group_by(text("1, 2, 3"))))]
    scope = "队员" if team is not None else "关注者"
    if audience.role:
        lines.append(_role_line(audience.role, groups, scope))
        labels.append(f"身份：{ROLES[audience.role]}")
        groups = [g for g in groups if g[0] == 1]
    if town:
        pool = sum(g[3] for g in groups)
        kept = sum(g[3] for g in groups if g[1] == "match")
        no_town = sum(g[3] for g in groups if g[1] == "none")
        other = pool - kept - no_town
        line = f"{pool} 位{scope}中 {kept} 位在“我的信息”登记的乡镇是“{town}”"
        rest = [f"{no_town} 位未登记乡镇"] if no_town else []
        if other:
            rest.append(f"{other} 位登记了其他乡镇")
        lines.append(line + ("；其余 " + "，".join(rest) if rest else "") + "。")
        labels.append(f"乡镇：{town}")
    count = sum(g[3] for g in groups if g[1] == "match")
    openids: list[str] = []
    if with_openids and count:
        conds = list(where) + ([role] if role is not None else []) + ([User.township == town] if town else [])
        openids = list((await session.execute(select(openid_col).select_from(frm).where(*conds)
                                              .order_by(openid_col))).scalars())
    return Resolved(openids, "，".join(labels) or "全部关注者", lines, count)


def _role_line(role: str, groups: list[tuple[int, str, int, int]], scope: str) -> str:
    word = ROLES[role]
    pool = sum(g[3] for g in groups)
    kept = sum(g[3] for g in groups if g[0] == 1)
    head = f"{pool} 位{scope}中 {kept} 位"
    rest = pool - kept
    if role in ("veteran", "family"):
        # The role is set by finishing 我的信息 (身份); say how many registered something else.
        other_kind = sum(g[3] for g in groups if g[0] == 0 and g[2] == 1)
        unregistered = rest - other_kind
        line = f"{head}登记为{word}"
        if rest:
            tail = [f"{other_kind} 位登记为其他身份"] if other_kind else []
            if unregistered:
                tail.append(f"{unregistered} 位未登记身份")
            line += f"；其余 {rest} 位" + ("未登记身份" if not other_kind else "中 " + "，".join(tail))
        return line + "（身份在“我的信息”中登记，登记后才能按身份收到通知）。"
    if role == "volunteer":
        return (f"{head}是已绑定微信的应急队员（扫描队伍二维码或回复“绑定 队伍码”后才算）；"
                f"名册上未绑定微信的队员收不到，可按队伍查看。")
    return f"{head}是{word}。"


async def known_townships(session: AsyncSession, limit: int = 50) -> list[tuple[str, int]]:
    """Townships followers registered (most followers first), for the console's and chat's choices."""
    q = (select(User.township, func.count()).where(User.subscribed.is_(True), User.township.is_not(None),
                                                    User.township != "")
         .group_by(User.township).order_by(func.count().desc(), User.township).limit(limit))
    return [(t, int(n)) for t, n in await session.execute(q)]


async def teams(session: AsyncSession) -> list[Team]:
    return list((await session.execute(select(Team).order_by(Team.township, Team.name))).scalars())


#: A notice to at most this many people is queued in the caller's transaction; a larger one is fanned
#: out in chunks of :data:`FAN_OUT_CHUNK` (each its own short transaction), so a county-wide notice never
#: holds the database — on SQLite the one writer every chat turn needs — for seconds on end.
FAN_OUT_INLINE = 2000
FAN_OUT_CHUNK = 2000


@dataclass
class Queued:
    """What :func:`queue` did. ``fan_out`` is True when the pushes still have to be queued in chunks
    (:func:`fan_out`: the CLI and console call it at once, the ``broadcast_fanout`` tick otherwise)."""

    broadcast_id: int | None
    key: str
    due_at: datetime
    recipients: int
    queued: int
    already_queued: int
    dry_run: bool
    resolved: Resolved
    fan_out: bool = False

    def as_dict(self, tz: str) -> dict[str, Any]:
        return {"id": self.broadcast_id, "key": self.key, "due_at": fmt_local(self.due_at, tz, "%Y-%m-%d %H:%M"),
                "recipients": self.recipients, "queued": self.queued, "already_queued": self.already_queued,
                "dry_run": self.dry_run, "audience": self.resolved.label, "explain": self.resolved.lines}


def _pushes(b: store.Broadcast, openids: list[str], tz: str) -> list[Push]:
    data: dict[str, Any] = {"title": b.title, "content": b.text, "time": fmt_local(b.due_at, tz)}
    if b.warning:  # WeChat allows unrequested template messages for fault and disaster warnings only
        data["template_basis"] = "warning"
    return [Push(openid=o, purpose="broadcast", key=b.key, text=f"【{b.title}】{b.text}", data=data, url=b.url,
                 priority=b.priority, due_at=b.due_at, ref_type=store.REF, ref_id=b.id) for o in openids]


async def queue(session: AsyncSession, now: datetime, *, title: str, text: str, audience: Audience | None = None,
                url: str | None = None, priority: int = 5, tz: str = "Asia/Shanghai", at: datetime | None = None,
                dry_run: bool = False, by: str = "cli", via: str = "cli", warning: bool = False) -> Queued:
    """Record a notice in the caller's transaction, due at ``at`` (naive UTC; default ``now``), and queue
    its pushes there too unless it goes to more than :data:`FAN_OUT_INLINE` people (then ``fan_out``).

    Recipients are the followers matching ``audience`` when queued (whoever unfollows before a scheduled
    notice is due gets nothing). The same notice again queues only for people who lack it; a notice staff
    took back and queue again goes out anew. ``warning`` marks a fault or disaster warning, the one kind
    of notice WeChat lets a template message carry to people who did not ask for it."""
    title, text, url = clean(title, text, url)
    audience = audience or Audience()
    resolved = await resolve(session, audience, with_openids=False)
    scheduled = at is not None and at > now
    when = at if scheduled and at is not None else now
    # Sent now: once per notice and local day. Scheduled: once per notice and send time, so a notice
    # scheduled for later can still be sent now, or scheduled again at a corrected time.
    slot = fmt_local(when, tz, "%Y-%m-%dT%H%M" if scheduled else "%Y-%m-%d")
    key = notice_key(title, text, audience.role, audience.township, url, slot, audience.team_id)
    if dry_run or not resolved.count:
        return Queued(None, key, when, resolved.count, 0, 0, dry_run, resolved)
    t = OutboxMessage.__table__
    await session.execute(delete(t).where(*broadcast_rows(key), t.c.status == "cancelled",
                                          t.c.last_error == CANCELLED_BY_STAFF))
    await insert_ignore(session, store.Broadcast.__table__, {
        "key": key, "title": title[:100], "text": text, "url": url, "audience": audience.as_dict(),
        "audience_label": resolved.label[:200], "recipients": resolved.count, "priority": priority, "due_at": when,
        "created_at": now, "created_by": by[:64], "via": via[:16], "warning": warning},
        index_elements=["key"])
    b = await store.by_key(session, key)
    assert b is not None
    if b.cancelled_at is not None:  # queued again after it was taken back
        b.cancelled_at, b.cancelled_by, b.created_by, b.via = None, None, by[:64], via
    b.recipients = resolved.count
    if resolved.count > FAN_OUT_INLINE:
        b.queued_at = None
        queued, pending = 0, True
    else:
        openids = (await resolve(session, audience)).openids
        queued = await enqueue(session, _pushes(b, openids, tz), now)
        b.queued_at, pending = now, False
    if queued or pending:
        await audit(session, actor=by, via=via, action="broadcast.send" if not scheduled else "broadcast.schedule",
                    target_type="broadcast", target_id=b.id, now=now,
                    summary=f"{title}（{resolved.label}，{resolved.count} 人）",
                    detail={"key": key, "due_at": fmt_local(when, tz, "%Y-%m-%d %H:%M"), "recipients": resolved.count})
    return Queued(b.id, key, when, resolved.count, queued, 0 if pending else resolved.count - queued, False, resolved,
                  fan_out=pending)


async def fan_out(db: Any, broadcast_id: int, now: datetime, tz: str, chunk: int | None = None) -> int:
    """Queue the pushes of a notice :func:`queue` left for later, :data:`FAN_OUT_CHUNK` per transaction
    (chat turns and other writers get the database between chunks). Safe to run again or twice at once
    (each push's key is unique); stops when staff take the notice back meanwhile. Returns the pushes it
    queued."""
    size = chunk or FAN_OUT_CHUNK
    async with db.session() as s:
        b = await s.get(store.Broadcast, broadcast_id)
        if b is None or b.cancelled_at is not None or b.queued_at is not None:
            return 0
        openids = (await resolve(s, Audience.from_dict(b.audience))).openids
    total = 0
    for i in range(0, len(openids), size):
        async with db.session() as s:
            b = await s.get(store.Broadcast, broadcast_id)
            if b is None or b.cancelled_at is not None:
                break
            total += await enqueue(s, _pushes(b, openids[i:i + size], tz), now)
        await asyncio.sleep(0)
    async with db.session() as s:
        b = await s.get(store.Broadcast, broadcast_id)
        if b is None:
            return total
        if b.cancelled_at is not None:  # taken back while we queued: what we added goes too
            t = OutboxMessage.__table__
            await s.execute(update(t).where(t.c.ref_type == store.REF, t.c.ref_id == b.id, t.c.status == "pending")
                            .values(status="cancelled", last_error=CANCELLED_BY_STAFF),
                            execution_options={"synchronize_session": False})
        elif b.queued_at is None:
            b.queued_at = now
    return total


async def unfinished(session: AsyncSession, now: datetime, grace: timedelta) -> list[int]:
    """Notices whose fan-out has not finished: from chat (the tick is their fan-out), or older than
    ``grace`` (the process that started it stopped)."""
    B = store.Broadcast
    q = select(B.id).where(B.queued_at.is_(None), B.cancelled_at.is_(None),
                           (B.via == "chat") | (B.created_at <= now - grace)).order_by(B.id)
    return list((await session.execute(q)).scalars())


async def cancel(session: AsyncSession, broadcast_id: int, now: datetime, *, by: str, via: str = "console"
                 ) -> dict[str, int] | None:
    """Take back a notice: its pushes not yet gone out (pending or failed) become cancelled; pushes a
    sender holds or has sent stay. Returns counts (``cancelled``, ``sent``, ``sending``), None when there
    is no such notice."""
    b = await session.get(store.Broadcast, broadcast_id)
    if b is None:
        return None
    t = OutboxMessage.__table__
    of = [t.c.ref_type == store.REF, t.c.ref_id == b.id]
    res = await session.execute(
        update(t).where(*of, t.c.status.in_(("pending", "failed")))
        .values(status="cancelled", last_error=CANCELLED_BY_STAFF, claimed_by=None, claimed_at=None)
        .returning(t.c.id), execution_options={"synchronize_session": False})
    cancelled = len(res.all())
    counts = dict((await session.execute(select(t.c.status, func.count()).where(*of).group_by(t.c.status))).all())
    if cancelled or b.queued_at is None:  # a fan-out still to come is called off as well
        b.cancelled_at, b.cancelled_by = now, by[:64]
        await audit(session, actor=by, via=via, action="broadcast.cancel", target_type="broadcast",
                    target_id=b.id, now=now, summary=f"{b.title}：撤回 {cancelled} 条未发出的推送")
    return {"cancelled": cancelled, "sent": int(counts.get("sent", 0)), "sending": int(counts.get("sending", 0))}


# What staff read for the reasons the outbox records (the raw reason stays next to it).
_REASONS = (
    ("user unsubscribed", "已取消关注"),
    (CANCELLED_BY_STAFF, "工作人员已撤回"),
    ("template message is not allowed", "没有可用的发送方式：普通通知按微信规定不能用模板消息发送，此人48小时内没有互动、"
                                        "没有同意接收通知（订阅通知）、也没有登记手机号"),
    ("no channel", "没有可用的发送方式（不在48小时互动期内、未同意接收通知、未配置模板消息、未登记手机号）"),
    ("43004", "用户未关注公众号"),
    ("40003", "微信号无效"),
    ("43101", "用户拒收此类消息"),
    ("45009", "微信接口今日调用次数已用完"),
    ("40037", "模板消息编号错误，请检查配置 templates.broadcast"),
    ("gave up after", "多次重试仍失败"),
    ("failed:user block", "用户拒收（屏蔽了公众号消息）"),
    ("failed: system failed", "微信系统原因未送达"),
)


def reason_text(reason: str | None) -> str:
    """A failure reason in words staff understand (falls back to the raw reason)."""
    r = reason or ""
    for needle, words in _REASONS:
        if needle in r:
            return words
    return r or "未知原因"


CHANNEL_WORDS = {"kefu": "客服消息", "subscribe": "订阅通知", "template": "模板消息", "sms": "短信", "": "尚未发送"}
STATUS_WORDS = {"pending": "待发送", "sending": "发送中", "sent": "已发出", "failed": "失败", "cancelled": "已取消"}


def summary_state(b: store.Broadcast, counts: dict[str, int], now: datetime) -> str:
    """One word for the notice list: 准备中 / 定时发送 / 发送中 / 已完成 / 已撤回."""
    waiting = counts.get("pending", 0) + counts.get("sending", 0)
    if b.queued_at is None and b.cancelled_at is None:
        return "准备中"
    # Taken back here, or with `vetbot outbox cancel` (which knows only the outbox rows).
    if not waiting and (b.cancelled_at is not None or counts.get("taken_back", 0)):
        return "已撤回"
    if waiting and b.due_at > now:
        return "定时发送"
    if waiting:
        return "发送中"
    return "已完成"


@tick("broadcast_fanout", 15)
async def finish_fan_outs(t: TickContext) -> None:
    """Queue the pushes of notices whose fan-out is pending (from chat, or cut short by a restart)."""
    async with t.db.session() as s:
        ids = await unfinished(s, t.now, timedelta(minutes=2))
    for broadcast_id in ids:
        await fan_out(t.db, broadcast_id, t.now, t.services.config.bot.timezone)
