"""Binding a WeChat user to a roster member, so that knowing a team code and a member's phone is not
enough to act as them.

1. The team code (or the team's QR code) and the phone on the roster are asked as before.
2. Every attempt that does not bind at once is counted per WeChat user and per team in the database
   (:class:`storage.callup.BindAttempt`): a wrong team code, every phone submitted (listed or not: if
   only unlisted phones counted, the moment of the lockout would tell which phones are listed) and a
   wrong SMS code. Past ``callup.bind_max_attempts`` per user or ``callup.bind_team_max_attempts`` per
   team within ``callup.bind_window_min`` the bot says when to try again. A restart or a second
   process does not reset the counts.
3. The member confirms: with SMS set up (``sms.webhook_url``) a 6-digit code goes to the roster phone
   through the outbox's SMS path and the binding happens when the code comes back; without SMS the
   request waits for the team leader (the bound member whose phone is the team's leader phone) or
   staff to approve it, after a phone call to the member (绑定审核 in chat, ``vetbot teams approve``).
4. Listed and unlisted phones get the same replies: an unlisted phone gets a request too, which
   never binds and which no approver sees.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import Services, fmt_local
from storage import callup as repo
from storage.callup import BindRequest, Member, Team
from storage.models import User
from storage.outbox import HIGH, Push, enqueue

#: How soon a code may be sent again (回复“重发”).
RESEND_AFTER_S = 60


def mask(phone: str) -> str:
    """138****1234: enough for the member to recognise their number, not enough to learn it."""
    return f"{phone[:3]}****{phone[-4:]}" if len(phone) >= 8 else "***"


def sms_enabled(services: Services) -> bool:
    """Whether binding is confirmed by an SMS code (else by a leader's or staff's approval)."""
    return bool(services.config.sms.webhook_url)


def _window(services: Services) -> timedelta:
    return timedelta(minutes=services.config.callup.bind_window_min)


def _request_since(services: Services, now: datetime) -> datetime:
    return now - timedelta(hours=services.config.callup.bind_request_ttl_h)


async def blocked_until(session: AsyncSession, services: Services, openid: str, team_id: int | None,
                        now: datetime) -> tuple[datetime, str] | None:
    """(when to try again, who is limited: "user" / "team") when attempts are over a limit, else None."""
    cfg = services.config.callup
    since = now - _window(services)
    n, oldest = await repo.bind_attempts_since(session, since, openid=openid)
    if n >= cfg.bind_max_attempts and oldest is not None:
        return oldest + _window(services), "user"
    if team_id is not None:
        n, oldest = await repo.bind_attempts_since(session, since, team_id=team_id)
        if n >= cfg.bind_team_max_attempts and oldest is not None:
            return oldest + _window(services), "team"
    return None


def blocked_text(services: Services, until: datetime, who: str) -> str:
    """The reply when binding is rate-limited, saying when to try again."""
    at = fmt_local(until + timedelta(minutes=1), services.config.bot.timezone, "%H:%M")
    if who == "team":
        return (f"这个队伍近期的绑定尝试过多，为保护队员信息已暂停绑定，请于 {at} 后再试，"
                "或联系队长。")
    return f"绑定尝试次数过多，为保护队员信息，请于 {at} 后再试。如有疑问请联系队长。"


def count_attempt(session: AsyncSession, openid: str, team_id: int | None, what: str, now: datetime) -> None:
    """Count one attempt that did not bind (see the module docstring)."""
    repo.record_bind_attempt(session, openid, team_id, what, now)


def _code_hash(services: Services, request_id: int, code: str) -> str:
    # Keyed with the server secret: a copy of the database alone does not give the codes away.
    key = services.config.server.secret_key.encode("utf-8")
    return hmac.new(key, f"bind:{request_id}:{code}".encode(), hashlib.sha256).hexdigest()


@dataclass
class Started:
    """What :func:`start` did; ``reply`` is the same for listed and unlisted phones."""

    request: BindRequest
    reply: str


async def start(session: AsyncSession, services: Services, *, openid: str, team: Team, phone: str,
                now: datetime) -> Started:
    """A phone was given for ``team``: count the attempt, then send an SMS code to the roster phone or
    ask the leader and staff for approval. Call :func:`blocked_until` first."""
    count_attempt(session, openid, team.id, "phone", now)
    await repo.cancel_bind_requests(session, openid, now)
    member = await repo.member_in_team(session, team.id, phone)
    method = "sms" if sms_enabled(services) else "approval"
    req = BindRequest(openid=openid, team_id=team.id, member_id=member.id if member else None, phone=phone,
                      method=method, status="pending", created_at=now)
    session.add(req)
    await session.flush()
    if method == "sms":
        await send_code(session, services, req, now)
        ttl = services.config.callup.bind_code_ttl_min
        return Started(req, f"验证码短信已发送到 {mask(phone)}（只有“{team.name}”名册上登记的号码能收到）。\n"
                            f"请在 {ttl} 分钟内回复短信里的 6 位数字。\n"
                            "没收到？1 分钟后回复“重发”；回复“取消”退出。")
    if member is not None:
        await _ask_approvers(session, services, req, member, team, now)
    days = max(1, round(services.config.callup.bind_request_ttl_h / 24))
    return Started(req, f"已收到您的申请：绑定到“{team.name}”，手机 {mask(phone)}。\n"
                        "为防止他人冒用，需要队长或工作人员电话与您核实后确认，确认后公众号会通知您。\n"
                        f"如果 {days} 天内没有消息，请联系队长核对名册上的手机号。")


async def send_code(session: AsyncSession, services: Services, req: BindRequest, now: datetime) -> None:
    """A fresh 6-digit code for the request, by SMS to the roster phone only (nothing is sent for an
    unlisted phone; the reply does not say so)."""
    code = f"{secrets.randbelow(1_000_000):06d}"
    req.code_hash = _code_hash(services, req.id, code)
    req.code_sent_at = now
    req.code_expires_at = now + timedelta(minutes=services.config.callup.bind_code_ttl_min)
    if req.member_id is None:
        return
    member = await session.get(Member, req.member_id)
    if member is None:
        return
    ttl = services.config.callup.bind_code_ttl_min
    await enqueue(session, Push(
        openid=req.openid, purpose="bind_code", key=f"bind:{req.id}:{calendar.timegm(now.timetuple())}",
        text=f"您的应急队伍绑定验证码是 {code}，{ttl} 分钟内有效。如非本人操作，请勿告诉他人并联系队长。",
        data={"title": "绑定验证码"}, priority=HIGH, sms_to=member.phone), now)


async def resend(session: AsyncSession, services: Services, req: BindRequest, now: datetime) -> str:
    """回复“重发”: a new code (at most one a minute)."""
    if req.code_sent_at is not None and now - req.code_sent_at < timedelta(seconds=RESEND_AFTER_S):
        return "请稍等 1 分钟再回复“重发”。"
    await send_code(session, services, req, now)
    return f"已重新发送验证码到 {mask(req.phone)}，请在 {services.config.callup.bind_code_ttl_min} 分钟内回复。"


async def check_code(session: AsyncSession, services: Services, req: BindRequest, code: str,
                     now: datetime) -> str | None:
    """None when ``code`` is right (the caller binds); otherwise the reply (the attempt is counted)."""
    if req.code_expires_at is None or req.code_expires_at <= now:
        return "验证码已过期，请回复“重发”获取新的验证码（回复“取消”退出）。"
    ok = req.member_id is not None and req.code_hash is not None and hmac.compare_digest(
        req.code_hash, _code_hash(services, req.id, code))
    if not ok:
        count_attempt(session, req.openid, req.team_id, "otp", now)
        return "验证码不对，请核对短信后重新输入（回复“重发”再发一次，“取消”退出）。"
    return None


@dataclass
class Bound:
    """A binding made: the member, their team and the openid that had it before (if another)."""

    member: Member
    team: Team
    previous: str | None


async def bind(session: AsyncSession, services: Services, req: BindRequest, now: datetime, *,
               by: str, user: Any = None) -> Bound | None:
    """Attach the request's openid to its member (None: the request cannot bind any more).

    The openid's user gets the ``volunteer`` role and, when empty, the roster's phone, name and
    township (``user``: the turn's own record of that openid, which the turn writes back; otherwise the
    row is changed here). A member bound to another WeChat moves to the new one, which was confirmed
    (SMS code to the roster phone, or a leader who phoned them); the old one is told."""
    if req.member_id is None or req.status != "pending":
        return None
    member = await session.get(Member, req.member_id)
    team = await session.get(Team, req.team_id)
    if member is None or team is None or member.team_id != team.id:
        return None
    other = await repo.member_by_openid(session, req.openid)
    if other is not None and other.id != member.id:
        return None  # this WeChat was bound to someone else meanwhile
    previous = member.openid if member.openid and member.openid != req.openid else None
    member.openid, member.bound_at, member.updated_at = req.openid, now, now
    req.status, req.decided_at, req.decided_by = "done", now, by[:64]
    u = user if user is not None and user.openid == req.openid else await session.get(User, req.openid)
    if u is None:
        u = User(openid=req.openid, subscribed=True, first_seen=now, last_seen=now, kefu_sent=0, roles="")
        session.add(u)
    u.add_role("volunteer")
    if not u.phone:
        u.phone = member.phone
    if not u.name:
        u.name = member.name
    if not u.township and member.township:
        u.township = member.township
    if previous:
        await enqueue(session, Push(
            openid=previous, purpose="notice", key=f"bind:{req.id}:moved",
            text=f"您在“{team.name}”的队员绑定（{member.name}）已转到另一个微信。如非本人操作，请立即联系队长。",
            data={"title": "队员绑定变更", "content": "您的队员绑定已转到另一个微信"}, priority=HIGH), now)
    await session.flush()
    return Bound(member, team, previous)


def bound_text(b: Bound) -> str:
    """What the member is told when the binding is made."""
    skills = "、".join(b.member.skills or []) or "无"
    return (f"绑定成功！\n姓名：{b.member.name}\n队伍：{b.team.name}\n技能：{skills}\n"
            "收到集结通知时，回复 1 到 / 2 晚到 / 3 不能到。\n回复“我的队伍”查看队伍信息，"
            "回复“请假”暂停接收通知。")


async def _ask_approvers(session: AsyncSession, services: Services, req: BindRequest, member: Member, team: Team,
                         now: datetime) -> None:
    """Tell the team leader (if bound) and every staff user that a binding waits for them."""
    note = "（该队员目前已绑定另一个微信，同意后将改绑）" if member.openid else ""
    text = (f"【绑定申请】“{team.name}”队员 {member.name}（名册手机 {mask(member.phone)}）申请绑定微信{note}。\n"
            "请先电话与本人核实，再回复“绑定审核”处理。")
    who = set(await repo.leader_openids(session, team.id)) | set(await repo.staff_openids(session))
    who.discard(req.openid)
    if who:
        await enqueue(session, [Push(openid=o, purpose="notice", key=f"bind:{req.id}:ask", text=text,
                                     data={"title": "绑定申请", "content": f"{team.name} {member.name} 申请绑定微信"},
                                     priority=HIGH) for o in sorted(who)], now)


async def approver_teams(session: AsyncSession, user: Any, openid: str) -> list[int] | None:
    """Teams whose requests this user may decide: None = every team (staff); [] = none."""
    if user is not None and user.has_role("staff"):
        return None
    return [t.id for t in await repo.teams_led_by(session, openid)]


async def pending(session: AsyncSession, services: Services, now: datetime, team_ids: list[int] | None
                  ) -> list[tuple[BindRequest, Member, Team]]:
    """Approval requests waiting (not expired), oldest first."""
    return await repo.pending_approvals(session, _request_since(services, now), team_ids)


@dataclass
class Decision:
    """What :func:`decide` did: ``done`` False when nothing was decided; ``reply`` for the approver."""

    done: bool
    reply: str
    bound: Bound | None = None


async def decide(session: AsyncSession, services: Services, request_id: int, approve: bool, now: datetime, *,
                 by: str, allowed_teams: list[int] | None) -> Decision:
    """Approve or reject a pending approval request (the member is told either way).

    The request is re-read under its row lock, so two approvers never both decide it."""
    req = await repo.bind_request_for_update(session, request_id)
    if (req is None or req.method != "approval" or req.member_id is None
            or (allowed_teams is not None and req.team_id not in allowed_teams)):
        return Decision(False, "没有找到这条申请。")
    if req.status != "pending" or req.created_at < _request_since(services, now):
        return Decision(False, "这条申请已经处理过或已过期。")
    member = await session.get(Member, req.member_id)
    name = member.name if member else ""
    if not approve:
        req.status, req.decided_at, req.decided_by = "rejected", now, by[:64]
        team = await session.get(Team, req.team_id)
        await enqueue(session, Push(
            openid=req.openid, purpose="notice", key=f"bind:{req.id}:rejected",
            text=f"您绑定到“{team.name if team else ''}”的申请未通过。如有疑问，请联系队长。",
            data={"title": "绑定申请结果", "content": "您的绑定申请未通过"}, priority=HIGH), now)
        return Decision(True, f"已拒绝 {name} 的绑定申请，已通知申请人。")
    b = await bind(session, services, req, now, by=by)
    if b is None:
        req.status, req.decided_at, req.decided_by = "cancelled", now, by[:64]
        return Decision(False, "申请人的微信已绑定了其他队员，申请已作废。")
    await enqueue(session, Push(openid=req.openid, purpose="notice", key=f"bind:{req.id}:approved",
                                text=bound_text(b), data={"title": "绑定成功", "content": f"{b.team.name} {b.member.name}"},
                                priority=HIGH), now)
    return Decision(True, f"已同意：{b.member.name} 已绑定到“{b.team.name}”，已通知本人。", b)
