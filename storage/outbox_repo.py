"""Outbox rows from the sender's side: claiming, results, the kefu quota, status and retry.

Life of a row: ``pending`` → claimed (``sending``, ``claimed_by``/``claimed_at`` set, committed at
once) → delivered outside any transaction → result written (``sent`` / ``failed`` / ``cancelled``,
or back to ``pending`` with a later ``due_at`` for a retry). Such rows may already have reached the
user when their sender dies, so delivery is at-least-once: only rows in flight at the moment of a
crash can go out twice.

Claims are bound to the life of their sender (:class:`SenderLease`), so a dead sender's rows come
back within seconds rather than after ``claim_timeout_s``:

* PostgreSQL: every sender holds a session advisory lock keyed on its name for as long as it runs.
  The lock goes when its connection goes (a killed process's socket is closed by the kernel), and
  :func:`reclaim_orphans` hands back every ``sending`` row whose sender's lock is gone.
* SQLite: one sender per database (one writer anyway). A sender that starts holding the database's
  sender lock file (``<db>.sender-lock``, an ``flock`` the kernel drops with the process) is alone,
  so every row still ``sending`` under another name was left by a sender that stopped; it takes them
  back at once. A second sender beside it (not supported) only gets the timeout below.

:func:`reclaim_stale` (``claim_timeout_s``) stays as the last resort for what neither covers.

On PostgreSQL several senders claim at once: ``FOR UPDATE SKIP LOCKED`` gives each a disjoint set
without waiting. On SQLite the claim transaction starts with ``BEGIN IMMEDIATE`` (one writer).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, bindparam, case, func, literal, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.base import JSONText
from storage.db import Database
from storage.models import OutboxMessage, User

log = logging.getLogger("vetbot.outbox")

T = OutboxMessage.__table__
U = User.__table__

#: Every status a row can have.
STATUSES = ("pending", "sending", "sent", "failed", "cancelled")
STALE_CLAIM_ERROR = "sender stopped while sending (claim timed out); the push may have gone out already"
ORPHAN_ERROR = "sender stopped while sending; the push may have gone out already"
#: First key of the senders' PostgreSQL advisory locks (the second is ``hashtext(worker)``); another
#: constant than the scheduler's lock (bot/scheduler.py), which uses the one-key form.
SENDER_LOCK_CLASS = 0x7E7B08


@dataclass
class ClaimedRow:
    """A row this sender now owns (``status='sending'``)."""

    id: int
    idempotency_key: str
    openid: str
    purpose: str
    priority: int
    payload: dict[str, Any]
    skipped_channels: list[str]
    attempts: int
    due_at: datetime
    created_at: datetime


@dataclass
class UserState:
    """What the channel policy needs to know about a recipient, read when the row is claimed."""

    openid: str
    known: bool = False
    subscribed: bool = True
    last_message_at: datetime | None = None
    last_event_at: datetime | None = None
    kefu_sent: int = 0
    phone: str | None = None


@dataclass
class Outcome:
    """The result of one delivery try, written back by :func:`record_outcomes`."""

    id: int
    status: str  # sent / failed / cancelled / pending (retry)
    attempts: int
    due_at: datetime
    channel: str | None = None
    skipped_channels: list[str] | None = None
    sent_at: datetime | None = None
    last_error: str | None = None
    wechat_msgid: int | None = None


_CLAIM_COLS = (T.c.id, T.c.idempotency_key, T.c.openid, T.c.purpose, T.c.priority, T.c.payload,
               T.c.skipped_channels, T.c.attempts, T.c.due_at, T.c.created_at)


async def claim_due(db: Database, now: datetime, limit: int, worker: str
                    ) -> tuple[list[ClaimedRow], dict[str, UserState]]:
    """Claim up to ``limit`` due rows (priority first, then oldest due) and read their recipients.

    The claim is committed before this returns, so delivery never runs inside a transaction.
    """
    rows, users, _ = await record_and_claim(db, worker, [], now, limit)
    return rows, users


async def record_and_claim(db: Database, worker: str, outcomes: Sequence[Outcome], now: datetime, limit: int
                           ) -> tuple[list[ClaimedRow], dict[str, UserState], int]:
    """Write delivery results and claim up to ``limit`` more due rows, in ONE transaction.

    A fan-out alternates the two all the time; on SQLite every commit is an fsync (with
    ``synchronous=FULL``) that holds the event loop, so sharing the commit halves that cost.
    Returns ``(claimed rows, their recipients, results written)``.
    """
    if limit <= 0:
        if not outcomes:
            return [], {}, 0
        # Results only (the common round of a fan-out): a plain connection, not an ORM session, which
        # costs more CPU than the statement on a busy machine.
        async with db.engine.begin() as conn:
            return [], {}, await _record(conn, worker, outcomes)
    async with db.session() as s:
        written = await _record(s, worker, outcomes) if outcomes else 0
        rows, users = await _claim(s, db.is_sqlite, now, limit, worker)
    return rows, users, written


async def _claim(s: Any, is_sqlite: bool, now: datetime, limit: int, worker: str
                 ) -> tuple[list[ClaimedRow], dict[str, UserState]]:
    due = (select(T.c.id).where(T.c.status == "pending", T.c.due_at <= now)
           .order_by(T.c.priority, T.c.due_at, T.c.id).limit(limit))
    claim = update(T).values(status="sending", claimed_by=worker, claimed_at=now).returning(*_CLAIM_COLS)
    if is_sqlite:
        stmt = claim.where(T.c.id.in_(due.scalar_subquery()), T.c.status == "pending")
    else:
        # A MATERIALIZED CTE, not `id IN (subquery)`: PostgreSQL may plan the IN as a nested-loop
        # semi join that re-runs the LIMIT … SKIP LOCKED subquery per row and claims every due row
        # (seen here: LIMIT 50 claimed 600). The CTE runs once and locks exactly `limit` rows.
        picked = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        stmt = claim.where(T.c.id == picked.c.id)
    result = await s.execute(stmt, execution_options={"synchronize_session": False})
    rows = [ClaimedRow(id=r.id, idempotency_key=r.idempotency_key, openid=r.openid, purpose=r.purpose,
                       priority=r.priority, payload=r.payload or {}, skipped_channels=list(r.skipped_channels or []),
                       attempts=r.attempts or 0, due_at=r.due_at, created_at=r.created_at)
            for r in result]
    users: dict[str, UserState] = {}
    openids = sorted({r.openid for r in rows})
    for i in range(0, len(openids), 500):
        q = select(U.c.openid, U.c.subscribed, U.c.last_message_at, U.c.last_event_at, U.c.kefu_sent,
                   U.c.phone).where(U.c.openid.in_(openids[i:i + 500]))
        for u in await s.execute(q):
            users[u.openid] = UserState(u.openid, True, bool(u.subscribed) if u.subscribed is not None else True,
                                        u.last_message_at, u.last_event_at, u.kefu_sent or 0, u.phone)
    rows.sort(key=lambda r: (r.priority, r.due_at, r.id))
    return rows, users


async def reclaim_stale(db: Database, now: datetime, claim_timeout_s: float, max_attempts: int) -> int:
    """Hand rows stuck in ``sending`` for ``claim_timeout_s`` back to ``pending`` (the last resort
    behind :func:`reclaim_orphans`; live senders refresh their claims with :func:`touch_claims`).

    The stuck try counts as an attempt. Returns how many rows were reclaimed.
    """
    cutoff = now - timedelta(seconds=claim_timeout_s)
    stmt = (update(T).where(T.c.status == "sending", T.c.claimed_at < cutoff)
            .values(**_hand_back(max_attempts, STALE_CLAIM_ERROR)))
    async with db.session() as s:
        result = await s.execute(stmt, execution_options={"synchronize_session": False})
    return max(result.rowcount or 0, 0)


class SenderLease:
    """Binds a sender's claims to its life (see the module docstring); one per sender.

    ``worker`` may change on :meth:`acquire` (a name already held by a live sender gets a suffix);
    ``sole`` is True on SQLite when this sender holds the database's sender lock file.
    """

    def __init__(self, db: Database, worker: str) -> None:
        self.db, self.worker = db, worker
        self.sole = False
        self.held = False
        self._conn: AsyncConnection | None = None
        self._fd: int | None = None

    async def acquire(self) -> str:
        """Take the lease (idempotent); returns the worker name to claim under."""
        if self.held:
            return self.worker
        if self.db.is_sqlite:
            self.sole = self._flock()
            self.held = True
            return self.worker
        for _ in range(5):
            conn = await self.db.engine.connect()
            try:
                got = (await conn.execute(text("SELECT pg_try_advisory_lock(:c, hashtext(:w))"),
                                          {"c": SENDER_LOCK_CLASS, "w": self.worker})).scalar()
                await conn.commit()
            except BaseException:
                await conn.close()
                raise
            if got:
                self._conn, self.held = conn, True
                return self.worker
            await conn.close()
            # Another live sender has this name (two `outbox run --worker x`) or, rarely, its hash.
            log.warning("outbox sender name %s is in use by a live sender; adding a suffix", self.worker)
            self.worker = f"{self.worker[:55]}:{uuid.uuid4().hex[:6]}"
        raise RuntimeError("could not take an outbox sender lock")

    async def alive(self) -> bool:
        """Whether the lease still holds (PostgreSQL: its connection answers)."""
        if not self.held:
            return False
        if self._conn is None:
            return True
        try:
            await self._conn.execute(text("SELECT 1"))
            await self._conn.commit()
            return True
        except Exception:
            log.warning("outbox sender %s lost its lock connection; its rows go to other senders", self.worker)
            await self.release()
            return False

    async def release(self) -> None:
        """Give the lease up (closing the connection drops the advisory lock)."""
        conn, self._conn = self._conn, None
        self.held = False
        if conn is not None:
            try:
                # Invalidate, not close: close() would return the connection to the pool with the
                # session's advisory lock still held.
                await conn.invalidate()
            except Exception:
                pass
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        self.sole = False

    def _flock(self) -> bool:
        import fcntl

        path = make_url(self.db.url).database
        if not path or path == ":memory:":
            return True  # an in-memory database lives and dies with this one process
        fd = os.open(str(Path(path).with_name(Path(path).name + ".sender-lock")), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.warning("another outbox sender runs on this SQLite database (run one per database); rows a "
                        "stopped sender left in 'sending' come back only after outbox.claim_timeout_s")
            return False
        self._fd = fd
        return True


def _hand_back(max_attempts: int, error: str) -> dict[str, Any]:
    # The interrupted try counts as an attempt, so a row that kills its sender every time ends up
    # failed instead of looping for ever.
    return {"status": case((T.c.attempts + 1 >= max_attempts, literal("failed")), else_=literal("pending")),
            "attempts": T.c.attempts + 1, "claimed_by": None, "claimed_at": None, "last_error": error}


async def reclaim_orphans(db: Database, lease: SenderLease, max_attempts: int) -> int:
    """Hand back, at once, rows left ``sending`` by senders that are gone; returns how many.

    PostgreSQL: rows whose sender holds no advisory lock in this database. SQLite: when ``lease``
    is the database's only sender, every row ``sending`` under another name. Rows of this very
    sender are never touched (it owns them; see :func:`release_own` for a pass that failed)."""
    if db.is_sqlite:
        if not lease.sole:
            return 0
        cond = [T.c.status == "sending", or_(T.c.claimed_by.is_(None), T.c.claimed_by != lease.worker)]
    else:
        gone = text(
            "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = :lock_class AND l.objid = hashtext(outbox.claimed_by)::oid)"
        ).bindparams(lock_class=SENDER_LOCK_CLASS)
        cond = [T.c.status == "sending", or_(T.c.claimed_by.is_(None), gone)]
    async with db.session() as s:
        result = await s.execute(update(T).where(*cond).values(**_hand_back(max_attempts, ORPHAN_ERROR)),
                                 execution_options={"synchronize_session": False})
    return max(result.rowcount or 0, 0)


async def release_own(db: Database, worker: str, max_attempts: int) -> int:
    """Hand back rows still ``sending`` under ``worker`` between two passes of that sender.

    A pass holds every row it claimed until their results are written; rows still claimed when a new
    pass starts are those of a pass that ended on a database error (results not written). Left alone
    they would stay claimed by a live sender whose heartbeat keeps them fresh."""
    async with db.session() as s:
        result = await s.execute(update(T).where(T.c.status == "sending", T.c.claimed_by == worker)
                                 .values(**_hand_back(max_attempts, ORPHAN_ERROR)),
                                 execution_options={"synchronize_session": False})
    return max(result.rowcount or 0, 0)


async def touch_claims(db: Database, worker: str, now: datetime) -> int:
    """Heartbeat: refresh ``claimed_at`` of the rows ``worker`` still holds.

    A sender calls this well within ``claim_timeout_s`` while rows wait in its queue or in flight,
    so the timeout only ever hands back rows of a sender that died, never of one that is merely
    slow (a long batch, a low rate limit, a busy machine) — which would send them twice.
    """
    async with db.session() as s:
        result = await s.execute(update(T).where(T.c.claimed_by == worker, T.c.status == "sending")
                                 .values(claimed_at=now), execution_options={"synchronize_session": False})
    return max(result.rowcount or 0, 0)


_RESULT = (
    update(T)
    .where(T.c.id == bindparam("b_id"), T.c.claimed_by == bindparam("b_worker"), T.c.status == "sending")
    .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"), due_at=bindparam("b_due_at"),
            channel=bindparam("b_channel"), skipped_channels=bindparam("b_skipped", type_=JSONText()),
            sent_at=bindparam("b_sent_at"), last_error=bindparam("b_last_error"),
            wechat_msgid=bindparam("b_msgid"), claimed_by=None, claimed_at=None)
)


async def record_outcomes(db: Database, worker: str, outcomes: Sequence[Outcome]) -> int:
    """Write delivery results in one transaction (one statement, many parameter sets).

    Only rows still claimed by ``worker`` are touched: a row reclaimed by another sender after a
    stall belongs to that sender now. Returns how many rows were updated.
    """
    if not outcomes:
        return 0
    async with db.session() as s:
        return await _record(s, worker, outcomes)


# PostgreSQL: all results of a round in ONE statement (arrays unnested into rows). A sender now commits
# a round of results before its workers send again (bot/outbox.py), so rounds are many and small, and
# asyncpg's executemany, one statement per row, cost a round trip each on a busy machine.
_RESULT_PG = text(
    "UPDATE outbox AS o SET status = v.status, attempts = v.attempts, due_at = v.due_at, channel = v.channel,"
    " skipped_channels = v.skipped, sent_at = v.sent_at, last_error = v.last_error, wechat_msgid = v.msgid,"
    " claimed_by = NULL, claimed_at = NULL"
    " FROM unnest(CAST(:ids AS integer[]), CAST(:statuses AS varchar[]), CAST(:attempts AS integer[]),"
    " CAST(:due AS timestamp[]), CAST(:channels AS varchar[]), CAST(:skipped AS text[]),"
    " CAST(:sent AS timestamp[]), CAST(:errors AS text[]), CAST(:msgids AS bigint[]))"
    " AS v(id, status, attempts, due_at, channel, skipped, sent_at, last_error, msgid)"
    " WHERE o.id = v.id AND o.claimed_by = :worker AND o.status = 'sending'"
)


async def _record(s: Any, worker: str, outcomes: Sequence[Outcome]) -> int:
    """Write results through ``s`` (a session or a connection)."""
    dialect = s.dialect if isinstance(s, AsyncConnection) else s.bind.dialect
    if dialect.name == "postgresql" and len(outcomes) > 1:
        skipped = JSONText()
        result = await s.execute(_RESULT_PG, {
            "worker": worker, "ids": [o.id for o in outcomes], "statuses": [o.status for o in outcomes],
            "attempts": [o.attempts for o in outcomes], "due": [o.due_at for o in outcomes],
            "channels": [o.channel for o in outcomes],
            "skipped": [skipped.process_bind_param(o.skipped_channels or [], None) for o in outcomes],
            "sent": [o.sent_at for o in outcomes], "errors": [o.last_error for o in outcomes],
            "msgids": [o.wechat_msgid for o in outcomes]})
        return max(result.rowcount or 0, 0)
    params = [{"b_id": o.id, "b_worker": worker, "b_status": o.status, "b_attempts": o.attempts,
               "b_due_at": o.due_at, "b_channel": o.channel, "b_skipped": o.skipped_channels or [],
               "b_sent_at": o.sent_at, "b_last_error": o.last_error, "b_msgid": o.wechat_msgid}
              for o in outcomes]
    result = await s.execute(_RESULT, params, execution_options={"synchronize_session": False})
    return max(result.rowcount or 0, 0)


class ResultWriter:
    """PostgreSQL: a few autocommit connections a sender keeps for writing groups of results.

    Senders commit a group of results before their workers send again (the bound on duplicates), so
    this is on the path of every push. A group is one ``UPDATE … FROM unnest(…)`` statement, on a kept
    autocommit connection: one round trip, no checkout ping, no BEGIN/COMMIT round trips. And these
    connections run with ``synchronous_commit = off``: the commit returns once the server has it, without
    waiting for the WAL flush (PostgreSQL's own "may lose the last fraction of a second on a *server*
    crash, never corrupts" mode). A crash of vetbot loses nothing written here; only a crash of the
    database server itself in that fraction of a second can undo the latest results, and then those rows
    are simply sent again (at least once, never lost). Claims and queued pushes keep full durability."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._free: list[AsyncConnection] = []

    async def write(self, worker: str, outcomes: Sequence[Outcome]) -> int:
        """Write ``outcomes`` (rows still claimed by ``worker`` only); returns how many rows changed."""
        conn = self._free.pop() if self._free else None
        if conn is None:
            conn = await self.db.engine.connect()
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SET synchronous_commit = off"))
        try:
            n = await _record(conn, worker, outcomes)
        except BaseException:
            try:
                await conn.invalidate()  # a broken connection is not reused
            except Exception:
                pass
            raise
        self._free.append(conn)
        return n

    async def close(self) -> None:
        """Return the kept connections."""
        conns, self._free = self._free, []
        for c in conns:
            try:
                await c.close()
            except Exception:
                pass


async def reserve_kefu(db: Database, openid: str, now: datetime, *, window_h: float, quota_after_message: int,
                       event_window_s: float, quota_after_event: int) -> bool:
    """Take one customer-service slot of the user's window, atomically; False when none is left.

    A single ``UPDATE … SET kefu_sent = kefu_sent + 1 WHERE <window open and quota left>`` keeps the
    count exact when several senders (or a burst of pushes to one user) race. The slot is taken
    before sending; a send that then fails does not give it back, so the count errs towards using a
    template message, never towards a 45047 refusal.
    """
    sent = func.coalesce(U.c.kefu_sent, 0)
    msg_open = and_(U.c.last_message_at.is_not(None), U.c.last_message_at >= now - timedelta(hours=window_h),
                    sent < quota_after_message)
    evt_open = and_(U.c.last_event_at.is_not(None), U.c.last_event_at >= now - timedelta(seconds=event_window_s),
                    sent < quota_after_event)
    stmt = (update(U).where(U.c.openid == openid, U.c.subscribed.is_not(False), or_(msg_open, evt_open))
            .values(kefu_sent=sent + 1))
    async with db.session() as s:
        result = await s.execute(stmt, execution_options={"synchronize_session": False})
    return (result.rowcount or 0) == 1


# ---------------------------------------------------------------------------------------------------
# Operators' view


async def status_counts(db: Database, now: datetime, *, claim_timeout_s: float = 120.0,
                        top_reasons: int = 20) -> dict[str, Any]:
    """Counts by status, by channel (sent rows), by purpose and status, and the failure reasons."""
    async with db.session() as s:
        by_status = {st: 0 for st in STATUSES}
        for st, n in await s.execute(select(T.c.status, func.count()).group_by(T.c.status)):
            by_status[st] = n
        by_channel = {ch or "-": n for ch, n in await s.execute(
            select(T.c.channel, func.count()).where(T.c.status == "sent").group_by(T.c.channel))}
        by_purpose: dict[str, dict[str, int]] = {}
        for purpose, st, n in await s.execute(
                select(T.c.purpose, T.c.status, func.count()).group_by(T.c.purpose, T.c.status)):
            by_purpose.setdefault(purpose, {})[st] = n
        reasons = [{"reason": r or "-", "count": n} for r, n in await s.execute(
            select(T.c.last_error, func.count().label("n")).where(T.c.status == "failed")
            .group_by(T.c.last_error).order_by(func.count().desc(), T.c.last_error).limit(top_reasons))]
        cancelled = [{"reason": r or "-", "count": n} for r, n in await s.execute(
            select(T.c.last_error, func.count().label("n")).where(T.c.status == "cancelled")
            .group_by(T.c.last_error).order_by(func.count().desc(), T.c.last_error).limit(top_reasons))]
        due_now = (await s.execute(select(func.count()).where(T.c.status == "pending", T.c.due_at <= now))).scalar_one()
        oldest_due = (await s.execute(select(func.min(T.c.due_at)).where(T.c.status == "pending"))).scalar_one()
        retrying = (await s.execute(select(func.count()).where(T.c.status == "pending", T.c.attempts > 0))).scalar_one()
        stale = (await s.execute(select(func.count()).where(
            T.c.status == "sending", T.c.claimed_at < now - timedelta(seconds=claim_timeout_s)))).scalar_one()
        delivery = {d: n for d, n in await s.execute(
            select(T.c.delivery_status, func.count()).where(T.c.delivery_status.is_not(None))
            .group_by(T.c.delivery_status))}
    return {
        "total": sum(by_status.values()),
        "by_status": by_status,
        "by_channel": by_channel,
        "by_purpose": dict(sorted(by_purpose.items())),
        "failure_reasons": reasons,
        "cancel_reasons": cancelled,
        "pending_due_now": due_now,
        "pending_retrying": retrying,
        "oldest_pending_due_at": oldest_due,
        "sending_stale": stale,
        "template_delivery": delivery,
    }


async def retry_failed(db: Database, now: datetime, ids: Iterable[int] | None = None) -> tuple[int, list[int]]:
    """Queue failed rows again (all failed rows when ``ids`` is None), due now, with fresh attempts.

    Returns ``(requeued, refused_ids)``: ids that exist but are not ``failed`` (sent rows are never
    sent twice; cancelled rows belong to users who unfollowed) or do not exist are refused.
    """
    want = None if ids is None else sorted(set(ids))
    async with db.session() as s:
        cond = [T.c.status == "failed"]
        if want is not None:
            cond.append(T.c.id.in_(want))
        result = await s.execute(
            update(T).where(*cond).values(status="pending", attempts=0, due_at=now, skipped_channels=[],
                                          last_error=None, claimed_by=None, claimed_at=None)
            .returning(T.c.id),
            execution_options={"synchronize_session": False})
        done = {r.id for r in result}
    refused = [] if want is None else [i for i in want if i not in done]
    return len(done), refused


def _notice_key(idempotency_key: str) -> str:
    """The notice's own key from a row's ``openid:key`` (openids hold no colon)."""
    return idempotency_key.split(":", 1)[1] if ":" in idempotency_key else idempotency_key


async def pending_broadcasts(db: Database) -> list[dict[str, Any]]:
    """Broadcast notices with pushes still waiting (scheduled ones, or a send in progress), one entry per
    notice key: ``key``, ``due_at`` (earliest, naive UTC), ``title``, ``pending``; soonest first."""
    async with db.session() as s:
        rows = (await s.execute(select(T.c.idempotency_key, T.c.due_at, T.c.payload).where(
            T.c.status == "pending", T.c.purpose == "broadcast"))).all()
    out: dict[str, dict[str, Any]] = {}
    for ikey, due, payload in rows:
        key = _notice_key(ikey)
        e = out.get(key)
        if e is None:
            title = ((payload or {}).get("data") or {}).get("title") or ""
            out[key] = {"key": key, "due_at": due, "title": title, "pending": 1}
        else:
            e["pending"] += 1
            e["due_at"] = min(e["due_at"], due)
    return sorted(out.values(), key=lambda e: (e["due_at"], e["key"]))


CANCELLED_BY_STAFF = "cancelled by staff"


def broadcast_rows(key: str) -> list[Any]:
    """WHERE conditions for the outbox rows of one broadcast notice (rows are keyed ``openid:key``)."""
    return [T.c.purpose == "broadcast", T.c.idempotency_key.endswith(":" + key, autoescape=True)]


async def cancel_broadcast(db: Database, key: str) -> dict[str, int]:
    """Cancel the pushes of one broadcast notice (its key as ``vetbot outbox scheduled`` lists it) that
    have not gone out: pending rows, and failed ones (so a later ``outbox retry --all-failed`` cannot
    send them), become ``cancelled`` (:data:`CANCELLED_BY_STAFF`). Rows a sender holds right now are left
    alone; one that meets a temporary error goes back to pending, and cancelling again catches it.
    Returns ``cancelled`` and, of the rest of that notice, ``sent`` / ``sending`` / ``cancelled_before``."""
    of_key = broadcast_rows(key)
    async with db.session() as s:
        result = await s.execute(
            update(T).where(*of_key, T.c.status.in_(("pending", "failed")))
            .values(status="cancelled", last_error=CANCELLED_BY_STAFF, claimed_by=None, claimed_at=None)
            .returning(T.c.id),
            execution_options={"synchronize_session": False})
        cancelled = len(result.all())
        counts = dict((await s.execute(select(T.c.status, func.count()).where(*of_key)
                                       .group_by(T.c.status))).all())
    return {"cancelled": cancelled, "sent": int(counts.get("sent", 0)), "sending": int(counts.get("sending", 0)),
            "cancelled_before": int(counts.get("cancelled", 0)) - cancelled}
