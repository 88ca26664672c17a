"""云端祭英烈: the martyr roll, tribute counters, per-user-per-day tribute rows, messages, campaigns and
reminder opt-ins — the tables and the repository functions on them.

Counting rule: one counted action of each kind per user, per target (a martyr, or the memorial as a
whole, ``martyr_id = 0``), per local calendar day. :func:`record_tribute` enforces it with
``INSERT … ON CONFLICT DO NOTHING`` on :class:`MemorialTribute` and, only when that insert took, bumps
the counter in one ``INSERT … ON CONFLICT DO UPDATE SET n = n + 1 … RETURNING n`` statement: the
database serialises the increments (a row lock on PostgreSQL, the single writer on SQLite), so no
increment is lost and every counted action gets its own ordinal (您是第 12,345 位…).

On PostgreSQL a popular martyr's counter row is locked from the bump until the turn commits, so the bump
is the tribute's last statement, and there is no second hot row: the participant count is
``count(*)`` of :class:`MemorialParticipant` (read rarely), not a counter every first-timer locks.

Times are naive UTC; ``day`` columns hold the local (``bot.timezone``) date the caller computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base
from storage.privacy import DELETE, DUTY, PSEUDONYMISE, Declaration, Retention, declare
from storage.sql import insert_ignore
from storage.turnio import runner

#: ``martyr_id`` of the memorial as a whole (all martyrs).
MEMORIAL = 0
#: Tribute actions, in menu order. ``message`` is 寄语 (a message left on the memorial or a martyr).
ACTIONS = ("flower", "salute", "candle", "silence", "message")
#: Key of the participant count in :func:`totals` (counted from :class:`MemorialParticipant`).
PEOPLE = "people"
#: Message states. Preset phrases are ``approved`` at once; free text waits ``pending`` for staff.
PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


class Martyr(Base):
    """One record of the martyr roll (英烈名录).

    ``natural_key`` identifies a person across re-imports (see :func:`natural_key`); ``born``/``died``
    keep partial dates as typed after normalisation (``1951``, ``1951-03`` or ``1951-03-02``).
    ``initials`` holds the pinyin initials of the name, every plausible reading, space-separated with
    a leading and trailing space (`` hjg xjg ``) so a prefix search is ``LIKE '% hj%'``.
    """

    __tablename__ = "memorial_martyrs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    natural_key: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    gender: Mapped[str] = mapped_column(String(8), default="")
    hometown: Mapped[str] = mapped_column(String(128), default="")
    born: Mapped[str] = mapped_column(String(10), default="")
    died: Mapped[str] = mapped_column(String(10), default="")
    unit: Mapped[str] = mapped_column(String(200), default="")
    place_of_death: Mapped[str] = mapped_column(String(200), default="")
    burial: Mapped[str] = mapped_column(String(200), default="")
    biography: Mapped[str] = mapped_column(Text, default="")
    photo_url: Mapped[str | None] = mapped_column(String(500))
    initials: Mapped[str] = mapped_column(String(200), default="")
    pinyin: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class MemorialCounter(Base):
    """How many counted actions of one kind a target has had (``martyr_id = 0``: the memorial)."""

    __tablename__ = "memorial_counters"

    martyr_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, default=0)


class MemorialTribute(Base):
    """One counted action: this user did this action for this target on this local day.

    The primary key is the dedup rule itself; ``day`` leads it so per-day statistics scan a range.
    """

    __tablename__ = "memorial_tributes"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    martyr_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    action: Mapped[str] = mapped_column(String(16), primary_key=True)


class MemorialParticipant(Base):
    """Everyone who ever paid a counted tribute (参与人数), with their first day."""

    __tablename__ = "memorial_participants"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_day: Mapped[date] = mapped_column(Date, index=True)


class MemorialMessage(Base):
    """A 寄语 left on a martyr (or on the memorial, ``martyr_id = 0``).

    ``status``: approved (shown to everyone), pending (shown to its author only) or rejected (never
    shown). ``reason`` says why a message was rejected (the word filter's hits, or staff's note).
    """

    __tablename__ = "memorial_messages"
    __table_args__ = (Index("ix_memorial_messages_target", "martyr_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    martyr_id: Mapped[int] = mapped_column(Integer)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    preset: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(200))
    day: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime)
    decided_by: Mapped[str | None] = mapped_column(String(64))


class MemorialCampaign(Base):
    """A commemoration: reminders go out on ``day``; statistics cover ``starts_on``..``ends_on``.

    Built-in campaigns (``qingming-<year>``, ``martyrs-day-<year>``) are written by the campaign tick;
    staff add others. ``reminded_at`` is set once the reminders are queued.
    """

    __tablename__ = "memorial_campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    day: Mapped[date] = mapped_column(Date, index=True)
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    message: Mapped[str] = mapped_column(Text, default="")
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime)
    reminders_queued: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class MemorialReminder(Base):
    """A user who asked to be reminded of commemorations (提醒我)."""

    __tablename__ = "memorial_reminders"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


declare(
    Declaration("memorial_martyrs", label="英烈名录", no_personal_data="the martyr roll: historical public records, "
                "not users of the account"),
    Declaration("memorial_counters", label="祭扫计数", no_personal_data="totals per martyr and action"),
    Declaration(
        "memorial_tributes", label="祭扫记录", purpose="每人每天每项只计一次，统计每天参与人数", basis=DUTY,
        subject="openid", on_erase=PSEUDONYMISE, plain=("action",),
        kept="直到您注销；注销后只留匿名的次数（不再关联到任何人）"),
    Declaration(
        "memorial_participants", label="参与祭扫", purpose="统计参与云端祭扫的人数", basis=DUTY,
        subject="openid", on_erase=PSEUDONYMISE, kept="直到您注销；注销后只留匿名计数"),
    Declaration(
        "memorial_messages", label="寄语", purpose="在纪念馆展示您的寄语（审核后公开）", basis=DUTY,
        subject="openid", on_erase=DELETE, personal=("text", "reason"), refs=("decided_by",), plain=("status",),
        retention=(Retention("rejected_message_days", "created_at", where=lambda t: t.c.status == REJECTED,
                             note="未通过审核的寄语 {days} 天后删除；公开的寄语保留到您注销"),),
        seen_by="公开的寄语所有人可见；审核中的仅您本人和审核的工作人员可见"),
    Declaration("memorial_campaigns", label="纪念活动", no_personal_data="commemoration days and their texts"),
    Declaration(
        "memorial_reminders", label="清明 / 烈士纪念日提醒", purpose="在纪念日提醒您", basis=DUTY,
        subject="openid", on_erase=DELETE, kept="直到您回复“取消提醒”或注销"),
)


# --------------------------------------------------------------------------------------------------
# Tributes


@dataclass(frozen=True)
class TributeResult:
    """What :func:`record_tribute` did: ``counted`` with its ordinal ``n``, or a repeat (not counted)."""

    counted: bool
    n: int | None = None
    new_participant: bool = False


_STMTS: dict[tuple[str, str], Any] = {}


def _stmt(name: str, dialect: str) -> Any:
    """The tribute path's statements, built once per dialect (the chat path of a tribute runs them
    thousands of times a second at the Qingming peak): ``tribute`` and ``participant`` are
    ``INSERT … ON CONFLICT DO NOTHING``; ``bump`` is ``INSERT (target, action, 1) ON CONFLICT DO UPDATE
    SET n = n + 1 RETURNING n``."""
    stmt = _STMTS.get((name, dialect))
    if stmt is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        if name == "bump":
            t = MemorialCounter.__table__
            stmt = insert(t).on_conflict_do_update(index_elements=["martyr_id", "action"],
                                                   set_={"n": t.c.n + 1}).returning(t.c.n)
        else:
            table = {"tribute": MemorialTribute, "participant": MemorialParticipant}[name].__table__
            stmt = insert(table).on_conflict_do_nothing()
        _STMTS[(name, dialect)] = stmt
    return stmt


def _insert(session: AsyncSession, table: Any) -> Any:
    name = session.bind.dialect.name if session.bind is not None else "sqlite"
    return postgresql.insert(table) if name == "postgresql" else sqlite.insert(table)


async def record_tribute(session: AsyncSession, openid: str, martyr_id: int, action: str, day: date) -> TributeResult:
    """Count ``action`` by ``openid`` on target ``martyr_id`` for local ``day`` unless already counted.

    Exact under concurrency on SQLite and PostgreSQL; see the module docstring. The caller's
    transaction holds it all: rolled back, nothing was counted.

    At the Qingming peak a tribute is the whole turn: on a batched SQLite chat turn (or tribute page) the
    three statements run inline on the batch's connection (:func:`storage.turnio.runner`), ~50 µs
    instead of the ~3 ms an ORM session created for them costs; the statements and the rows they write
    are the same (``tests/memorial/test_fast_path.py``)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown tribute action {action!r}; known: {', '.join(ACTIONS)}")
    sql = runner(session)
    d = sql.dialect.name
    took = await sql.execute(_stmt("tribute", d), {"day": day, "martyr_id": martyr_id, "openid": openid,
                                                   "action": action})
    if not took.rowcount or took.rowcount < 0:
        return TributeResult(False)
    new = await sql.execute(_stmt("participant", d), {"openid": openid, "first_day": day})
    # Last: the counter row stays locked (PostgreSQL) from here until the turn commits.
    n = (await sql.execute(_stmt("bump", d), {"martyr_id": martyr_id, "action": action, "n": 1})).scalar_one()
    return TributeResult(True, int(n), bool(new.rowcount and new.rowcount > 0))


async def counts(session: AsyncSession, martyr_id: int) -> dict[str, int]:
    """Counter values of one target, every action present (0 when never done)."""
    rows = await session.execute(select(MemorialCounter.action, MemorialCounter.n)
                                 .where(MemorialCounter.martyr_id == martyr_id))
    out = dict.fromkeys(ACTIONS, 0)
    out.update({a: int(n) for a, n in rows})
    return out


async def totals(session: AsyncSession) -> dict[str, int]:
    """Every action summed over all targets (the memorial and every martyr), plus ``people``."""
    rows = await session.execute(select(MemorialCounter.action, func.sum(MemorialCounter.n))
                                 .group_by(MemorialCounter.action))
    out = dict.fromkeys(ACTIONS, 0)
    out.update({a: int(n or 0) for a, n in rows})
    out[PEOPLE] = await participant_count(session)
    return out


async def participant_count(session: AsyncSession) -> int:
    """Everyone who ever paid a counted tribute."""
    return int((await session.execute(select(func.count()).select_from(MemorialParticipant))).scalar_one())


async def done_today(session: AsyncSession, openid: str, martyr_id: int, day: date) -> set[str]:
    """The actions this user already paid to this target today."""
    rows = await session.execute(select(MemorialTribute.action).where(
        MemorialTribute.day == day, MemorialTribute.martyr_id == martyr_id, MemorialTribute.openid == openid))
    return set(rows.scalars())


# --------------------------------------------------------------------------------------------------
# Martyrs


def escape_like(text: str) -> str:
    """Escape LIKE wildcards in user text (used with ``escape='\\\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def upsert_martyrs(session: AsyncSession, rows: Sequence[dict[str, Any]], now: datetime) -> tuple[int, int]:
    """Insert new records and update existing ones by ``natural_key``; returns (inserted, updated)."""
    if not rows:
        return 0, 0
    keys = [r["natural_key"] for r in rows]
    existing: set[str] = set()
    for i in range(0, len(keys), 500):
        existing.update((await session.execute(select(Martyr.natural_key)
                                               .where(Martyr.natural_key.in_(keys[i:i + 500])))).scalars())
    cols = [c.name for c in Martyr.__table__.columns if c.name not in ("id", "created_at")]
    t = Martyr.__table__
    for i in range(0, len(rows), 200):
        chunk = [{**{c: r.get(c) for c in cols}, "created_at": now, "updated_at": now} for r in rows[i:i + 200]]
        stmt = _insert(session, t)
        stmt = stmt.on_conflict_do_update(
            index_elements=["natural_key"],
            set_={c: getattr(stmt.excluded, c) for c in cols if c != "natural_key"})
        await session.execute(stmt, chunk)
    inserted = sum(1 for k in keys if k not in existing)
    return inserted, len(keys) - inserted


async def martyrs_by_key(session: AsyncSession, keys: Sequence[str]) -> dict[str, Martyr]:
    """The records with these natural keys (an import's preview compares them with the file)."""
    out: dict[str, Martyr] = {}
    keys = list(dict.fromkeys(keys))
    for i in range(0, len(keys), 500):
        q = select(Martyr).where(Martyr.natural_key.in_(keys[i:i + 500]))
        out.update((m.natural_key, m) for m in (await session.execute(q)).scalars())
    return out


async def get_martyr(session: AsyncSession, martyr_id: int) -> Martyr | None:
    return await session.get(Martyr, martyr_id)


_NAMED = select(Martyr.id, Martyr.name).where(Martyr.name == bindparam("name")).order_by(Martyr.id) \
    .limit(bindparam("limit"))


async def martyrs_named(session: AsyncSession, name: str, limit: int = 20) -> list[tuple[int, str]]:
    """(id, name) of the records named exactly ``name`` (an index lookup: the one-message tribute path,
    inline on a batched SQLite turn like :func:`record_tribute`)."""
    rows = (await runner(session).execute(_NAMED, {"name": name, "limit": limit})).all()
    return [(int(i), str(n)) for i, n in rows]


def _search_filter(q: str, letters: bool) -> tuple[Any, Any]:
    like = f"%{escape_like(q)}%"
    prefix = f"{escape_like(q)}%"
    if letters:
        ini = f"% {escape_like(q)}%"
        cond = or_(Martyr.initials.like(ini, escape="\\"), Martyr.pinyin.like(prefix, escape="\\"))
        rank = case((Martyr.initials.like(f"% {escape_like(q)} %", escape="\\"), 0),
                    (Martyr.initials.like(ini, escape="\\"), 1), else_=2)
        return cond, rank
    cond = or_(Martyr.name.like(like, escape="\\"), Martyr.hometown.like(like, escape="\\"),
               Martyr.unit.like(like, escape="\\"), Martyr.burial.like(like, escape="\\"),
               Martyr.place_of_death.like(like, escape="\\"))
    rank = case((Martyr.name == q, 0), (Martyr.name.like(prefix, escape="\\"), 1),
                (Martyr.name.like(like, escape="\\"), 2), (Martyr.hometown.like(like, escape="\\"), 3),
                (Martyr.unit.like(like, escape="\\"), 4), else_=5)
    return cond, rank


async def search_martyrs(session: AsyncSession, q: str, *, letters: bool, limit: int,
                         offset: int = 0) -> tuple[int, list[Martyr]]:
    """Search by name (exact first, then prefix, then partial), hometown, unit, burial place or place
    of death; with ``letters`` by pinyin initials (hjg) or full pinyin prefix. Returns (total, page)."""
    cond, rank = _search_filter(q, letters)
    total = (await session.execute(select(func.count()).select_from(Martyr).where(cond))).scalar_one()
    rows = await session.execute(select(Martyr).where(cond).order_by(rank, Martyr.name, Martyr.id)
                                 .limit(limit).offset(offset))
    return int(total), list(rows.scalars())


async def martyr_count(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(Martyr))).scalar_one())


# --------------------------------------------------------------------------------------------------
# Messages


async def add_message(session: AsyncSession, *, openid: str, martyr_id: int, text: str, preset: bool,
                      status: str, now: datetime, day: date, reason: str | None = None) -> MemorialMessage:
    msg = MemorialMessage(openid=openid, martyr_id=martyr_id, text=text, preset=preset, status=status,
                          reason=reason, day=day, created_at=now,
                          decided_at=now if status != PENDING else None,
                          decided_by="preset" if preset else ("filter" if status == REJECTED else None))
    session.add(msg)
    await session.flush()
    return msg


async def messages_today(session: AsyncSession, openid: str, martyr_id: int, day: date) -> int:
    """How many messages (not filter-rejected) this user left on this target today (for the daily cap)."""
    q = select(func.count()).select_from(MemorialMessage).where(
        MemorialMessage.openid == openid, MemorialMessage.martyr_id == martyr_id, MemorialMessage.day == day,
        or_(MemorialMessage.status != REJECTED, MemorialMessage.decided_by != "filter"))
    return int((await session.execute(q)).scalar_one())


async def approved_messages(session: AsyncSession, martyr_id: int, limit: int = 30,
                            before_id: int | None = None) -> list[MemorialMessage]:
    """Newest approved messages of a target (``before_id`` pages back)."""
    q = select(MemorialMessage).where(MemorialMessage.martyr_id == martyr_id, MemorialMessage.status == APPROVED)
    if before_id is not None:
        q = q.where(MemorialMessage.id < before_id)
    return list((await session.execute(q.order_by(MemorialMessage.id.desc()).limit(limit))).scalars())


async def approved_count(session: AsyncSession, martyr_id: int) -> int:
    q = select(func.count()).select_from(MemorialMessage).where(
        MemorialMessage.martyr_id == martyr_id, MemorialMessage.status == APPROVED)
    return int((await session.execute(q)).scalar_one())


async def own_pending(session: AsyncSession, openid: str, martyr_id: int) -> list[MemorialMessage]:
    """The author's own messages still waiting for review (shown only to them)."""
    q = select(MemorialMessage).where(MemorialMessage.openid == openid, MemorialMessage.martyr_id == martyr_id,
                                      MemorialMessage.status == PENDING).order_by(MemorialMessage.id.desc())
    return list((await session.execute(q.limit(10))).scalars())


async def pending_messages(session: AsyncSession, limit: int = 100) -> list[MemorialMessage]:
    q = select(MemorialMessage).where(MemorialMessage.status == PENDING).order_by(MemorialMessage.id).limit(limit)
    return list((await session.execute(q)).scalars())


class NotPending(Exception):
    """The message does not exist or was already decided."""


async def decide_message(session: AsyncSession, message_id: int, approve: bool, *, by: str, now: datetime,
                         reason: str | None = None) -> MemorialMessage:
    """Approve or reject a pending message; the status change is conditional, so two reviewers deciding
    the same message at once decide it once (the loser gets :class:`NotPending`)."""
    res = await session.execute(
        update(MemorialMessage)
        .where(MemorialMessage.id == message_id, MemorialMessage.status == PENDING)
        .values(status=APPROVED if approve else REJECTED, decided_at=now, decided_by=by[:64],
                reason=None if approve else (reason or None))
        .execution_options(synchronize_session=False))
    msg = await session.get(MemorialMessage, message_id)
    if not res.rowcount:
        if msg is None:
            raise NotPending(f"no message #{message_id}")
        raise NotPending(f"message #{message_id} is already {msg.status}")
    assert msg is not None
    await session.refresh(msg)
    return msg


# --------------------------------------------------------------------------------------------------
# Campaigns and reminders


async def ensure_campaign(session: AsyncSession, *, code: str, title: str, kind: str, day: date, starts_on: date,
                          ends_on: date, now: datetime, message: str = "") -> bool:
    """Create the campaign ``code`` unless it exists; True when created."""
    return bool(await insert_ignore(session, MemorialCampaign.__table__, {
        "code": code, "title": title, "kind": kind, "day": day, "starts_on": starts_on, "ends_on": ends_on,
        "message": message, "reminders_queued": 0, "created_at": now}, index_elements=["code"]))


async def campaign_by_code(session: AsyncSession, code: str) -> MemorialCampaign | None:
    return (await session.execute(select(MemorialCampaign).where(MemorialCampaign.code == code))).scalar_one_or_none()


async def campaigns(session: AsyncSession, year: int | None = None) -> list[MemorialCampaign]:
    q = select(MemorialCampaign).order_by(MemorialCampaign.day, MemorialCampaign.code)
    if year is not None:
        q = q.where(MemorialCampaign.day >= date(year, 1, 1), MemorialCampaign.day <= date(year, 12, 31))
    return list((await session.execute(q)).scalars())


async def due_campaigns(session: AsyncSession, today: date) -> list[MemorialCampaign]:
    """Campaigns whose reminder day is ``today`` and whose reminders are not queued yet."""
    q = select(MemorialCampaign).where(MemorialCampaign.day == today, MemorialCampaign.reminded_at.is_(None))
    return list((await session.execute(q.order_by(MemorialCampaign.id))).scalars())


async def claim_campaign(session: AsyncSession, campaign_id: int, now: datetime) -> bool:
    """Mark a campaign's reminders as queued; False when another run already did (conditional update)."""
    res = await session.execute(update(MemorialCampaign)
                                .where(MemorialCampaign.id == campaign_id, MemorialCampaign.reminded_at.is_(None))
                                .values(reminded_at=now).execution_options(synchronize_session=False))
    return bool(res.rowcount)


async def set_reminders_queued(session: AsyncSession, campaign_id: int, n: int) -> None:
    await session.execute(update(MemorialCampaign).where(MemorialCampaign.id == campaign_id)
                          .values(reminders_queued=n).execution_options(synchronize_session=False))


async def opt_in(session: AsyncSession, openid: str, now: datetime) -> bool:
    """Ask for reminders; False when already opted in."""
    return bool(await insert_ignore(session, MemorialReminder.__table__, {"openid": openid, "created_at": now},
                                    index_elements=["openid"]))


async def opt_out(session: AsyncSession, openid: str) -> bool:
    """Stop reminders; False when not opted in."""
    row = await session.get(MemorialReminder, openid)
    if row is None:
        return False
    await session.delete(row)
    await session.flush()
    return True


_OPTED_IN = select(MemorialReminder.openid).where(MemorialReminder.openid == bindparam("openid"))


async def is_opted_in(session: AsyncSession, openid: str) -> bool:
    """Whether ``openid`` asked for Qingming / 9·30 reminders. Inline on a batched SQLite chat turn (see
    :func:`record_tribute`): the memorial menu's turn would otherwise pay for a whole ORM session to
    read one row."""
    return (await runner(session).execute(_OPTED_IN, {"openid": openid})).first() is not None


async def reminder_recipients(session: AsyncSession, after: str, limit: int) -> list[str]:
    """Opted-in openids of followers after ``after`` (keyset pages, so a huge list streams)."""
    from storage.models import User

    q = (select(MemorialReminder.openid)
         .join(User, User.openid == MemorialReminder.openid, isouter=True)
         .where(MemorialReminder.openid > after, or_(User.subscribed.is_(None), User.subscribed.is_(True)))
         .order_by(MemorialReminder.openid).limit(limit))
    return list((await session.execute(q)).scalars())


# --------------------------------------------------------------------------------------------------
# Statistics


@dataclass
class DayStats:
    day: date
    participants: int
    actions: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.actions.values())


async def day_stats(session: AsyncSession, start: date, end: date) -> tuple[list[DayStats], int]:
    """Per local day in ``start..end``: distinct participants and counted actions by kind; plus the
    distinct participants over the whole range. Days without activity are included with zeros."""
    t = MemorialTribute
    where = (t.day >= start, t.day <= end)
    people = dict((await session.execute(select(t.day, func.count(func.distinct(t.openid)))
                                         .where(*where).group_by(t.day))).all())
    acts: dict[date, dict[str, int]] = {}
    for d, a, n in await session.execute(select(t.day, t.action, func.count()).where(*where)
                                         .group_by(t.day, t.action)):
        acts.setdefault(_as_date(d), {})[a] = int(n)
    people = {_as_date(k): int(v) for k, v in people.items()}
    out = []
    d = start
    while d <= end:
        out.append(DayStats(d, people.get(d, 0), {a: acts.get(d, {}).get(a, 0) for a in ACTIONS}))
        d = date.fromordinal(d.toordinal() + 1)
    overall = (await session.execute(select(func.count(func.distinct(t.openid))).where(*where))).scalar_one()
    return out, int(overall)


async def activity_range(session: AsyncSession) -> tuple[date | None, date | None]:
    """First and last local day with any counted tribute."""
    lo, hi = (await session.execute(select(func.min(MemorialTribute.day), func.max(MemorialTribute.day)))).one()
    return (_as_date(lo) if lo else None, _as_date(hi) if hi else None)


def _as_date(v: Any) -> date:
    return v if isinstance(v, date) else date.fromisoformat(str(v))

