"""Reading and writing a turn's core rows (user, conversation, dedup record).

Two implementations with one interface:

* :class:`PgTurnIO` — Core statements on the turn's connection (PostgreSQL), three round trips a
  turn; the conversation row is locked so one user's turns serialise across processes.
* :class:`SqliteTurnIO` — plain SQL on the sqlite3 connection underneath SQLAlchemy, inside the
  batch transaction of :class:`storage.turnbatch.TurnBatcher`. On this machine an ORM ``get``
  costs ~215 µs and the same SELECT in sqlite3 ~15 µs; a turn needs six of them, so this is what
  lets one process take thousands of messages a second. Flows still get an ORM session
  (created lazily, joined to the same transaction through a SAVEPOINT) for their own tables.

The rows are exposed as :class:`UserRecord` / :class:`ConvRecord` on both databases: plain objects with
the columns as attributes and the role helpers; a record remembers which user columns a turn changed.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy import bindparam, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from storage.models import Conversation, InboundDedup, RoleMixin, User

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


_EMPTY_JSON = frozenset({"{}", "[]", "null"})
_EMPTY_TEXT = {dict: "{}", list: "[]"}


class ConvRecord:
    """The conversation's row during a turn: the columns of :class:`storage.models.Conversation` as plain
    attributes (slots / stack / choices decoded); written back whole at the end of the turn."""

    COLUMNS: ClassVar[tuple[str, ...]] = tuple(c.name for c in Conversation.__table__.columns)
    _JSON: ClassVar[frozenset[str]] = frozenset({"slots", "stack", "choices"})

    def __init__(self, values: dict[str, Any]) -> None:
        d = self.__dict__
        get = values.get
        for k in self.COLUMNS:
            d[k] = get(k)
        for k in self._JSON:
            v = d[k]
            # Most conversations are idle: their slots / stack / choices are empty, skip the parser.
            if v is None or (v.__class__ is str and v in _EMPTY_JSON):
                d[k] = {} if k == "slots" else []
            elif isinstance(v, str):
                d[k] = json.loads(v)
        d["updated_at"] = _dt(d["updated_at"])
        d["expired"] = bool(d["expired"])

    def values(self) -> dict[str, Any]:
        """Every column as a Python value (for SQLAlchemy statements, which serialise the JSON)."""
        return {k: getattr(self, k) for k in self.COLUMNS}

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.COLUMNS:
            v = getattr(self, k)
            if k in self._JSON:
                empty = _EMPTY_TEXT.get(v.__class__) if not v else None  # idle conversations: no encoder
                v = empty or json.dumps(v, ensure_ascii=False, separators=(",", ":"))
            elif k == "updated_at":
                v = _ts(v)
            elif k == "expired":
                v = int(bool(v))
            out[k] = v
        return out


def _new_user(openid: str, now: datetime, subscribing: bool) -> dict[str, Any]:
    return {"openid": openid, "subscribed": True, "first_seen": now, "last_seen": now, "kefu_sent": 0,
            "roles": "", "subscribed_at": now if subscribing else None}


def _new_conv(openid: str, now: datetime) -> dict[str, Any]:
    return {"openid": openid, "slots": {}, "stack": [], "choices": [], "reasks": 0, "updated_at": now,
            "expired": False}


_CONV = Conversation.__table__
_USERS = User.__table__
_DEDUP = InboundDedup.__table__


def _bound(table: Any, names: Any, prefix: str) -> dict[str, Any]:
    """``{column: bindparam(prefix + column)}`` typed like the column (JSON, dates, booleans)."""
    return {n: bindparam(prefix + n, type_=table.c[n].type) for n in names}


# Statements built once: building and caching an upsert or a CTE statement per turn cost more CPU than
# the round trips they save.
_CONV_NEW = tuple(_new_conv("", datetime(2000, 1, 1)))
_CONV_INS = pg_insert(_CONV).values(_bound(_CONV, _CONV_NEW, ""))
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
        self.session = session

    async def load(self, openid: str, key: str, now: datetime,
                   subscribing: bool) -> tuple[bool, str | None, Any, Any]:
        conn = await self.session.connection()
        crow = (await conn.execute(_CONV_LOCK, _new_conv(openid, now))).mappings().one()
        conv = ConvRecord(dict(crow))
        row = (await conn.execute(_SEEN_AND_USER, {"k": key, "o": openid})).mappings().one()
        if row["seen"]:
            return True, row["reply"], None, conv
        if row["openid"] is not None:
            return False, None, UserRecord({k: row[k] for k in UserRecord.COLUMNS}), conv
        values = _new_user(openid, now, subscribing)
        if (await conn.execute(_USER_INS, values)).rowcount == 1:
            return False, None, UserRecord(values), conv
        # Written meanwhile by something that is not a turn (turns of one user are serialised above).
        urow = (await conn.execute(_USER_BY_OPENID, {"o": openid})).mappings().one()
        return False, None, UserRecord(dict(urow)), conv

    async def save(self, user: UserRecord, conv: ConvRecord, key: str, reply: str | None, now: datetime,
                   ttl: timedelta) -> None:
        await self.session.flush()  # the flow's ORM changes first, as on SQLite
        changed = user.changed_values()
        params: dict[str, Any] = {"d_key": key, "d_reply": reply, "d_created_at": now, "d_expires_at": now + ttl,
                                  "c_key": conv.openid, **{f"c_{k}": v for k, v in conv.values().items()}}
        if changed:
            params.update({f"u_{k}": v for k, v in changed.items()}, u_key=user.openid)
        await (await self.session.connection()).execute(_save_stmt(frozenset(changed)), params)

    async def finish(self) -> None:
        """Nothing to do: the caller's session commits everything."""


class LazySession:
    """An AsyncSession created on first use, joined to the batch transaction by a SAVEPOINT."""

    def __init__(self, conn: AsyncConnection, sqlite: sqlite3.Connection | None = None) -> None:
        self._conn = conn
        self._session: AsyncSession | None = None
        #: The sqlite3 connection of the batch transaction, for hot paths that write a few rows with
        #: plain SQL in the same transaction (the memorial's tribute counters); None elsewhere.
        self.sqlite = sqlite

    def _get(self) -> AsyncSession:
        if self._session is None:
            self._session = AsyncSession(bind=self._conn, join_transaction_mode="create_savepoint",
                                         expire_on_commit=False)
        return self._session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    @property
    def used(self) -> bool:
        return self._session is not None

    async def commit(self) -> None:
        if self._session is not None:
            await self._session.commit()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_SQL_SEEN = "SELECT reply FROM inbound_dedup WHERE key = ?"
_SQL_CONV = f"SELECT {', '.join(ConvRecord.COLUMNS)} FROM conversations WHERE openid = ?"
_SQL_USER = f"SELECT {', '.join(UserRecord.COLUMNS)} FROM users WHERE openid = ?"
_SQL_CONV_PUT = (f"INSERT OR REPLACE INTO conversations ({', '.join(ConvRecord.COLUMNS)}) "
                 f"VALUES ({', '.join('?' * len(ConvRecord.COLUMNS))})")  # conv.row() lists COLUMNS in order
_SQL_DEDUP_PUT = "INSERT INTO inbound_dedup (key, reply, created_at, expires_at) VALUES (?, ?, ?, ?)"


class SqliteTurnIO:
    """Core rows with plain SQL on the batch connection (SQLite only)."""

    def __init__(self, conn: AsyncConnection, raw: sqlite3.Connection) -> None:
        self.raw = raw
        self.session = LazySession(conn, raw)

    async def load(self, openid: str, key: str, now: datetime,
                   subscribing: bool) -> tuple[bool, str | None, Any, Any]:
        raw = self.raw
        row = raw.execute(_SQL_SEEN, (key,)).fetchone()
        crow = raw.execute(_SQL_CONV, (openid,)).fetchone()
        conv = ConvRecord(dict(zip(ConvRecord.COLUMNS, crow, strict=True)) if crow else _new_conv(openid, now))
        if row is not None:
            return True, row[0], None, conv
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
        return False, None, user, conv

    async def save(self, user: UserRecord, conv: ConvRecord, key: str, reply: str | None, now: datetime,
                   ttl: timedelta) -> None:
        raw = self.raw
        await self.session.commit()  # the flow's ORM changes first (releases their SAVEPOINT)
        changes = user.changes()
        if changes:
            raw.execute(f"UPDATE users SET {', '.join(f'{k} = ?' for k in changes)} WHERE openid = ?",
                        (*changes.values(), user.openid))
        raw.execute(_SQL_CONV_PUT, tuple(conv.row().values()))
        raw.execute(_SQL_DEDUP_PUT, (key, reply, _ts(now), _ts(now + ttl)))

    async def finish(self) -> None:
        await self.session.close()
