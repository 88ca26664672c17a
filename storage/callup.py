"""Volunteer teams and emergency call-ups (应急集结): tables and repository functions.

* ``callup_teams`` / ``callup_members``: the roster (imported from CSV, re-import updates by phone).
  A member's WeChat openid is attached when they bind (QR scene ``team:<id>`` or 绑定 + team code).
* ``callups``: one call-up with its escalation chain frozen at creation (a JSON list of steps), the
  pointer ``step`` to the next one and ``next_due_at`` when it runs (NULL: nothing scheduled).
* ``callup_targets``: who was called (one row per call-up and member) and their latest answer.
* ``callup_answers``: every answer ever given (the last one wins in ``callup_targets``).
* ``callup_events``: the audit trail of what the call-up did (created, notified, escalated, filled…);
  every push it queued is an ``outbox`` row with ``ref_type='callup'`` and ``ref_id`` = the call-up.

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
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.privacy import DUTY, EMERGENCY, UNBIND, Declaration, declare

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
    # The escalation chain, frozen at creation: [{"do": "renotify"|"widen"|"staff_alert", "wait_min": m, …}].
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
        "callup_events", label="集结过程记录", purpose="集结的审计记录（谁发起、何时升级、何时结束）", basis=DUTY,
        refs=("actor",), mentions=("detail",), plain=("kind",), kept="作为应急工作档案保存"),
)


# ---------------------------------------------------------------------------------------------------
# Repository functions


async def team_by_ref(session: AsyncSession, ref: str | int) -> Team | None:
    """A team by id, exact name or binding code."""
    text = str(ref).strip()
    if text.isdigit():
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


async def unreachable_count(session: AsyncSession, callup_id: int) -> int:
    """Targets without an answer whose member has no WeChat binding (staff must phone them)."""
    q = (select(func.count()).select_from(CallUpTarget).join(Member, Member.id == CallUpTarget.member_id)
         .where(CallUpTarget.callup_id == callup_id, CallUpTarget.status == PENDING, Member.openid.is_(None)))
    return int((await session.execute(q)).scalar() or 0)


async def active_targets_of(session: AsyncSession, member_id: int) -> list[tuple[CallUp, CallUpTarget]]:
    """The member's call-ups that are still active, newest first."""
    q = (select(CallUp, CallUpTarget).join(CallUpTarget, CallUpTarget.callup_id == CallUp.id)
         .where(CallUpTarget.member_id == member_id, CallUp.state.in_(ACTIVE_STATES))
         .order_by(CallUp.created_at.desc(), CallUp.id.desc()))
    return [(c, t) for c, t in (await session.execute(q)).all()]


async def staff_openids(session: AsyncSession, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Everyone with the staff role (plus ``extra``), sorted for deterministic fan-out."""
    from storage.models import User

    rows = await session.execute(select(User.openid, User.roles).where(User.roles.contains("staff")))
    found = {o for o, roles in rows if "staff" in (roles or "").split(",")}
    return sorted(found | set(extra))
