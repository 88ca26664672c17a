"""Volunteer teams and emergency call-ups (应急集结): tables and repository functions.

* ``callup_teams`` / ``callup_members``: the roster (imported from CSV, re-import updates by phone).
  A member's WeChat openid is attached when they bind (QR scene ``team:<id>`` or 绑定 + team code).
* ``callups``: one call-up with its escalation chain frozen at creation (a JSON list of steps), the
  pointer ``step`` to the next one and ``next_due_at`` when it runs (NULL: nothing scheduled).
* ``callup_targets``: who was called (one row per call-up and member) and their latest answer.
* ``callup_answers``: every answer ever given (the last one wins in ``callup_targets``).
* ``callup_events``: the audit trail of what the call-up did (created, notified, escalated, filled…);
  every push it queued is an ``outbox`` row with ``ref_type='callup'`` and ``ref_id`` = the call-up.
* ``callup_bind_attempts`` / ``callup_bind_requests``: binding a WeChat user to a member — attempts
  counted for rate limits, and bindings waiting for an SMS code or an approval (see
  :mod:`flows.callup.binding`).

Every query of the feature is a function here (flows keep the rules): teams and members, call-ups,
targets and answers, the audit trail and statistics, binding.

Roster counts are always aggregated from ``callup_targets`` (never kept as counters), so they are
exact however many answers arrive at once; decisions that depend on them (filled, standby) are taken
under a row lock on the call-up (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite has one writer).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.privacy import DELETE, DUTY, EMERGENCY, UNBIND, Declaration, Retention, declare

#: Answer statuses of a target. ``pending`` = no answer yet.
PENDING, CONFIRMED, LATE, DECLINED, STANDBY = "pending", "confirmed", "late", "declined", "standby"
STATUSES = (PENDING, CONFIRMED, LATE, DECLINED, STANDBY)
#: Call-up states: open (escalating) -> filled (quorum met) -> closed; filled may reopen.
OPEN, FILLED, CLOSED = "open", "filled", "closed"
ACTIVE_STATES = (OPEN, FILLED)


class Team(Base):
    """A volunteer team (应急队伍)."""

    __tablename__ = "callup_teams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    township: Mapped[str] = mapped_column(String(64), default="")
    leader: Mapped[str | None] = mapped_column(String(64))
    leader_phone: Mapped[str | None] = mapped_column(String(20))
    # What members send after 绑定 (e.g. 绑定 483920); printed by `vetbot teams qr`.
    code: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Member(Base):
    """A team member. ``phone`` is the identity a roster import matches on."""

    __tablename__ = "callup_members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[int] = mapped_column(ForeignKey("callup_teams.id"), index=True)
    skills: Mapped[list[str]] = mapped_column(JSONText, default=list)
    township: Mapped[str] = mapped_column(String(64), default="")
    # WeChat binding; one openid belongs to at most one member (NULLs do not collide).
    openid: Mapped[str | None] = mapped_column(String(64), unique=True)
    bound_at: Mapped[datetime | None] = mapped_column(DateTime)
    # 请假: unavailable until this moment (naive UTC); NULL or past = available.
    away_until: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    def available(self, now: datetime) -> bool:
        return self.away_until is None or self.away_until <= now


class CallUp(Base):
    """One emergency call-up (集结) with its frozen escalation chain."""

    __tablename__ = "callups"
    __table_args__ = (Index("ix_callups_state_next_due_at", "state", "next_due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(100))
    place: Mapped[str] = mapped_column(String(200))
    assemble_at: Mapped[datetime] = mapped_column(DateTime)
    needed: Mapped[int] = mapped_column(Integer)
    # {"驾驶": 2, "医护": 1}: at least k confirmed members with that skill.
    skills_needed: Mapped[dict[str, int]] = mapped_column(JSONText, default=dict)
    # Team ids targeted at creation, and a label for texts ("全部队伍", "城关镇救援队、…").
    team_ids: Mapped[list[int]] = mapped_column(JSONText, default=list)
    scope_label: Mapped[str] = mapped_column(String(200), default="")
    drill: Mapped[bool] = mapped_column(Boolean, default=False)
    late_counts: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), default=OPEN)
    # The escalation chain, frozen at creation: [{"do": "renotify"|"widen"|"staff_alert", "wait_min": m, …}]
    # (typed steps: flows/callup/steps.py, which reads this form).
    chain: Mapped[list[dict[str, Any]]] = mapped_column(JSONText, default=list)
    # Index of the next chain step to run; next_due_at is when (NULL: nothing scheduled).
    step: Mapped[int] = mapped_column(Integer, default=0)
    next_due_at: Mapped[datetime | None] = mapped_column(DateTime)
    link_expires_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    filled_at: Mapped[datetime | None] = mapped_column(DateTime)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime)
    closed_by: Mapped[str | None] = mapped_column(String(64))

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class CallUpTarget(Base):
    """A member called by a call-up, with their latest answer (the last answer wins)."""

    __tablename__ = "callup_targets"
    __table_args__ = (
        UniqueConstraint("callup_id", "member_id", name="uq_callup_targets_callup_id"),
        Index("ix_callup_targets_callup_id_status", "callup_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    callup_id: Mapped[int] = mapped_column(ForeignKey("callups.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("callup_members.id"), index=True)
    # Skills frozen when targeted: the quorum counts what the member had when called.
    skills: Mapped[list[str]] = mapped_column(JSONText, default=list)
    # 0 = targeted at creation, n = added by the n-th widen step.
    wave: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    eta_min: Mapped[int | None] = mapped_column(Integer)
    answered_at: Mapped[datetime | None] = mapped_column(DateTime)
    answered_via: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class CallUpAnswer(Base):
    """Every answer, kept: what the member said and what it was recorded as."""

    __tablename__ = "callup_answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    callup_id: Mapped[int] = mapped_column(ForeignKey("callups.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("callup_members.id"))
    # What was said: yes (到) / late (晚到) / no (不能到).
    answer: Mapped[str] = mapped_column(String(8))
    # What it became: confirmed / late / declined / standby.
    recorded_as: Mapped[str] = mapped_column(String(16))
    eta_min: Mapped[int | None] = mapped_column(Integer)
    via: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime)


class CallUpEvent(Base):
    """The audit trail of a call-up: created, notified, renotified, widened, filled, closed…"""

    __tablename__ = "callup_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    callup_id: Mapped[int] = mapped_column(ForeignKey("callups.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)


class BindAttempt(Base):
    """One attempt at binding a WeChat user to a roster member that did not bind at once: a wrong team
    code, a phone submitted (listed or not: counting both keeps the roster secret), a wrong SMS code.
    Attempts are counted per openid and per team over ``callup.bind_window_min`` (rate limits that a
    restart or a second process cannot reset)."""

    __tablename__ = "callup_bind_attempts"
    __table_args__ = (Index("ix_callup_bind_attempts_openid_at", "openid", "at"),
                      Index("ix_callup_bind_attempts_team_id_at", "team_id", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[int | None] = mapped_column(Integer)
    # code (wrong team code) / phone (a phone submitted) / otp (wrong SMS code)
    what: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime)


class BindRequest(Base):
    """A binding waiting for confirmation: an SMS code sent to the roster phone (``method='sms'``), or a
    team leader's / staff member's approval (``method='approval'``).

    A phone that is not on the team's roster gets a request too (``member_id`` NULL) so the person
    asking sees exactly what a listed phone would show; such requests never bind and approvers never
    see them. ``status``: pending → done (bound) / rejected / cancelled (a newer request replaced it);
    a pending request older than its time limit counts as expired."""

    __tablename__ = "callup_bind_requests"
    __table_args__ = (Index("ix_callup_bind_requests_openid_status", "openid", "status"),
                      Index("ix_callup_bind_requests_team_id_status", "team_id", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[int] = mapped_column(ForeignKey("callup_teams.id"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("callup_members.id"))
    phone: Mapped[str] = mapped_column(String(20))
    method: Mapped[str] = mapped_column(String(16))
    # sms: HMAC of the code (never the code itself), when it was last sent and until when it is valid.
    code_hash: Mapped[str | None] = mapped_column(String(64))
    code_sent_at: Mapped[datetime | None] = mapped_column(DateTime)
    code_expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))
ROSTER_KEPT = "名册由工作人员录入和维护（重新导入名册时更新）；您注销时只解除微信绑定，名册保留并通知工作人员"

declare(
    Declaration(
        "callup_teams", label="应急队伍", purpose="应急集结按队伍通知", basis=EMERGENCY,
        name=("leader",), phone=("leader_phone",), plain=("name", "township", "code"), kept=ROSTER_KEPT),
    Declaration(
        "callup_members", label="应急队伍名册登记", purpose="应急集结时通知您、统计到场人数和技能",
        basis=EMERGENCY, subject="openid", on_erase=UNBIND, name=("name",), phone=("phone",),
        personal=("skills",), plain=("township",), clear={"bound_at": None, "away_until": None},
        kept=ROSTER_KEPT),
    Declaration(
        "callups", label="集结", purpose="应急集结的记录", basis=EMERGENCY,
        refs=("created_by", "closed_by"),
        plain=("kind", "title", "place", "skills_needed", "team_ids", "scope_label", "state", "chain"),
        kept="作为应急工作档案保存"),
    Declaration(
        "callup_targets", label="收到的集结通知", purpose="统计谁收到通知、谁会到场", basis=EMERGENCY,
        via=("member_id", "callup_members", "id"), plain=("skills", "status", "answered_via"),
        kept="随集结记录保存（关联的是名册登记，不是微信）"),
    Declaration(
        "callup_answers", label="集结回复", purpose="保留每一次回复（到 / 晚到 / 不能到）", basis=EMERGENCY,
        via=("member_id", "callup_members", "id"), plain=("answer", "recorded_as", "via"),
        kept="随集结记录保存（关联的是名册登记，不是微信）"),
    Declaration(
        "callup_bind_attempts", label="绑定队伍的尝试", purpose="限制猜测队伍码和手机号的次数", basis=EMERGENCY,
        subject="openid", on_erase=DELETE, plain=("what",),
        retention=(Retention("short_lived_days", "at", note="{days} 天后删除"),), seen_by="仅系统使用"),
    Declaration(
        "callup_bind_requests", label="绑定队伍的申请", purpose="用短信验证码或队长、工作人员确认后绑定队伍",
        basis=EMERGENCY, subject="openid", on_erase=DELETE, phone=("phone",), refs=("decided_by",),
        plain=("method", "code_hash", "status"),
        retention=(Retention("short_lived_days", "created_at", note="{days} 天后删除"),),
        seen_by="本局工作人员和您所在队伍的队长"),
    Declaration(
        "callup_events", label="集结过程记录", purpose="集结的审计记录（谁发起、何时升级、何时结束）", basis=DUTY,
        refs=("actor",), mentions=("detail",), plain=("kind",), kept="作为应急工作档案保存"),
)


# ---------------------------------------------------------------------------------------------------
# Repository functions


async def team_by_ref(session: AsyncSession, ref: str | int) -> Team | None:
    """A team by id, exact name or binding code."""
    text = str(ref).strip()
    # ASCII digits that fit the id column only: '²'.isdigit() is True and int() fails on it, and 23
    # digits overflow the database integer (both raised from a QR scene or the CLI).
    if text.isascii() and text.isdigit() and len(text) <= 9:
        team = await session.get(Team, int(text))
        if team is not None:
            return team
    q = select(Team).where(or_(Team.name == text, Team.code == text))
    return (await session.execute(q)).scalars().first()


# Built once: these run on every answer (a whole county answering within minutes), and building a
# statement and its cache key costs more than SQLite takes to run it.
_MEMBER_BY_OPENID = select(Member).where(Member.openid == bindparam("o"))
_LOCK_CALLUP = (select(CallUp).where(CallUp.id == bindparam("c")).with_for_update()
                .execution_options(populate_existing=True))
_ANSWERABLE = (select(Member.id, CallUp.id).select_from(Member)
               .outerjoin(CallUpTarget, CallUpTarget.member_id == Member.id)
               .outerjoin(CallUp, (CallUp.id == CallUpTarget.callup_id) & CallUp.state.in_(ACTIVE_STATES))
               .where(Member.openid == bindparam("o"))
               .order_by(CallUp.created_at.desc(), CallUp.id.desc()))


async def member_by_openid(session: AsyncSession, openid: str) -> Member | None:
    return (await session.execute(_MEMBER_BY_OPENID, {"o": openid})).scalar_one_or_none()


async def answerable(session: AsyncSession, openid: str) -> tuple[int | None, list[int]]:
    """(member id or None when the openid is not bound, ids of their active call-ups newest first), in
    one query and without loading entities: what an answer in chat needs."""
    member_id: int | None = None
    callups: list[int] = []
    for mid, cid in (await session.execute(_ANSWERABLE, {"o": openid})).all():
        member_id = mid
        if cid is not None:
            callups.append(cid)
    return member_id, callups


async def lock_callup(session: AsyncSession, callup_id: int) -> CallUp | None:
    """The call-up row, locked for the rest of the transaction (PostgreSQL; SQLite has one writer).

    ``populate_existing`` so a row already in the session is re-read with the lock held."""
    return (await session.execute(_LOCK_CALLUP, {"c": callup_id})).scalar_one_or_none()


async def status_counts(session: AsyncSession, callup_id: int) -> dict[str, int]:
    """How many targets are in each status (all statuses present, zeros included)."""
    rows = await session.execute(
        select(CallUpTarget.status, func.count()).where(CallUpTarget.callup_id == callup_id)
        .group_by(CallUpTarget.status))
    counts = dict.fromkeys(STATUSES, 0)
    for status, n in rows:
        counts[status] = int(n)
    return counts


async def skill_counts(session: AsyncSession, callup_id: int, statuses: tuple[str, ...]) -> Counter[str]:
    """Per skill, how many targets in ``statuses`` have it (a member with two skills counts for both)."""
    rows = await session.execute(select(CallUpTarget.skills).where(
        CallUpTarget.callup_id == callup_id, CallUpTarget.status.in_(statuses)))
    counts: Counter[str] = Counter()
    for (skills,) in rows:
        counts.update(set(skills or []))
    return counts


def _sms_row_key(callup_id: int, member_col: Any) -> Any:
    """The outbox idempotency key of the call-up's SMS to a member, in SQL (``:callup:<c>:sms:<m>``: an SMS
    push has no openid, see :func:`flows.callup.service.sms_key`)."""
    return literal(f":callup:{callup_id}:sms:") + cast(member_col, String)


async def unreachable_count(session: AsyncSession, callup_id: int) -> int:
    """Targets without an answer whose member has no WeChat binding and whom no SMS reached or is about
    to (none was queued, or it failed): staff must phone them."""
    from storage.models import OutboxMessage as O

    by_sms = (select(O.id).where(O.idempotency_key == _sms_row_key(callup_id, Member.id), O.status != "failed")
              .exists())
    q = (select(func.count()).select_from(CallUpTarget).join(Member, Member.id == CallUpTarget.member_id)
         .where(CallUpTarget.callup_id == callup_id, CallUpTarget.status == PENDING, Member.openid.is_(None),
                ~by_sms))
    return int((await session.execute(q)).scalar() or 0)


def _sms_keys(session: AsyncSession, callup_id: int) -> tuple[Any, ...]:
    """WHERE conditions for the call-up's SMS notices. On SQLite a range of the unique key index
    (``:callup:<c>:sms:`` … ``;``: SQLite compares text bytewise), so the call-up's WeChat pushes are not
    read at all (roster() 7.2 → 3.2 ms at 1,170 members). PostgreSQL compares text by the database's
    collation, where such a range need not match the prefix: there the ref index and the purpose."""
    from storage.models import OutboxMessage as O
    from storage.sql import is_postgres

    if is_postgres(session):
        return (O.ref_type == "callup", O.ref_id == callup_id, O.purpose == "callup_sms")
    prefix = f":callup:{callup_id}:sms:"
    return (O.idempotency_key > prefix, O.idempotency_key < prefix[:-1] + ";")


#: ``answered_via`` of an answer by SMS: an inbound SMS, or the answer page opened from the SMS link.
SMS_VIA = ("sms", "sms_link")


async def sms_summary(session: AsyncSession, callup_id: int) -> dict[str, int]:
    """The call-up's SMS to members without WeChat: ``sent`` (the gateway took them), ``waiting`` (queued
    or being retried), ``failed``; and ``answered``: targets whose latest answer came by SMS."""
    from storage.models import OutboxMessage as O

    out = {"sent": 0, "waiting": 0, "failed": 0}
    for status, n in (await session.execute(
            select(O.status, func.count()).where(*_sms_keys(session, callup_id)).group_by(O.status))).all():
        key = {"sent": "sent", "failed": "failed", "cancelled": "failed"}.get(status, "waiting")
        out[key] += int(n)
    out["answered"] = int((await session.execute(
        select(func.count()).select_from(CallUpTarget).where(
            CallUpTarget.callup_id == callup_id, CallUpTarget.answered_via.in_(SMS_VIA)))).scalar() or 0)
    return out


async def sms_by_member(session: AsyncSession, callup_id: int) -> dict[int, str]:
    """Per member id, the outbox status of the call-up's SMS to them (sent / pending / sending / failed)."""
    from storage.models import OutboxMessage as O

    prefix = f":callup:{callup_id}:sms:"
    rows = (await session.execute(select(O.idempotency_key, O.status).where(*_sms_keys(session, callup_id)))).all()
    return {int(k[len(prefix):]): st for k, st in rows if k.startswith(prefix) and k[len(prefix):].isdigit()}


async def open_targets_by_phone(session: AsyncSession, phone: str) -> tuple[Member | None, list[tuple[CallUp, CallUpTarget]]]:
    """The roster member with this phone and their active call-ups, newest first (an inbound SMS)."""
    m = (await session.execute(select(Member).where(Member.phone == phone))).scalar_one_or_none()
    return m, (await active_targets_of(session, m.id) if m is not None else [])


async def active_targets_of(session: AsyncSession, member_id: int) -> list[tuple[CallUp, CallUpTarget]]:
    """The member's call-ups that are still active, newest first."""
    q = (select(CallUp, CallUpTarget).join(CallUpTarget, CallUpTarget.callup_id == CallUp.id)
         .where(CallUpTarget.member_id == member_id, CallUp.state.in_(ACTIVE_STATES))
         .order_by(CallUp.created_at.desc(), CallUp.id.desc()))
    return [(c, t) for c, t in (await session.execute(q)).all()]


#: Active call-ups of a member (newest first) with their answer and when the member was called: what the
#: chat's before-route hook reads for every message of a bound member, in one query.
_ACTIVE_ANSWERS = (select(CallUpTarget.callup_id, CallUpTarget.member_id, CallUpTarget.status,
                          CallUpTarget.created_at)
                   .join(Member, Member.id == CallUpTarget.member_id)
                   .join(CallUp, CallUp.id == CallUpTarget.callup_id)
                   .where(Member.openid == bindparam("o"), CallUp.state.in_(ACTIVE_STATES))
                   .order_by(CallUp.created_at.desc(), CallUp.id.desc()))


async def active_answers_of(session: AsyncSession, openid: str) -> list[Any]:
    """``(callup_id, member_id, status, created_at)`` of every active call-up the member with ``openid``
    was called to, newest first (empty for anyone who is not a bound member)."""
    return list((await session.execute(_ACTIVE_ANSWERS, {"o": openid})).all())


async def staff_openids(session: AsyncSession, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Everyone with the staff role (plus ``extra``), sorted for deterministic fan-out."""
    from storage.models import User

    rows = await session.execute(select(User.openid, User.roles).where(User.roles.contains("staff")))
    found = {o for o, roles in rows if "staff" in (roles or "").split(",")}
    return sorted(found | set(extra))


async def team_by_code(session: AsyncSession, code: str) -> Team | None:
    """The team whose binding code is ``code`` (exact)."""
    return (await session.execute(select(Team).where(Team.code == code))).scalar_one_or_none()


async def all_teams(session: AsyncSession) -> list[Team]:
    """Every team, by id."""
    return list((await session.execute(select(Team).order_by(Team.id))).scalars())


async def team_count(session: AsyncSession) -> int:
    """How many teams there are."""
    return int((await session.execute(select(func.count(Team.id)))).scalar() or 0)


async def team_codes(session: AsyncSession) -> set[str]:
    """Every binding code in use (a new code must differ from all of them)."""
    return set((await session.execute(select(Team.code))).scalars())


async def team_summaries(session: AsyncSession, now: datetime) -> list[dict[str, Any]]:
    """Per team: id, name, township, leader, code, QR scene, members, bound and on-leave counts."""
    counts = {tid: (n, b) for tid, n, b in (await session.execute(
        select(Member.team_id, func.count(Member.id), func.count(Member.openid)).group_by(Member.team_id))).all()}
    away = dict((await session.execute(select(Member.team_id, func.count(Member.id))
                                       .where(Member.away_until > now).group_by(Member.team_id))).all())
    out = []
    for t in await all_teams(session):
        n, b = counts.get(t.id, (0, 0))
        out.append({"id": t.id, "name": t.name, "township": t.township, "leader": t.leader, "code": t.code,
                    "scene": f"team:{t.id}", "members": n, "bound": b, "away": away.get(t.id, 0)})
    return out


async def member_in_team(session: AsyncSession, team_id: int, phone: str) -> Member | None:
    """The member of ``team_id`` with this roster phone."""
    return (await session.execute(select(Member).where(Member.phone == phone, Member.team_id == team_id))
            ).scalar_one_or_none()


async def members_by_ids(session: AsyncSession, ids: list[int]) -> dict[int, Member]:
    """Members by id (missing ids are left out)."""
    if not ids:
        return {}
    return {m.id: m for m in (await session.execute(select(Member).where(Member.id.in_(ids)))).scalars()}


async def headcount(session: AsyncSession, team_ids: list[int] | None, now: datetime) -> tuple[int, int, int]:
    """(members, available, bound and available) of the teams (None = all teams)."""
    q = select(Member.away_until, Member.openid)
    if team_ids is not None:
        q = q.where(Member.team_id.in_(team_ids))
    rows = (await session.execute(q)).all()
    avail = [r for r in rows if r[0] is None or r[0] <= now]
    return len(rows), len(avail), sum(1 for r in avail if r[1])


# --- call-ups ------------------------------------------------------------------------------------


async def due_callups(session: AsyncSession, now: datetime) -> list[int]:
    """Ids of open call-ups whose next escalation step is due, soonest first."""
    q = (select(CallUp.id).where(CallUp.state == OPEN, CallUp.next_due_at.is_not(None), CallUp.next_due_at <= now)
         .order_by(CallUp.next_due_at))
    return list((await session.execute(q)).scalars())


async def active_callups(session: AsyncSession) -> list[CallUp]:
    """Open and filled call-ups, newest first."""
    q = select(CallUp).where(CallUp.state.in_(ACTIVE_STATES)).order_by(CallUp.created_at.desc(), CallUp.id.desc())
    return list((await session.execute(q)).scalars())


async def latest_callup(session: AsyncSession) -> CallUp | None:
    """The call-up created last, whatever its state."""
    return (await session.execute(select(CallUp).order_by(CallUp.id.desc()).limit(1))).scalar_one_or_none()


async def list_callups(session: AsyncSession, *, active_only: bool, limit: int = 200) -> list[CallUp]:
    """Call-ups newest first (active ones only, or all)."""
    q = select(CallUp).order_by(CallUp.id.desc())
    if active_only:
        q = q.where(CallUp.state.in_(ACTIVE_STATES))
    return list((await session.execute(q.limit(limit))).scalars())


def add_event(session: AsyncSession, callup_id: int, kind: str, now: datetime, actor: str = "",
              **detail: Any) -> None:
    """Append an entry to the call-up's audit trail (written with the session's next flush)."""
    session.add(CallUpEvent(callup_id=callup_id, at=now, kind=kind, actor=actor[:64], detail=detail))


async def event_details(session: AsyncSession, callup_id: int, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ``detail`` of the call-up's events of these kinds, oldest first."""
    q = (select(CallUpEvent.detail).where(CallUpEvent.callup_id == callup_id, CallUpEvent.kind.in_(kinds))
         .order_by(CallUpEvent.id))
    return [d or {} for d in (await session.execute(q)).scalars()]


# --- targets -------------------------------------------------------------------------------------


async def candidates(session: AsyncSession, team_ids: list[int]) -> list[Any]:
    """Members of the teams (id, openid, name, phone, skills, away_until), by id: whom a call-up may target."""
    return list((await session.execute(
        select(Member.id, Member.openid, Member.name, Member.phone, Member.skills, Member.away_until)
        .where(Member.team_id.in_(team_ids)).order_by(Member.id))).all())


async def targeted_member_ids(session: AsyncSession, callup_id: int) -> set[int]:
    """Members the call-up already targets."""
    return set((await session.execute(
        select(CallUpTarget.member_id).where(CallUpTarget.callup_id == callup_id))).scalars())


async def add_targets(session: AsyncSession, callup_id: int, members: list[Any], wave: int, now: datetime) -> None:
    """Target ``members`` (rows from :func:`candidates`) with no answer yet; skills frozen as they are now."""
    rows = [{"callup_id": callup_id, "member_id": r.id, "skills": list(r.skills or []), "wave": wave,
             "status": PENDING, "created_at": now} for r in members]
    for i in range(0, len(rows), 1000):  # stay under SQLite's bound-parameter limit
        await session.execute(insert(CallUpTarget), rows[i:i + 1000])


async def pending_bound_members(session: AsyncSession, callup_id: int, now: datetime) -> list[Any]:
    """Targets without an answer who have a WeChat binding and are not on leave (whom a reminder reaches)."""
    q = (select(Member.id, Member.openid, Member.name, Member.phone, Member.away_until)
         .join(CallUpTarget, CallUpTarget.member_id == Member.id)
         .where(CallUpTarget.callup_id == callup_id, CallUpTarget.status == PENDING, Member.openid.is_not(None))
         .order_by(Member.id))
    return [r for r in (await session.execute(q)).all() if r.away_until is None or r.away_until <= now]


async def members_coming(session: AsyncSession, callup_id: int, *, unbound: bool = False) -> list[Member]:
    """Members who said 到 / 晚到 or are standby (told when the call-up closes): bound ones, and with
    ``unbound`` those without WeChat too (told by SMS)."""
    q = (select(Member).join(CallUpTarget, CallUpTarget.member_id == Member.id)
         .where(CallUpTarget.callup_id == callup_id, CallUpTarget.status.in_((CONFIRMED, LATE, STANDBY)))
         .order_by(Member.id))
    if not unbound:
        q = q.where(Member.openid.is_not(None))
    return list((await session.execute(q)).scalars())


async def roster_members(session: AsyncSession, callup_id: int) -> list[dict[str, Any]]:
    """Every target with name, phone, team, skills and answer (the staff page and the CLI)."""
    q = (select(CallUpTarget, Member, Team.name).join(Member, Member.id == CallUpTarget.member_id)
         .join(Team, Team.id == Member.team_id).where(CallUpTarget.callup_id == callup_id)
         .order_by(CallUpTarget.status, Team.name, Member.name))
    return [{"member_id": m.id, "name": m.name, "phone": m.phone, "team": team, "skills": t.skills,
             "status": t.status, "eta_min": t.eta_min, "answered_at": t.answered_at, "via": t.answered_via,
             "bound": m.openid is not None, "wave": t.wave}
            for t, m, team in (await session.execute(q)).all()]


# Built once: answers are the hot path (a whole county answering within minutes), and building a
# statement and its cache key costs more than SQLite takes to run it. Core statements on the tables
# (not the ORM entities): the ORM's bulk UPDATE/INSERT machinery cost more than the rest of an answer.
_TARGETS = CallUpTarget.__table__
_TARGET_Q = select(CallUpTarget.id, CallUpTarget.status).where(
    CallUpTarget.callup_id == bindparam("c"), CallUpTarget.member_id == bindparam("m")).with_for_update()
_TARGET_SET = update(_TARGETS).where(_TARGETS.c.id == bindparam("t")).values(
    status=bindparam("status"), answered_at=bindparam("answered_at"), answered_via=bindparam("answered_via"),
    eta_min=bindparam("eta_min"))
_ANSWER_ADD = insert(CallUpAnswer.__table__)
_COUNTED = select(func.count()).select_from(_TARGETS).where(
    _TARGETS.c.callup_id == bindparam("c"), _TARGETS.c.status.in_(bindparam("s", expanding=True)))
_COUNTED_SKILLS = select(_TARGETS.c.skills).where(
    _TARGETS.c.callup_id == bindparam("c"), _TARGETS.c.status.in_(bindparam("s", expanding=True)))


async def lock_target(session: AsyncSession, callup_id: int, member_id: int) -> tuple[int, str] | None:
    """(target id, current status) of the member in the call-up, row locked; None when not targeted.

    Loads no entity, so the Core update of :func:`write_answer` leaves nothing stale in the session."""
    row = (await session.execute(_TARGET_Q, {"c": callup_id, "m": member_id})).first()
    return None if row is None else (int(row[0]), str(row[1]))


async def write_answer(session: AsyncSession, *, callup_id: int, member_id: int, target_id: int, answer: str,
                       recorded_as: str, eta_min: int | None, via: str, now: datetime) -> None:
    """Set the target's latest answer and keep the answer in the history."""
    await session.execute(_TARGET_SET, {"t": target_id, "status": recorded_as, "answered_at": now,
                                        "answered_via": via, "eta_min": eta_min})
    await session.execute(_ANSWER_ADD, {"callup_id": callup_id, "member_id": member_id, "answer": answer,
                                        "recorded_as": recorded_as, "eta_min": eta_min, "via": via, "at": now})


async def counted(session: AsyncSession, callup_id: int, statuses: tuple[str, ...], *,
                  with_skills: bool) -> tuple[int, dict[str, int]]:
    """(how many targets are in ``statuses``, per skill how many of them have it) in one query; the
    skill counts only when ``with_skills`` (a member with two skills counts for both)."""
    args = {"c": callup_id, "s": list(statuses)}
    if not with_skills:
        return int((await session.execute(_COUNTED, args)).scalar() or 0), {}
    rows = (await session.execute(_COUNTED_SKILLS, args)).scalars().all()
    have: dict[str, int] = {}
    for skills in rows:
        for sk in set(skills or []):
            have[sk] = have.get(sk, 0) + 1
    return len(rows), have


async def standby_for_update(session: AsyncSession, callup_id: int) -> list[CallUpTarget]:
    """Standby targets, earliest answer first, locked; rows locked by someone else are skipped.

    SKIP LOCKED: a standby member answering right now holds their row and waits for the call-up row
    the caller holds; waiting for theirs would deadlock. They are simply not promoted this time."""
    q = (select(CallUpTarget).where(CallUpTarget.callup_id == callup_id, CallUpTarget.status == STANDBY)
         .order_by(CallUpTarget.answered_at, CallUpTarget.id).with_for_update(skip_locked=True))
    return list((await session.execute(q)).scalars())


async def set_late_eta(session: AsyncSession, callup_id: int, member_id: int, eta_min: int) -> bool:
    """Add the ETA to a 晚到 answer (the target and its last answer); False when it is no longer 晚到."""
    t = (await session.execute(select(CallUpTarget).where(
        CallUpTarget.callup_id == callup_id, CallUpTarget.member_id == member_id))).scalar_one_or_none()
    if t is None or t.status != LATE:
        return False
    t.eta_min = eta_min
    last = (await session.execute(select(CallUpAnswer).where(
        CallUpAnswer.callup_id == callup_id, CallUpAnswer.member_id == member_id)
        .order_by(CallUpAnswer.id.desc()).limit(1))).scalar_one_or_none()
    if last is not None and last.recorded_as == LATE:
        last.eta_min = eta_min
    return True


# --- audit trail and statistics ------------------------------------------------------------------


async def events_of(session: AsyncSession, callup_id: int) -> list[CallUpEvent]:
    """The call-up's events, oldest first."""
    q = select(CallUpEvent).where(CallUpEvent.callup_id == callup_id).order_by(CallUpEvent.id)
    return list((await session.execute(q)).scalars())


async def answers_of(session: AsyncSession, callup_id: int) -> list[tuple[CallUpAnswer, str, str]]:
    """Every answer given to the call-up with the member's name and phone, oldest first."""
    q = (select(CallUpAnswer, Member.name, Member.phone).join(Member, Member.id == CallUpAnswer.member_id)
         .where(CallUpAnswer.callup_id == callup_id).order_by(CallUpAnswer.id))
    return [(a, name, phone) for a, name, phone in (await session.execute(q)).all()]


async def pushes_of(session: AsyncSession, callup_id: int) -> list[Any]:
    """The outbox rows the call-up queued (``ref_type='callup'``), oldest first."""
    from storage.models import OutboxMessage

    q = (select(OutboxMessage).where(OutboxMessage.ref_type == "callup", OutboxMessage.ref_id == callup_id)
         .order_by(OutboxMessage.id))
    return list((await session.execute(q)).scalars())


async def push_results(session: AsyncSession, callup_id: int, purpose: str = "callup"
                       ) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Of the call-up's pushes of ``purpose``: counts by outbox status plus ``retrying`` (pending rows
    tried twice or more), and the reasons of failed and retrying rows with their counts (most first)."""
    from storage.models import OutboxMessage as O

    mine = (O.ref_type == "callup", O.ref_id == callup_id, O.purpose == purpose)
    by = {s: int(n) for s, n in (await session.execute(
        select(O.status, func.count()).where(*mine).group_by(O.status))).all()}
    troubled = or_(O.status == "failed", (O.status == "pending") & (O.attempts >= 2))
    by["retrying"] = int((await session.execute(
        select(func.count()).select_from(O).where(*mine, O.status == "pending", O.attempts >= 2))).scalar() or 0)
    reasons = [(r or "-", int(n)) for r, n in (await session.execute(
        select(O.last_error, func.count()).where(*mine, troubled).group_by(O.last_error)
        .order_by(func.count().desc(), O.last_error).limit(3))).all()]
    return by, reasons


async def callups_for_stats(session: AsyncSession, drills: bool) -> list[CallUp]:
    """Every call-up that is (``drills``) or is not a drill."""
    return list((await session.execute(select(CallUp).where(CallUp.drill.is_(drills)))).scalars())


async def status_totals(session: AsyncSession, callup_ids: list[int]) -> dict[str, int]:
    """Targets by status over these call-ups (statuses without targets are left out)."""
    q = (select(CallUpTarget.status, func.count()).where(CallUpTarget.callup_id.in_(callup_ids))
         .group_by(CallUpTarget.status))
    return {s: int(n) for s, n in (await session.execute(q)).all()}


async def first_answer_delays_min(session: AsyncSession, callup_ids: list[int]) -> list[float]:
    """Minutes from being called to the first answer, per target that answered."""
    first = (select(CallUpAnswer.callup_id, CallUpAnswer.member_id, func.min(CallUpAnswer.at).label("first"))
             .where(CallUpAnswer.callup_id.in_(callup_ids)).group_by(CallUpAnswer.callup_id, CallUpAnswer.member_id)
             .subquery())
    q = (select(first.c.first, CallUpTarget.created_at).join(
        CallUpTarget, (CallUpTarget.callup_id == first.c.callup_id) & (CallUpTarget.member_id == first.c.member_id)))
    return [(f - t).total_seconds() / 60 for f, t in (await session.execute(q)).all()]


async def team_status_counts(session: AsyncSession, callup_ids: list[int]) -> dict[str, dict[str, int]]:
    """Per team name, targets by status over these call-ups."""
    q = (select(Team.name, CallUpTarget.status, func.count()).join(Member, Member.id == CallUpTarget.member_id)
         .join(Team, Team.id == Member.team_id).where(CallUpTarget.callup_id.in_(callup_ids))
         .group_by(Team.name, CallUpTarget.status))
    out: dict[str, dict[str, int]] = {}
    for name, status, n in (await session.execute(q)).all():
        out.setdefault(name, {})[status] = int(n)
    return out


# --- binding -------------------------------------------------------------------------------------


def record_bind_attempt(session: AsyncSession, openid: str, team_id: int | None, what: str, now: datetime) -> None:
    """Count one binding attempt (see :class:`BindAttempt`)."""
    session.add(BindAttempt(openid=openid[:64], team_id=team_id, what=what[:16], at=now))


async def bind_attempts_since(session: AsyncSession, since: datetime, *, openid: str | None = None,
                              team_id: int | None = None) -> tuple[int, datetime | None]:
    """(how many attempts of this openid, or on this team, since ``since``; the oldest of them)."""
    q = select(func.count(), func.min(BindAttempt.at)).where(BindAttempt.at >= since)
    q = q.where(BindAttempt.openid == openid) if openid is not None else q.where(BindAttempt.team_id == team_id)
    n, oldest = (await session.execute(q)).one()
    return int(n or 0), oldest


async def open_bind_request(session: AsyncSession, openid: str, since: datetime) -> BindRequest | None:
    """The openid's newest pending request created after ``since`` (older ones count as expired)."""
    q = (select(BindRequest).where(BindRequest.openid == openid, BindRequest.status == "pending",
                                   BindRequest.created_at >= since)
         .order_by(BindRequest.id.desc()).limit(1))
    return (await session.execute(q)).scalar_one_or_none()


async def cancel_bind_requests(session: AsyncSession, openid: str, now: datetime) -> None:
    """Pending requests of this openid become ``cancelled`` (a new request replaces them)."""
    await session.execute(update(BindRequest).where(BindRequest.openid == openid, BindRequest.status == "pending")
                          .values(status="cancelled", decided_at=now), execution_options={"synchronize_session": False})


async def bind_request_for_update(session: AsyncSession, request_id: int) -> BindRequest | None:
    """A request, row locked (two approvers deciding at once: the second sees it decided)."""
    q = (select(BindRequest).where(BindRequest.id == request_id).with_for_update()
         .execution_options(populate_existing=True))
    return (await session.execute(q)).scalar_one_or_none()


async def pending_approvals(session: AsyncSession, since: datetime, team_ids: list[int] | None = None
                            ) -> list[tuple[BindRequest, Member, Team]]:
    """Pending approval requests for roster members, created after ``since``, oldest first (``team_ids``
    None: every team)."""
    q = (select(BindRequest, Member, Team).join(Member, Member.id == BindRequest.member_id)
         .join(Team, Team.id == BindRequest.team_id)
         .where(BindRequest.status == "pending", BindRequest.method == "approval", BindRequest.created_at >= since)
         .order_by(BindRequest.id))
    if team_ids is not None:
        q = q.where(BindRequest.team_id.in_(team_ids))
    return [(r, m, t) for r, m, t in (await session.execute(q)).all()]


async def leader_openids(session: AsyncSession, team_id: int) -> list[str]:
    """WeChat openids of the team's leader (the bound member whose phone is the team's leader_phone)."""
    q = (select(Member.openid).join(Team, Team.id == Member.team_id)
         .where(Team.id == team_id, Member.phone == Team.leader_phone, Member.openid.is_not(None)))
    return [o for o in (await session.execute(q)).scalars() if o]


async def teams_led_by(session: AsyncSession, openid: str) -> list[Team]:
    """Teams whose leader (by the roster's leader phone) is bound to this openid."""
    q = (select(Team).join(Member, Member.team_id == Team.id)
         .where(Member.openid == openid, Member.phone == Team.leader_phone).order_by(Team.id))
    return list((await session.execute(q)).scalars())
