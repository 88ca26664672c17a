"""就业岗位推送: job postings, subscriptions, the per-user sent log and digests — tables and repository
functions.

Rules the tables enforce:

* A posting is identified by its normalised company + title + location (:func:`posting_key`,
  ``uq_jobs_postings_natural_key``): re-importing a fair's file updates the rows instead of adding new
  ones.
* A posting is never pushed twice to the same person: :class:`JobSent` has the primary key
  ``(openid, posting_id)`` and every push (instant or digest) writes its rows with
  ``INSERT … ON CONFLICT DO NOTHING`` in the same transaction as the outbox row.
* A posting past ``expires_at`` (the local day after its 截止日期) is never listed nor pushed: every
  query here filters on :func:`active_clause`.

Digest state lives on the subscription: ``cursor`` (postings with ``id <= cursor`` were already
considered by a digest) and ``next_digest_at`` (when the next digest is due; NULL = nothing waiting).
Imports and the digest job take :func:`lock_jobs` first, so on PostgreSQL they run one at a time
(SQLite has one writer anyway) and a digest never advances its cursor past an uncommitted import.

Times are naive UTC; ``day`` columns hold the local (``bot.timezone``) date the caller computed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.models import OutboxMessage, User
from storage.privacy import DELETE, DUTY, Declaration, Retention, declare
from storage.sql import insert_ignore, is_postgres

#: Posting types (类型), as written in the CSV and shown to users.
JOB_TYPES = ("全职", "兼职", "实习")
#: Subscription states.
ACTIVE, PAUSED, CANCELLED = "active", "paused", "cancelled"
#: Delivery modes: one push per posting (capped per day) or one digest a day.
INSTANT, DAILY = "instant", "daily"
#: ``ref_type`` of instant job pushes in the outbox (so expiring a posting can cancel them).
REF_POSTING = "job_posting"
#: pg_advisory_xact_lock key serialising imports and digests.
JOBS_LOCK_KEY = 0x70B5


class JobPosting(Base):
    """One job post (岗位) from a fair or an employer.

    ``salary_min``/``salary_max`` are monthly yuan; NULL means 面议 (negotiable). ``search_text`` is the
    normalised title, company, location and requirements, for 找工作 word searches.
    """

    __tablename__ = "jobs_postings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    natural_key: Mapped[str] = mapped_column(String(255), unique=True)
    company: Mapped[str] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(128))
    location: Mapped[str] = mapped_column(String(128))
    salary_min: Mapped[int | None] = mapped_column(Integer)
    salary_max: Mapped[int | None] = mapped_column(Integer)
    job_type: Mapped[str] = mapped_column(String(8))
    requirements: Mapped[str] = mapped_column(Text, default="")
    contact: Mapped[str] = mapped_column(String(128))
    # The last local day applications are taken (NULL: 长期有效).
    deadline: Mapped[date | None] = mapped_column(Date)
    # Start of the local day after the deadline, in UTC: from then on the posting is hidden.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    veteran_priority: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(128), default="")
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)

    @property
    def salary_top(self) -> int | None:
        """The best monthly pay on offer (None: 面议)."""
        return self.salary_max if self.salary_max is not None else self.salary_min


class JobSubscription(Base):
    """What a user wants to hear about, and when. One per user.

    ``places``: place names (county or township, normalised, suffix 县/镇… stripped); empty = anywhere.
    ``keywords`` and ``categories`` (names from ``jobs.categories``): empty both = any job.
    ``min_salary`` 0 = any; ``job_type`` "" = any. ``digest_minute`` and the quiet hours are minutes
    after local midnight; ``quiet_start == quiet_end`` means no quiet hours.
    """

    __tablename__ = "jobs_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    places: Mapped[list[str]] = mapped_column(JSONText, default=list)
    keywords: Mapped[list[str]] = mapped_column(JSONText, default=list)
    categories: Mapped[list[str]] = mapped_column(JSONText, default=list)
    min_salary: Mapped[int] = mapped_column(Integer, default=0)
    job_type: Mapped[str] = mapped_column(String(8), default="")
    mode: Mapped[str] = mapped_column(String(8), default=INSTANT)
    digest_minute: Mapped[int] = mapped_column(Integer, default=8 * 60)
    quiet_start: Mapped[int] = mapped_column(Integer, default=22 * 60)
    quiet_end: Mapped[int] = mapped_column(Integer, default=7 * 60)
    # Postings with id <= cursor have been considered by a digest (or predate the subscription).
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    next_digest_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class JobSent(Base):
    """A posting pushed to a user (instant alert or inside a digest): never again to the same person."""

    __tablename__ = "jobs_sent"
    __table_args__ = (Index("ix_jobs_sent_day", "day", "kind"),)

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    posting_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    # Local date the push is due (instant alerts count against this day's cap).
    day: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class JobDigest(Base):
    """One daily digest sent to a user. It covered the postings with ``after_id < id <= upto_id`` that
    matched ``criteria`` (the subscription as it was) and had not been pushed to the user before:
    ``total`` of them, the best ``shown_ids`` in the push. The "see all" page lists them again from
    these fields, so nothing per posting is stored."""

    __tablename__ = "jobs_digests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    day: Mapped[date] = mapped_column(Date)
    after_id: Mapped[int] = mapped_column(Integer)
    upto_id: Mapped[int] = mapped_column(Integer)
    criteria: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    shown_ids: Mapped[list[int]] = mapped_column(JSONText, default=list)
    total: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)


declare(
    Declaration("jobs_postings", label="招聘岗位", no_personal_data="postings of employers; the contact is the "
                "employer's published contact"),
    Declaration(
        "jobs_subscriptions", label="岗位订阅", purpose="按您的条件推送新岗位", basis=DUTY, subject="openid",
        on_erase=DELETE, personal=("places", "keywords", "categories", "job_type", "mode"), plain=("status",),
        retention=(Retention("cancelled_subscription_days", "updated_at", where=lambda t: t.c.status == CANCELLED,
                             note="退订 {days} 天后删除；订阅中的保留到您退订或注销"),)),
    Declaration(
        "jobs_sent", label="推送过的岗位", purpose="同一个岗位不重复推送给您、每天提醒不超过上限", basis=DUTY,
        subject="openid", on_erase=DELETE, plain=("kind",),
        retention=(Retention("jobs_sent_days", "created_at", note="{days} 天后删除"),)),
    Declaration(
        "jobs_digests", label="岗位汇总", purpose="汇总推送里“查看全部”的页面", basis=DUTY, subject="openid",
        on_erase=DELETE, personal=("criteria", "shown_ids"),
        retention=(Retention("jobs_digest_days", "created_at", note="{days} 天后删除"),)),
)


# ---------------------------------------------------------------------------------------------------
# Keys and filters


def norm_key_part(value: str) -> str:
    """Case-, width- and punctuation-insensitive form of a key part (``ＡＢＣ 物业（大竹）`` → ``abc物业大竹``)."""
    t = unicodedata.normalize("NFKC", value).casefold()
    return "".join(ch for ch in t if not unicodedata.category(ch).startswith(("P", "S", "Z", "C")))


def posting_key(company: str, title: str, location: str) -> str:
    """The natural key of a posting: the same company, title and location are the same posting."""
    return "|".join(norm_key_part(x) for x in (company, title, location))[:255]


def active_clause(now: datetime) -> Any:
    """SQL condition: the posting has not expired at ``now``."""
    return or_(JobPosting.expires_at.is_(None), JobPosting.expires_at > now)


async def lock_jobs(session: AsyncSession) -> None:
    """Serialise imports and digests (PostgreSQL: a transaction-level advisory lock; SQLite's
    ``BEGIN IMMEDIATE`` already holds the single write lock)."""
    if is_postgres(session):
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": JOBS_LOCK_KEY})


# ---------------------------------------------------------------------------------------------------
# Postings


async def existing_keys(session: AsyncSession, keys: Sequence[str]) -> dict[str, JobPosting]:
    """Postings already stored under any of ``keys`` (chunked to stay under parameter limits)."""
    found: dict[str, JobPosting] = {}
    for i in range(0, len(keys), 500):
        rows = await session.execute(select(JobPosting).where(JobPosting.natural_key.in_(keys[i:i + 500])))
        for p in rows.scalars():
            found[p.natural_key] = p
    return found


POSTING_FIELDS = ("company", "title", "location", "salary_min", "salary_max", "job_type", "requirements",
                  "contact", "deadline", "expires_at", "veteran_priority", "source", "search_text")


async def insert_postings(session: AsyncSession, rows: list[dict[str, Any]], now: datetime) -> list[JobPosting]:
    """Insert new postings (``rows`` hold :data:`POSTING_FIELDS` plus ``natural_key``); returns them with
    their ids, in input order, as detached :class:`JobPosting` objects. Callers hold :func:`lock_jobs` and
    checked :func:`existing_keys` first.

    A Core executemany and one id lookup per 500 keys, rather than ORM unit-of-work inserts: 5,000
    postings take a fraction of a second instead of seconds."""
    if not rows:
        return []
    values = [{**r, "created_at": now, "updated_at": now} for r in rows]
    await session.execute(insert(JobPosting.__table__), values)
    keys = [v["natural_key"] for v in values]
    ids: dict[str, int] = {}
    for i in range(0, len(keys), 500):
        found = await session.execute(
            select(JobPosting.natural_key, JobPosting.id).where(JobPosting.natural_key.in_(keys[i:i + 500]))
        )
        ids.update({k: int(pid) for k, pid in found})
    return [JobPosting(id=ids[v["natural_key"]], **v) for v in values]


async def max_posting_id(session: AsyncSession) -> int:
    return int((await session.execute(select(func.coalesce(func.max(JobPosting.id), 0)))).scalar_one())


#: Columns read when postings are only displayed or matched (not ``search_text``).
VIEW_COLUMNS = ("id", "company", "title", "location", "salary_min", "salary_max", "job_type", "requirements",
                "contact", "deadline", "expires_at", "veteran_priority", "source")


async def active_postings_after(session: AsyncSession, after_id: int, upto_id: int, now: datetime) -> list[Any]:
    """Unexpired postings with ``after_id < id <= upto_id``, oldest first, as read-only rows with the
    :data:`VIEW_COLUMNS` (no ORM objects: the digest job reads thousands per batch)."""
    t = JobPosting.__table__
    rows = await session.execute(
        select(*[t.c[c] for c in VIEW_COLUMNS])
        .where(t.c.id > after_id, t.c.id <= upto_id, or_(t.c.expires_at.is_(None), t.c.expires_at > now))
        .order_by(t.c.id)
    )
    return list(rows)


def _word_clause(alternatives: Sequence[str]) -> Any:
    return or_(*[JobPosting.search_text.contains(w, autoescape=True) for w in alternatives])


async def search_postings(session: AsyncSession, now: datetime, word_groups: Sequence[Sequence[str]],
                          offset: int = 0, limit: int = 5) -> tuple[int, list[JobPosting]]:
    """Active postings whose search text contains, for every group, at least one of its words
    (a group is a typed word or a category's words). Returns (total, one page): 退役军人优先 first,
    then newest."""
    where = [active_clause(now)] + [_word_clause(g) for g in word_groups if g]
    total = (await session.execute(select(func.count()).select_from(JobPosting).where(*where))).scalar_one()
    rows = await session.execute(
        select(JobPosting).where(*where)
        .order_by(JobPosting.veteran_priority.desc(), JobPosting.id.desc()).offset(offset).limit(limit)
    )
    return int(total), list(rows.scalars())


async def get_postings(session: AsyncSession, ids: Iterable[int]) -> dict[int, JobPosting]:
    ids = list(ids)
    out: dict[int, JobPosting] = {}
    for i in range(0, len(ids), 500):
        for p in (await session.execute(select(JobPosting).where(JobPosting.id.in_(ids[i:i + 500])))).scalars():
            out[p.id] = p
    return out


async def list_postings(session: AsyncSession, now: datetime, *, include_expired: bool = False,
                        source: str | None = None, word: str | None = None, limit: int = 50) -> list[JobPosting]:
    """Postings for staff listings (newest first)."""
    q = select(JobPosting)
    if not include_expired:
        q = q.where(active_clause(now))
    if source:
        q = q.where(JobPosting.source == source)
    if word:
        q = q.where(JobPosting.search_text.contains(norm_key_part(word), autoescape=True))
    rows = await session.execute(q.order_by(JobPosting.id.desc()).limit(limit))
    return list(rows.scalars())


async def expire_postings(session: AsyncSession, now: datetime, *, ids: Sequence[int] = (),
                          source: str | None = None) -> int:
    """End postings now (by id and/or source); returns how many were still active."""
    conds = []
    if ids:
        conds.append(JobPosting.id.in_(list(ids)))
    if source:
        conds.append(JobPosting.source == source)
    if not conds:
        return 0
    result = await session.execute(
        update(JobPosting).where(or_(*conds), active_clause(now)).values(expires_at=now, updated_at=now)
    )
    return max(result.rowcount or 0, 0)


async def cancel_expired_pushes(session: AsyncSession, now: datetime) -> int:
    """Cancel queued instant alerts whose posting has expired (nothing goes out for expired posts)."""
    expired = select(JobPosting.id).where(JobPosting.expires_at.is_not(None), JobPosting.expires_at <= now)
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.status == "pending", OutboxMessage.purpose == "job_alert",
               OutboxMessage.ref_type == REF_POSTING, OutboxMessage.ref_id.in_(expired))
        .values(status="cancelled", last_error="job posting expired")
    )
    return max(result.rowcount or 0, 0)


async def posting_counts(session: AsyncSession, now: datetime) -> dict[str, int]:
    total = (await session.execute(select(func.count()).select_from(JobPosting))).scalar_one()
    active = (await session.execute(select(func.count()).select_from(JobPosting).where(active_clause(now)))).scalar_one()
    return {"total": int(total), "active": int(active)}


# ---------------------------------------------------------------------------------------------------
# Subscriptions


async def get_subscription(session: AsyncSession, openid: str) -> JobSubscription | None:
    return (await session.execute(select(JobSubscription).where(JobSubscription.openid == openid))).scalar_one_or_none()


#: Subscription columns matching and scheduling read.
MATCH_COLUMNS = ("id", "openid", "places", "keywords", "categories", "min_salary", "job_type", "mode", "digest_minute",
                 "quiet_start", "quiet_end", "cursor")


async def deliverable_rows(session: AsyncSession, *, due_before: datetime | None = None,
                           limit: int | None = None) -> list[Any]:
    """Active subscriptions of users who still follow the account (unfollowed users get nothing); with
    ``due_before`` only those whose digest is due by then, earliest first. Read-only rows (attribute
    access, no ORM identity map): the import and the digest job read thousands of subscriptions and
    update them with plain UPDATEs."""
    t = JobSubscription.__table__
    q = (select(*[t.c[c] for c in MATCH_COLUMNS]).join(User.__table__, User.__table__.c.openid == t.c.openid)
         .where(t.c.status == ACTIVE, User.__table__.c.subscribed.is_(True)))
    if due_before is not None:
        q = q.where(t.c.next_digest_at.is_not(None), t.c.next_digest_at <= due_before)
        q = q.order_by(t.c.next_digest_at, t.c.id)
    else:
        q = q.order_by(t.c.id)
    if limit is not None:
        q = q.limit(limit)
    return list(await session.execute(q))


async def set_next_digest(session: AsyncSession, due: Sequence[tuple[int, datetime | None]]) -> None:
    """Set ``next_digest_at`` of subscriptions by id (unconditionally)."""
    t = JobSubscription.__table__
    stmt = update(t).where(t.c.id == bindparam("sid")).values(next_digest_at=bindparam("at"))
    rows = [{"sid": sid, "at": at} for sid, at in due]
    for i in range(0, len(rows), 1000):
        await session.execute(stmt, rows[i:i + 1000])


async def digests_done(session: AsyncSession, ids: Sequence[int], cursor: int) -> None:
    """Subscriptions whose digest ran: considered everything up to ``cursor``, nothing due."""
    t = JobSubscription.__table__
    for i in range(0, len(ids), 500):
        await session.execute(update(t).where(t.c.id.in_(list(ids[i:i + 500])))
                              .values(cursor=cursor, next_digest_at=None))


async def insert_digests(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert digest rows; returns their ids in input order."""
    if not rows:
        return []
    t = JobDigest.__table__
    result = await session.execute(insert(t).returning(t.c.id, sort_by_parameter_order=True), rows)
    return [int(r[0]) for r in result]


async def schedule_digests(session: AsyncSession, due: Sequence[tuple[int, datetime]]) -> None:
    """Set ``next_digest_at`` to the given time unless an earlier digest is already due.

    Subscriptions share a handful of digest times, so this is one UPDATE … WHERE id IN (…) per time
    (and 500 ids), not one statement per subscription."""
    t = JobSubscription.__table__
    by_time: dict[datetime, list[int]] = {}
    for sid, at in due:
        by_time.setdefault(at, []).append(sid)
    for at, ids in by_time.items():
        for i in range(0, len(ids), 500):
            await session.execute(
                update(t).where(t.c.id.in_(ids[i:i + 500]), or_(t.c.next_digest_at.is_(None), t.c.next_digest_at > at))
                .values(next_digest_at=at)
            )


async def subscription_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(JobSubscription.status, func.count()).group_by(JobSubscription.status))
    return {str(s): int(n) for s, n in rows}


# ---------------------------------------------------------------------------------------------------
# Sent log


async def instant_counts(session: AsyncSession, days: Iterable[date]) -> dict[tuple[str, date], int]:
    """Instant alerts already queued per (openid, local day), for the per-day cap."""
    days = sorted(set(days))
    if not days:
        return {}
    rows = await session.execute(
        select(JobSent.openid, JobSent.day, func.count())
        .where(JobSent.kind == INSTANT, JobSent.day.in_(days)).group_by(JobSent.openid, JobSent.day)
    )
    return {(o, d): int(n) for o, d, n in rows}


async def sent_pairs(session: AsyncSession, openids: Sequence[str], after_id: int) -> set[tuple[str, int]]:
    """(openid, posting_id) already pushed, for postings with id > after_id."""
    out: set[tuple[str, int]] = set()
    for i in range(0, len(openids), 500):
        rows = await session.execute(
            select(JobSent.openid, JobSent.posting_id)
            .where(JobSent.openid.in_(openids[i:i + 500]), JobSent.posting_id > after_id)
        )
        out.update((o, int(p)) for o, p in rows)
    return out


async def sent_to(session: AsyncSession, openid: str, posting_ids: Sequence[int]) -> set[int]:
    rows = await session.execute(
        select(JobSent.posting_id).where(JobSent.openid == openid, JobSent.posting_id.in_(list(posting_ids)))
    )
    return {int(p) for p in rows.scalars()}


async def record_sent(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Insert sent-log rows (openid, posting_id, kind, day, created_at); existing pairs are kept."""
    written = 0
    for i in range(0, len(rows), 500):
        written += await insert_ignore(session, JobSent.__table__, rows[i:i + 500],
                                       index_elements=["openid", "posting_id"])
    return written


async def get_digest(session: AsyncSession, digest_id: int) -> JobDigest | None:
    return await session.get(JobDigest, digest_id)


async def sent_before(session: AsyncSession, openid: str, after_id: int, upto_id: int, before: datetime) -> set[int]:
    """Postings in (after_id, upto_id] pushed to ``openid`` before ``before``."""
    rows = await session.execute(
        select(JobSent.posting_id).where(JobSent.openid == openid, JobSent.posting_id > after_id,
                                         JobSent.posting_id <= upto_id, JobSent.created_at < before)
    )
    return {int(p) for p in rows.scalars()}

