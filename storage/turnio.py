"""The turn store: a turn's core rows (user, conversation, dedup record) and the transaction around it.

:class:`TurnStore` is the interface the dispatcher sees: ``run(openid, fn)`` runs ``fn(io)`` in one
transaction, after the user's earlier turns, and resolves once it is committed; ``fn`` reads the rows
with ``io.load`` and writes them back with ``io.save`` (a :class:`TurnIO`). Two implementations:

* :class:`PgTurnStore` (PostgreSQL) — a session per turn and Core statements on its connection, three
  round trips a turn; the conversation row is locked by the upsert that loads it, so one user's turns
  serialise across processes (and an asyncio lock per openid orders them inside this one).
* :class:`SqliteTurnStore` — every turn joins the group commit of :class:`storage.turnbatch.TurnBatcher`
  and reads and writes the core rows with plain SQL on the sqlite3 connection underneath SQLAlchemy. On
  this machine an ORM ``get`` costs ~215 µs and the same SELECT in sqlite3 ~15 µs; a turn needs six of
  them, so this is what lets one process take thousands of messages a second. Flows still get an ORM
  session (created lazily, joined to the same transaction through a SAVEPOINT) for their own tables;
  hot repository paths run their Core statements inline instead (:func:`runner`, :class:`InlineSql`).

Raw sqlite3 lives here and in :mod:`storage.turnbatch` only. The rows are exposed as :class:`UserRecord`
/ :class:`ConvRecord` on both databases: plain objects with the columns as attributes; a user record
remembers which columns a turn changed, and the turn writes exactly those back.
"""

from __future__ import annotations

import asyncio
import json
import operator
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, cast

from sqlalchemy import Select, bindparam, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from storage.conversations import FlowState
from storage.models import Conversation, InboundDedup, RoleMixin, User

if TYPE_CHECKING:
    from storage.db import Database
    from storage.turnbatch import BatchTurn, TurnBatcher

T = TypeVar("T")
_TS = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's SQLite DateTime storage format


_last_ts: tuple[datetime | None, str | None] = (None, None)  # one tuple: replaced whole, safe across threads


def _ts(v: datetime | None) -> str | None:
    """``v`` as SQLAlchemy stores a naive DateTime on SQLite (:data:`_TS`); isoformat writes the same text
    several times faster than strftime, which showed up as 3-4% of a webhook turn. The last answer is
    kept: a turn stores its ``now`` four or five times (last_seen, last_message_at, updated_at, dedup)."""
    global _last_ts
    if v is None:
        return None
    last = _last_ts
    if v is last[0]:
        return last[1]
    text = v.isoformat(" ", "microseconds") if v.tzinfo is None else v.strftime(_TS)
    _last_ts = (v, text)
    return text


def _dt(v: Any) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v) if isinstance(v, str) else v


class UserRecord(RoleMixin):
    """The user's row during a turn (``ctx.user``): the columns of :class:`storage.models.User` as plain
    attributes, with its role helpers; remembers which columns the turn changed, and the turn writes
    exactly those back. Not an ORM object: a flow's own queries do not see the turn's changes to it
    until the turn commits."""

    COLUMNS: ClassVar[tuple[str, ...]] = tuple(c.name for c in User.__table__.columns)
    _DATES: ClassVar[frozenset[str]] = frozenset(
        c.name for c in User.__table__.columns if c.type.python_type is datetime)
    _BOOLS: ClassVar[frozenset[str]] = frozenset(
        c.name for c in User.__table__.columns if c.type.python_type is bool)

    def __init__(self, values: dict[str, Any]) -> None:
        d = self.__dict__  # written directly: __setattr__ would mark every column as changed
        d["_dirty"] = set()
        get = values.get
        for k in self.COLUMNS:
            d[k] = get(k)
        for k in self._DATES:
            d[k] = _dt(d[k])
        for k in self._BOOLS:
            if d[k] is not None:
                d[k] = bool(d[k])

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.COLUMNS and getattr(self, name, None) != value:
            self._dirty.add(name)
        object.__setattr__(self, name, value)

    def changed_values(self) -> dict[str, Any]:
        """The columns a turn changed, as Python values (for SQLAlchemy statements)."""
        return {k: getattr(self, k) for k in self._dirty}

    def changes(self) -> dict[str, Any]:
        out = {}
        for k in self._dirty:
            v = getattr(self, k)
            out[k] = _ts(v) if k in self._DATES else (int(v) if k in self._BOOLS and v is not None else v)
        return out


_EMPTY_TEXT = {dict: "{}", list: "[]"}


def _json_text(v: Any) -> str:
    if not v:
        empty = _EMPTY_TEXT.get(v.__class__)  # idle conversations: no encoder
        if empty is not None:
            return empty
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


class ConvRecord:
    """The conversation's row during a turn: the user's :class:`storage.conversations.FlowState` and the
    row's own columns (``openid``, ``updated_at``, ``expired``); written back whole at the end of the turn."""

    __slots__ = ("expired", "openid", "state", "updated_at")
    COLUMNS: ClassVar[tuple[str, ...]] = tuple(c.name for c in Conversation.__table__.columns)

    def __init__(self, openid: str, state: FlowState, updated_at: datetime | None, expired: bool = False) -> None:
        self.openid = openid
        self.state = state
        self.updated_at = updated_at
        self.expired = expired

    @classmethod
    def new(cls, openid: str, now: datetime) -> ConvRecord:
        """The row of a user who never wrote: no flow, idle since ``now``."""
        return cls(openid, FlowState(), now)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ConvRecord:
        """From a row as a database returns it (JSON as text from sqlite3, decoded from SQLAlchemy)."""
        return cls(row["openid"], FlowState.from_columns(row), _dt(row["updated_at"]), bool(row["expired"]))

    def values(self) -> dict[str, Any]:
        """Every column as a Python value (for SQLAlchemy statements, which serialise the JSON)."""
        return {"openid": self.openid, **self.state.columns(), "updated_at": self.updated_at,
                "expired": self.expired}

    def sqlite_row(self) -> tuple[Any, ...]:
        """Every column in :attr:`COLUMNS` order as SQLAlchemy stores it on SQLite (JSON text, its DateTime
        text, 0/1), for plain sqlite3."""
        v = self.values()
        for k in FlowState.JSON:
            v[k] = _json_text(v[k])
        v["updated_at"] = _ts(self.updated_at)
        v["expired"] = int(bool(self.expired))
        return tuple(v[k] for k in self.COLUMNS)


# ------------------------------------------------------------------------------------------------------
# The interface


@dataclass(slots=True)
class Loaded:
    """A turn to run: the user's row (created on first contact) and their conversation, under the lock."""

    user: UserRecord
    conv: ConvRecord


@dataclass(frozen=True, slots=True)
class Replayed:
    """The message was handled before (a WeChat retry): ``reply`` is what the first run answered
    (None: it answered ``success`` and pushed its reply)."""

    reply: str | None


class TurnIO(Protocol):
    """One turn's access to its rows, inside the turn's transaction."""

    @property
    def session(self) -> AsyncSession:
        """The ORM session of the turn's transaction, for flows' own tables."""
        ...

    async def load(self, openid: str, key: str, now: datetime, subscribing: bool) -> Loaded | Replayed:
        """The rows of ``openid``, or :class:`Replayed` when the dedup record ``key`` exists. A new user's
        row is created (``subscribing``: they just followed)."""
        ...

    async def save(self, user: UserRecord, conv: ConvRecord, key: str, reply: str | None, now: datetime,
                   ttl: timedelta) -> None:
        """Write the user's changed columns, the conversation and the dedup record ``key`` (keeping
        ``reply`` for ``ttl``)."""
        ...


TurnFn = Callable[[TurnIO], Awaitable[T]]


class TurnStore(Protocol):
    """Runs turns: one transaction each, one user's turns one after another."""

    def run(self, openid: str, fn: TurnFn[T]) -> asyncio.Future[T]:
        """Run ``fn(io)`` in one transaction after ``openid``'s earlier turns. The future resolves with its
        result (or exception) once the transaction has committed (or rolled back). The turn runs to the
        end whether or not anybody waits for the future."""
        ...


def turn_store(db: Database) -> TurnStore:
    """The turn store for ``db``: group commit on SQLite, row locks on PostgreSQL."""
    if db.is_sqlite:
        return SqliteTurnStore(db.batcher)
    return PgTurnStore(db)


def _new_user(openid: str, now: datetime, subscribing: bool) -> dict[str, Any]:
    return {"openid": openid, "subscribed": True, "first_seen": now, "last_seen": now, "kefu_sent": 0,
            "roles": "", "subscribed_at": now if subscribing else None}


# ------------------------------------------------------------------------------------------------------
# PostgreSQL


_CONV = Conversation.__table__
_USERS = User.__table__
_DEDUP = InboundDedup.__table__


def _bound(table: Any, names: Any, prefix: str) -> dict[str, Any]:
    """``{column: bindparam(prefix + column)}`` typed like the column (JSON, dates, booleans)."""
    return {n: bindparam(prefix + n, type_=table.c[n].type) for n in names}


# Statements built once: building and caching an upsert or a CTE statement per turn cost more CPU than
# the round trips they save.
_CONV_INS = pg_insert(_CONV).values(_bound(_CONV, ConvRecord.COLUMNS, ""))
_CONV_LOCK = _CONV_INS.on_conflict_do_update(
    index_elements=["openid"], set_={"openid": _CONV_INS.excluded.openid}).returning(*_CONV.c)
_ONE = select(literal(1).label("one")).subquery("one")
# The dedup record and the user's row in one round trip (both may be missing).
_SEEN_AND_USER = (
    select(_DEDUP.c.reply, _DEDUP.c.key.is_not(None).label("seen"), *_USERS.c)
    .select_from(_ONE.outerjoin(_DEDUP, _DEDUP.c.key == bindparam("k"))
                 .outerjoin(_USERS, _USERS.c.openid == bindparam("o"))))
_USER_BY_OPENID = select(*_USERS.c).where(_USERS.c.openid == bindparam("o"))
_USER_NEW = tuple(_new_user("", datetime(2000, 1, 1), False))
_USER_INS = pg_insert(_USERS).values(_bound(_USERS, _USER_NEW, "")).on_conflict_do_nothing(index_elements=["openid"])
_SAVES: dict[frozenset[str], Any] = {}


def _save_stmt(changed: frozenset[str]) -> Any:
    """Dedup insert + conversation update (+ update of the ``changed`` user columns) as one statement."""
    stmt = _SAVES.get(changed)
    if stmt is None:
        stmt = pg_insert(_DEDUP).values(_bound(_DEDUP, ("key", "reply", "created_at", "expires_at"), "d_"))
        if changed:
            stmt = stmt.add_cte(update(_USERS).where(_USERS.c.openid == bindparam("u_key"))
                                .values(_bound(_USERS, sorted(changed), "u_")).cte("u"))
        stmt = stmt.add_cte(update(_CONV).where(_CONV.c.openid == bindparam("c_key"))
                            .values(_bound(_CONV, ConvRecord.COLUMNS, "c_")).cte("c"))
        _SAVES[changed] = stmt
    return stmt


class PgTurnIO:
    """Core rows with Core statements on the turn's connection (PostgreSQL).

    Three round trips instead of the ORM's seven: the conversation row is created-or-locked by one
    ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (the row lock that serialises one user's turns
    across processes, as ``SELECT … FOR UPDATE`` did), the dedup record and the user's row come in one
    SELECT, and the user update, conversation update and dedup insert go out as one statement
    (data-modifying CTEs). Flows get the turn's ORM session for their own tables."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @property
    def session(self) -> AsyncSession:
        return self._session

    async def load(self, openid: str, key: str, now: datetime, subscribing: bool) -> Loaded | Replayed:
        conn = await self._session.connection()
        crow = (await conn.execute(_CONV_LOCK, ConvRecord.new(openid, now).values())).mappings().one()
        conv = ConvRecord.from_row(crow)
        row = (await conn.execute(_SEEN_AND_USER, {"k": key, "o": openid})).mappings().one()
        if row["seen"]:
            return Replayed(row["reply"])
        if row["openid"] is not None:
            return Loaded(UserRecord({k: row[k] for k in UserRecord.COLUMNS}), conv)
        values = _new_user(openid, now, subscribing)
        if (await conn.execute(_USER_INS, values)).rowcount == 1:
            return Loaded(UserRecord(values), conv)
        # Written meanwhile by something that is not a turn (turns of one user are serialised above).
        urow = (await conn.execute(_USER_BY_OPENID, {"o": openid})).mappings().one()
        return Loaded(UserRecord(dict(urow)), conv)

    async def save(self, user: UserRecord, conv: ConvRecord, key: str, reply: str | None, now: datetime,
                   ttl: timedelta) -> None:
        await self._session.flush()  # the flow's ORM changes first, as on SQLite
        changed = user.changed_values()
        params: dict[str, Any] = {"d_key": key, "d_reply": reply, "d_created_at": now, "d_expires_at": now + ttl,
                                  "c_key": conv.openid, **{f"c_{k}": v for k, v in conv.values().items()}}
        if changed:
            params.update({f"u_{k}": v for k, v in changed.items()}, u_key=user.openid)
        await (await self._session.connection()).execute(_save_stmt(frozenset(changed)), params)


class PgTurnStore:
    """Turns on PostgreSQL: a session (one transaction) per turn, a task per turn. An asyncio lock per
    openid orders one user's turns inside this process; the conversation row lock (:class:`PgTurnIO`)
    orders them across processes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, openid: str) -> asyncio.Lock:
        lock = self._locks.get(openid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[openid] = lock
        return lock

    def run(self, openid: str, fn: TurnFn[T]) -> asyncio.Future[T]:
        return asyncio.ensure_future(self._locked(openid, fn))

    async def _locked(self, openid: str, fn: TurnFn[T]) -> T:
        async with self._lock(openid), self.db.session() as session:
            return await fn(PgTurnIO(session))


# ------------------------------------------------------------------------------------------------------
# SQLite


class LazySession:
    """An AsyncSession created on first use, joined to the batch transaction by a SAVEPOINT.

    Until a flow uses it, hot repository paths may run their statements inline on the batch's sqlite3
    connection (:func:`runner`): that is what makes a Qingming tribute cost ~50 µs instead of the ~3 ms
    of a session created for four statements (its SAVEPOINT, statement compilation, greenlet hand-offs)."""

    def __init__(self, turn: BatchTurn) -> None:
        self._turn = turn
        self._session: AsyncSession | None = None
        self._inline: InlineSql | None = None

    def _get(self) -> AsyncSession:
        if self._session is None:
            self._session = AsyncSession(bind=self._turn.conn, join_transaction_mode="create_savepoint",
                                         expire_on_commit=False)
        return self._session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    @property
    def used(self) -> bool:
        """Whether the ORM session exists (then every statement goes through it, so that its autoflush
        and identity map see them in order)."""
        return self._session is not None

    def inline(self) -> InlineSql | None:
        """The inline runner while the ORM session is unused, else None."""
        if self._session is not None:
            return None
        if self._inline is None:
            self._inline = InlineSql(self._turn)
        return self._inline

    async def commit(self) -> None:
        if self._session is not None:
            await self._session.commit()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def batch_session(turn: BatchTurn) -> AsyncSession:
    """The session flows and repositories see inside a batched SQLite turn (a :class:`LazySession`,
    typed as the AsyncSession it stands for)."""
    return cast(AsyncSession, LazySession(turn))


_SQL_SEEN = "SELECT reply FROM inbound_dedup WHERE key = ?"
_SQL_CONV = f"SELECT {', '.join(ConvRecord.COLUMNS)} FROM conversations WHERE openid = ?"
_SQL_USER = f"SELECT {', '.join(UserRecord.COLUMNS)} FROM users WHERE openid = ?"
_SQL_CONV_PUT = (f"INSERT OR REPLACE INTO conversations ({', '.join(ConvRecord.COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(ConvRecord.COLUMNS))})")  # sqlite_row() lists COLUMNS in order
_SQL_DEDUP_PUT = "INSERT INTO inbound_dedup (key, reply, created_at, expires_at) VALUES (?, ?, ?, ?)"


class SqliteTurnIO:
    """Core rows with plain SQL on the batch connection (SQLite only)."""

    def __init__(self, turn: BatchTurn) -> None:
        self.raw = turn.raw
        self._session = batch_session(turn)

    @property
    def session(self) -> AsyncSession:
        return self._session

    async def load(self, openid: str, key: str, now: datetime, subscribing: bool) -> Loaded | Replayed:
        raw = self.raw
        row = raw.execute(_SQL_SEEN, (key,)).fetchone()
        if row is not None:
            return Replayed(row[0])
        crow = raw.execute(_SQL_CONV, (openid,)).fetchone()
        conv = ConvRecord.from_row(dict(zip(ConvRecord.COLUMNS, crow, strict=True))) if crow \
            else ConvRecord.new(openid, now)
        urow = raw.execute(_SQL_USER, (openid,)).fetchone()
        if urow is None:
            values = _new_user(openid, now, subscribing)
            user = UserRecord(values)
            ins = {k: (_ts(v) if isinstance(v, datetime) else int(v) if isinstance(v, bool) else v)
                   for k, v in values.items()}
            raw.execute(f"INSERT INTO users ({', '.join(ins)}) VALUES ({', '.join('?' * len(ins))})",
                        tuple(ins.values()))
        else:
            user = UserRecord(dict(zip(UserRecord.COLUMNS, urow, strict=True)))
        return Loaded(user, conv)

    async def save(self, user: UserRecord, conv: ConvRecord, key: str, reply: str | None, now: datetime,
                   ttl: timedelta) -> None:
        raw = self.raw
        await self._session.commit()  # the flow's ORM changes first (releases their SAVEPOINT)
        changes = user.changes()
        if changes:
            raw.execute(f"UPDATE users SET {', '.join(f'{k} = ?' for k in changes)} WHERE openid = ?",
                        (*changes.values(), user.openid))
        raw.execute(_SQL_CONV_PUT, conv.sqlite_row())
        raw.execute(_SQL_DEDUP_PUT, (key, reply, _ts(now), _ts(now + ttl)))

    async def finish(self) -> None:
        await self._session.close()


class SqliteTurnStore:
    """Turns on SQLite: each joins the group-commit queue and runs in its worker, one after another on
    the single connection (no task of its own: a task and the shield around it cost ~15 µs of a ~380 µs
    turn)."""

    def __init__(self, batcher: TurnBatcher) -> None:
        self.batcher = batcher

    def run(self, openid: str, fn: TurnFn[T]) -> asyncio.Future[T]:
        async def job(turn: BatchTurn) -> T:
            io = SqliteTurnIO(turn)
            try:
                return await fn(io)
            finally:
                await io.finish()

        return self.batcher.enqueue(job)


# ------------------------------------------------------------------------------------------------------
# Statements inline on a batched SQLite turn


class InlineResult:
    """What :meth:`InlineSql.execute` returns: the part of SQLAlchemy's result the repositories use."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rowcount: int, rows: list[tuple[Any, ...]]) -> None:
        self.rowcount = rowcount
        self._rows = rows

    def all(self) -> list[tuple[Any, ...]]:
        return self._rows

    def first(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"expected one row, got {len(self._rows)}")
        return self._rows[0][0]


_DATE_PROBES = (date(1, 1, 1), date(2026, 4, 5), date(9999, 12, 31))
_DATETIME_PROBES = (datetime(1, 1, 1), datetime(2026, 4, 5, 9, 30, 5, 123), datetime(9999, 12, 31, 23, 59, 59, 999999))


def _faster(proc: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """SQLAlchemy's SQLite DATE and DATETIME bind processors format through a %-dict (~2.5 µs a value, and a
    tribute binds two dates); ``isoformat`` writes the same text in a fraction of that. Taken only when
    the processor gives exactly isoformat's text on probes (a type with another storage format keeps its
    own processor), and for the value classes probed; tests/memorial/test_fast_path.py compares the
    stored rows byte for byte."""
    if proc is None:
        return None
    try:
        if all(proc(v) == v.isoformat() for v in _DATE_PROBES):
            return lambda v: v.isoformat() if v.__class__ is date else proc(v)
    except (TypeError, ValueError):
        pass
    try:
        if all(proc(v) == v.isoformat(" ", "microseconds") for v in _DATETIME_PROBES):
            return lambda v: _ts(v) if v.__class__ is datetime and v.tzinfo is None else proc(v)
    except (TypeError, ValueError):
        pass
    return proc


@dataclass(slots=True)
class _Compiled:
    sql: str
    #: Reads the positional parameters from the caller's mapping (as a tuple, also for one).
    get: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    #: (position, bind processor) of the parameters whose type converts its values.
    procs: tuple[tuple[int, Callable[[Any], Any]], ...]
    #: Per result column: the type's result processor (None when no column has one).
    results: tuple[Callable[[Any], Any] | None, ...] | None
    #: Columns an INSERT fills from their Python-side default when the parameters leave them out.
    prefetch: tuple[tuple[str, Any], ...]


def _getter(names: tuple[str, ...], fixed: dict[str, Any]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """The parameters in ``names`` order from a mapping; ``fixed`` holds values the statement carries itself."""
    if fixed:
        head = names[:len(names) - len(fixed)]
        if set(names[len(head):]) == set(fixed):  # the usual case: they come last (SET n = n + ?)
            get, tail = _getter(head, {}), tuple(fixed[n] for n in names[len(head):])
            return lambda p: (*get(p), *tail)
        return lambda p: tuple(fixed[n] if n in fixed else p[n] for n in names)
    if len(names) == 1:
        name = names[0]
        return lambda p: (p[name],)
    if not names:
        return lambda p: ()
    return operator.itemgetter(*names)  # C speed: a tribute binds four values three times a turn


class InlineSql:
    """Core statements run as plain sqlite3 calls on a batched SQLite turn's connection.

    The same statements the ORM session would run, compiled by SQLAlchemy once (per statement and set of
    parameter names) for the SQLite dialect; parameters and results go through the column types' own
    bind and result processors, so the rows written are the ones the ORM path writes (JSON text, DateTime
    text, booleans as 0/1). What is skipped is the session: no SAVEPOINT of its own, no autoflush, no
    identity map, no ORM events — which is why it is offered only until the turn's ORM session is used
    (:meth:`LazySession.inline`). Work that must follow the commit goes to :meth:`after_commit`.
    Not supported (compiling raises or the cache says so): expanding IN parameters, SQL-expression
    defaults."""

    _CACHE: ClassVar[dict[tuple[int, tuple[str, ...]], tuple[Executable, _Compiled]]] = {}

    def __init__(self, turn: BatchTurn) -> None:
        self._turn = turn
        self.dialect: Dialect = turn.conn.dialect

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once the batch has committed (not if this turn fails)."""
        self._turn.after_commit(fn)

    def _compiled(self, stmt: Executable, keys: tuple[str, ...]) -> _Compiled:
        hit = self._CACHE.get((id(stmt), keys))
        if hit is not None and hit[0] is stmt:
            return hit[1]
        d = self.dialect
        c = stmt.compile(dialect=d, column_keys=list(keys))
        names = tuple(c.positiontup or ())
        prefetch = []
        for col in getattr(c, "insert_prefetch", ()):
            default = col.default
            if default is None or not (default.is_scalar or default.is_callable):
                raise ValueError(f"{col.name}: only scalar or plain callable defaults run inline")
            prefetch.append((col.key, default))
        # Values the statement carries itself (``n + 1``'s 1, a LIMIT's OFFSET 0).
        given = set(keys) | {k for k, _ in prefetch}
        fixed = {n: c.binds[n].effective_value for n in names if n not in given}
        # dialect_impl: the SQLite DateTime, not the generic one (whose processor is None: sqlite3 would
        # then store its own text, without the microseconds SQLAlchemy writes).
        procs = tuple((i, _faster(c.binds[n].type.dialect_impl(d).bind_processor(d))) for i, n in enumerate(names))
        if isinstance(stmt, Select):
            types = [col.type for col in stmt.selected_columns]
        else:
            types = [desc["type"] for desc in getattr(stmt, "returning_column_descriptions", None) or ()]
        results = tuple(t.dialect_impl(d).result_processor(d, None) for t in types)
        compiled = _Compiled(str(c), _getter(names, fixed), tuple((i, p) for i, p in procs if p is not None),
                             results if any(results) else None, tuple(prefetch))
        self._CACHE[(id(stmt), keys)] = (stmt, compiled)
        return compiled

    @staticmethod
    def _args(c: _Compiled, params: Mapping[str, Any]) -> Sequence[Any]:
        if c.prefetch:
            params = dict(params)
            for key, default in c.prefetch:
                if key not in params:
                    params[key] = default.arg if default.is_scalar else default.arg(None)
        values = c.get(params)
        if not c.procs:
            return values
        out = list(values)
        for i, proc in c.procs:
            v = out[i]
            if v is not None:
                out[i] = proc(v)
        return out

    def run(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> InlineResult:
        """Run ``stmt`` with ``params``; rows come back converted as the ORM would convert them."""
        params = params or {}
        keys = tuple(params)
        hit = self._CACHE.get((id(stmt), keys))
        c = hit[1] if hit is not None and hit[0] is stmt else self._compiled(stmt, keys)
        cur = self._turn.raw.execute(c.sql, self._args(c, params) if c.procs or c.prefetch else c.get(params))
        if cur.description is None:
            return InlineResult(cur.rowcount, [])
        rows = cur.fetchall()
        if rows and c.results is not None:
            procs = c.results
            rows = [tuple(p(v) if p is not None else v for p, v in zip(procs, r, strict=True)) for r in rows]
        return InlineResult(cur.rowcount, rows)

    async def execute(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> InlineResult:
        """:meth:`run`, with the signature of ``AsyncSession.execute`` (see :func:`runner`)."""
        return self.run(stmt, params)

    def executemany(self, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run ``stmt`` once per parameter set (all with the same names); returns the rows changed."""
        if not rows:
            return 0
        c = self._compiled(stmt, tuple(rows[0]))
        return self._turn.raw.executemany(c.sql, [self._args(c, p) for p in rows]).rowcount


def inline_sql(session: Any) -> InlineSql | None:
    """The inline runner of a batched SQLite turn's session whose ORM session is still unused; else None
    (PostgreSQL, a plain session, or a turn that already works through the ORM)."""
    return session.inline() if type(session) is LazySession else None


class SqlRunner(Protocol):
    """Runs Core statements for a repository: inline on a batched SQLite turn, else on the session."""

    dialect: Dialect

    async def execute(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> Any:
        """Run ``stmt``; the result has ``rowcount``, ``all()``, ``first()`` and ``scalar_one()``."""
        ...


class _SessionRunner:
    __slots__ = ("_session", "dialect")

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        bind = session.bind
        assert bind is not None, "the session has no bind"
        self.dialect = bind.dialect

    async def execute(self, stmt: Executable, params: Mapping[str, Any] | None = None) -> Any:
        return await self._session.execute(stmt, params)


def runner(session: AsyncSession) -> SqlRunner:
    """How a repository runs its Core statements on ``session``: inline on a batched SQLite turn that has
    not opened its ORM session (see :class:`InlineSql`), through the session otherwise. Both run the same
    statement and write the same rows."""
    sql = inline_sql(session)
    return sql if sql is not None else _SessionRunner(session)
