"""Personal data (个人信息保护法): every table DECLARES what personal data it holds, and erasure, 我的数据,
retention and the auditors' table are all derived from those declarations.

A storage module declares its tables next to their models::

    declare(Declaration(
        "tickets", label="人工留言", purpose="工作人员回复您的留言", basis=CONTRACT,
        subject="openid", on_erase=DELETE, personal=("text", "context", "staff_reply"), plain=("status",),
        retention=(Retention("ticket_days", "closed_at", where=lambda t: t.c.status == "closed",
                             note="回复并关闭后 {days} 天删除"),)))

* ``subject`` is the column holding the openid of the person the row is about; ``on_erase`` says what
  erasure does with their rows: :data:`DELETE`, :data:`PSEUDONYMISE` (the openid replaced by a pseudonym
  made for that one erasure, so counts stay exact and nobody can be linked back), :data:`UNBIND` (a row
  staff entered — a roster entry — loses the openid and is kept) or :data:`KEEP`.
* ``via`` names a row that belongs to the person through another table (a call-up answer through the
  roster entry): shown in 我的数据, kept with that row.
* ``refs`` are columns where the person's openid may appear as the one who acted (a staff member who
  created a call-up): replaced by the pseudonym.
* ``mentions`` are free text or JSON written about anyone (a push to staff, a stored reply): occurrences
  of the person's openid, names and phone numbers are replaced by :data:`MARK` (or the rows deleted,
  ``mention_action="delete"``, where the text is a key).
* Every other text column is ``personal`` (part of the person's own rows), ``name``/``phone`` (identity,
  scrubbed elsewhere) or ``plain`` (statuses, kinds, hashes: no personal data).

:func:`check` walks ``Base.metadata`` and reports every table without a declaration and every text column
nobody classified, so a table or column added on another branch breaks the test suite until its author
says what it holds (tests/privacy/test_declarations.py). The engine functions (:func:`erase`,
:func:`collect`, :func:`purge`) work on any declared table: nothing here is a hand-written list of tables.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    literal,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from storage.base import Base, JSONText

#: What erasure does with the person's own rows (``subject`` column equal to their openid).
DELETE, PSEUDONYMISE, UNBIND, KEEP = "delete", "pseudonymise", "unbind", "keep"
ON_ERASE = (DELETE, PSEUDONYMISE, UNBIND, KEEP)
#: Legal bases (个人信息保护法 第十三条), as the README's table names them.
CONSENT = "个人同意（第十三条第一项）"
CONTRACT = "订立、履行本人为一方的合同所必需（第十三条第二项）"
DUTY = "履行法定职责所必需（第十三条第三项；《退役军人保障法》《英雄烈士保护法》）"
EMERGENCY = "应对突发公共事件、保护生命财产安全所必需（第十三条第四项）"
#: What replaces the person's openid, name or phone inside other people's texts.
MARK = "〔已注销〕"
#: Column names that look like they hold who someone is; such a column may never be declared ``plain``.
IDENTITY_NAME = re.compile(r"openid|phone|mobile|(^|_)tel($|_)|(^|_)name$|^name|_by$|^by$|actor", re.I)


@dataclass(frozen=True)
class Retention:
    """A rule of the retention job: rows whose ``column`` is older than ``privacy.<key>`` days (and that
    match ``where``) are deleted, or updated with ``values``. ``key`` None: a fixed rule applied elsewhere
    (``note`` says by what); ``note`` is the Chinese sentence for the README and 我的数据 (``{days}``)."""

    key: str | None
    column: str = ""
    note: str = ""
    where: Callable[[Table], Any] | None = None
    values: dict[str, Any] | None = None

    def describe(self, days: Mapping[str, int]) -> str:
        """The note with ``{days}`` (this rule's value) and any other ``{key}`` of ``days`` filled in."""
        n = days.get(self.key, 0) if self.key else 0
        if self.key and n <= 0:
            return "不自动删除（privacy." + self.key + " = 0）"
        text = self.note.replace("{days}", str(n))
        for k, v in days.items():
            text = text.replace("{" + k + "}", str(v))
        return text


@dataclass(frozen=True)
class Declaration:
    """What one table holds about people; see the module docstring for the fields' meaning."""

    table: str
    label: str
    purpose: str = ""
    basis: str = ""
    subject: str | None = None
    on_erase: str = KEEP
    via: tuple[str, str, str] | None = None
    name: tuple[str, ...] = ()
    phone: tuple[str, ...] = ()
    personal: tuple[str, ...] = ()
    refs: tuple[str, ...] = ()
    mentions: tuple[str, ...] = ()
    mention_action: str = "scrub"
    plain: tuple[str, ...] = ()
    #: Columns set to these values when the person's rows are pseudonymised or unbound.
    clear: dict[str, Any] = field(default_factory=dict)
    retention: tuple[Retention, ...] = ()
    #: How long rows stay when no retention rule removes them (Chinese), e.g. "直到您注销".
    kept: str = ""
    #: Who sees it (Chinese).
    seen_by: str = "本局工作人员"
    #: For tables with no personal data at all: why (then nothing else is needed).
    no_personal_data: str = ""

    def classified(self) -> set[str]:
        cols = set(self.name) | set(self.phone) | set(self.personal) | set(self.refs) | set(self.mentions)
        cols |= set(self.plain)
        if self.subject:
            cols.add(self.subject)
        return cols


_DECLARED: dict[str, Declaration] = {}


def declare(*decls: Declaration) -> None:
    """Register declarations (at import of the storage module that owns the tables)."""
    for d in decls:
        if d.on_erase not in ON_ERASE:
            raise ValueError(f"{d.table}: on_erase must be one of {ON_ERASE}, not {d.on_erase!r}")
        if d.mention_action not in ("scrub", "delete"):
            raise ValueError(f"{d.table}: mention_action must be 'scrub' or 'delete'")
        _DECLARED[d.table] = d


def declarations() -> dict[str, Declaration]:
    """Every declaration, by table name (imports every storage module first)."""
    from storage.models import import_all

    import_all()
    return dict(sorted(_DECLARED.items()))


# ---------------------------------------------------------------------------------------------------
# The check the test suite runs: every table declared, every text column classified


def _texty(col: Column[Any]) -> bool:
    t = col.type
    if isinstance(t, TypeDecorator):
        t = t.impl_instance
    return isinstance(t, String)


def check(metadata: MetaData | None = None, decls: Mapping[str, Declaration] | None = None) -> list[str]:
    """Problems with the declarations against the schema (empty: all is declared). A table with no
    declaration, a text column (or a column whose name says it holds who someone is) in no category, a
    declared column that does not exist, an openid/phone/name-looking column declared ``plain``."""
    metadata = metadata if metadata is not None else Base.metadata
    decls = decls if decls is not None else declarations()
    hint = ("declare it next to the model with storage.privacy.declare(Declaration(...)): which column holds "
            "the person's openid (subject) and what erasure does with their rows, which columns are name / "
            "phone / personal / refs / mentions, which are plain; or no_personal_data='why'")
    problems: list[str] = []
    for name, table in sorted(metadata.tables.items()):
        d = decls.get(name)
        if d is None:
            problems.append(f"table {name!r} has no personal-data declaration ({hint})")
            continue
        cols = {c.name: c for c in table.columns}
        if d.no_personal_data:
            continue
        known = d.classified()
        for c in sorted(known):
            if c not in cols:
                problems.append(f"{name}.{c} is declared but the table has no such column")
        for c in table.columns:
            if c.name in known:
                continue
            if _texty(c) or IDENTITY_NAME.search(c.name):
                problems.append(f"{name}.{c.name} ({c.type}) is in no category of its declaration: say whether "
                                "it holds an openid, a name, a phone, personal data, mentions of people, or "
                                "nothing personal (plain)")
        for c in d.plain:
            if re.search(r"openid|phone|mobile", c, re.I):
                problems.append(f"{name}.{c} looks like an openid or phone column but is declared plain")
        if d.subject is None and d.on_erase != KEEP:
            problems.append(f"{name}: on_erase={d.on_erase!r} needs a subject column")
        if d.via is not None and d.via[1] not in metadata.tables:
            problems.append(f"{name}: via table {d.via[1]!r} does not exist")
        for r in d.retention:
            if r.key is not None and r.column not in cols:
                problems.append(f"{name}: retention {r.key} compares {r.column!r}, which is not a column")
    for name in sorted(set(decls) - set(metadata.tables)):
        problems.append(f"declaration for {name!r}, which is not a table")
    return problems


# ---------------------------------------------------------------------------------------------------
# Models: consent records and the erasure log


class Consent(Base):
    """One decision on the 个人信息保护提示: accepted or declined, for a purpose (``scope``), with the
    version of the notice shown and when. Append-only: the latest row per (openid, scope) is in force."""

    __tablename__ = "privacy_consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    openid: Mapped[str] = mapped_column(String(64), index=True)
    # profile (我的信息) / team (binding to a volunteer team) / …
    scope: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(32))
    # accepted / declined
    decision: Mapped[str] = mapped_column(String(16))
    # chat / page
    via: Mapped[str] = mapped_column(String(16), default="chat")
    at: Mapped[datetime] = mapped_column(DateTime)


class Erasure(Base):
    """The audit log of erasures. Holds no identity: who was erased is exactly what must be gone; the
    pseudonym is the one their kept counts now carry (random, not derived from the openid)."""

    __tablename__ = "privacy_erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime)
    # who asked: self (the person, 注销), staff:<who> (vetbot users erase / the console), unfollow (the tick)
    by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    pseudonym: Mapped[str] = mapped_column(String(32))
    # {table: {action: rows}}
    counts: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    # SQLite: when VACUUM + WAL checkpoint removed the erased bytes from the file (NULL: not yet).
    compacted_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)


declare(
    Declaration(
        "privacy_consents", label="同意记录", purpose="证明您在登记前看过个人信息保护提示并同意",
        basis=DUTY, subject="openid", on_erase=DELETE,
        plain=("scope", "version", "decision", "via"), kept="直到您注销（注销时一并删除）"),
    Declaration(
        "privacy_erasures", label="注销记录", purpose="证明删除已经执行（审计）", basis=DUTY,
        refs=("by",), plain=("reason", "pseudonym"), personal=("counts",),
        kept="长期保存；只记录时间、方式和删除的条数，不含被删除人的任何身份信息"),
)


# ---------------------------------------------------------------------------------------------------
# Finding a person's rows


@dataclass
class Identity:
    """What identifies one person: their openid and every name / phone their own rows hold."""

    openid: str
    names: set[str] = field(default_factory=set)
    phones: set[str] = field(default_factory=set)

    def needles(self) -> list[str]:
        """The strings scrubbed from other people's texts, longest first (a phone before a name in it)."""
        out = {self.openid} | {p for p in self.phones if len(p) >= 7} | {n for n in self.names if len(n) >= 2}
        return sorted(out, key=lambda s: (-len(s), s))


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


async def identity(session: AsyncSession, openid: str) -> Identity:
    """The person's openid plus every name and phone found in their own rows (any declared table)."""
    who = Identity(openid)
    for d in declarations().values():
        if not d.subject or not (d.name or d.phone):
            continue
        t = _table(d.table)
        cols = [t.c[c] for c in (*d.name, *d.phone)]
        for row in await session.execute(select(*cols).where(t.c[d.subject] == openid)):
            for c, v in zip((*d.name, *d.phone), row, strict=True):
                if v:
                    (who.names if c in d.name else who.phones).add(str(v))
    return who


@dataclass
class Found:
    """The person's rows in one table: ``relation`` is how they are theirs (subject / via / ref /
    mention)."""

    decl: Declaration
    relation: str
    rows: list[dict[str, Any]]


async def collect(session: AsyncSession, openid: str, *, mentions: bool = True) -> list[Found]:
    """Everything stored about ``openid``, table by table (我的数据 and its JSON download; the preview
    before erasure). Mentions in other people's texts are counted, not listed (``rows`` holds the count)."""
    who = await identity(session, openid) if mentions else Identity(openid)
    decls = declarations()
    out: list[Found] = []
    for d in decls.values():
        if d.no_personal_data:
            continue
        t = _table(d.table)
        if d.subject:
            rows = (await session.execute(select(t).where(t.c[d.subject] == openid))).mappings().all()
            if rows:
                out.append(Found(d, "subject", [dict(r) for r in rows]))
        if d.via:
            col, other, other_col = d.via
            o = _table(other)
            od = decls.get(other)
            if od is not None and od.subject:
                q = select(t).join(o, o.c[other_col] == t.c[col]).where(o.c[od.subject] == openid)
                rows = (await session.execute(q)).mappings().all()
                if rows:
                    out.append(Found(d, "via", [dict(r) for r in rows]))
        for ref in d.refs:
            rows = (await session.execute(select(t).where(t.c[ref] == openid))).mappings().all()
            if rows:
                out.append(Found(d, f"ref:{ref}", [dict(r) for r in rows]))
        if mentions and d.mentions:
            from sqlalchemy import or_

            cond = or_(*[_mentioning(t, col, who.needles()) for col in d.mentions])
            if d.subject:
                cond = cond & ((t.c[d.subject] != openid) | t.c[d.subject].is_(None))
            n = int((await session.execute(select(func.count()).select_from(t).where(cond))).scalar_one())
            if n:
                out.append(Found(d, "mention", [{"count": n}]))
    return out


def _mentioning(t: Table, col: str, needles: Iterable[str]) -> Any:
    from sqlalchemy import or_

    c = type_coerce(t.c[col], Text())
    return or_(*[c.contains(n, autoescape=True) for n in needles])


# ---------------------------------------------------------------------------------------------------
# Erasure


@dataclass
class Erased:
    """What :func:`erase` did: rows per table and action, the roster rows it unbound (their primary key
    and identity columns, for telling staff) and the pseudonym the kept rows now carry."""

    pseudonym: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unbound: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, table: str, action: str, n: int) -> None:
        if n > 0:
            slot = self.counts.setdefault(table, {})
            slot[action] = slot.get(action, 0) + n

    @property
    def total(self) -> int:
        return sum(sum(v.values()) for v in self.counts.values())


def new_pseudonym() -> str:
    """A random stand-in for one erased person (unlinkable: not derived from the openid)."""
    return f"erased-{secrets.token_hex(8)}"


def _scrub(value: Any, needles: list[str]) -> Any:
    """``value`` (decoded JSON) with every needle inside its strings replaced by :data:`MARK`; a number
    equal to a phone number becomes the mark too."""
    if isinstance(value, str):
        for n in needles:
            value = value.replace(n, MARK)
        return value
    if isinstance(value, dict):
        return {_scrub(k, needles): _scrub(v, needles) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, needles) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and str(value) in needles:
        return MARK
    return value


def _is_json(t: Table, col: str) -> bool:
    return isinstance(t.c[col].type, JSONText)


async def _rowcount(session: AsyncSession, stmt: Any) -> int:
    res = await session.execute(stmt, execution_options={"synchronize_session": False})
    return max(int(res.rowcount or 0), 0)


async def erase(session: AsyncSession, who: Identity, *, pseudonym: str | None = None) -> Erased:
    """Erase one person in the caller's transaction, table by table as declared: their rows deleted,
    pseudonymised or unbound, their openid as an actor pseudonymised, and their openid / names / phones
    scrubbed from everyone else's texts. On SQLite deleted content is overwritten with zeros
    (``secure_delete``); the file itself is cleaned by :func:`compact` after the commit."""
    await session.flush()
    out = Erased(pseudonym or new_pseudonym())
    sqlite = session.bind is not None and session.bind.dialect.name == "sqlite"
    before = None
    if sqlite:
        before = (await session.execute(text("PRAGMA secure_delete"))).scalar()
        await session.execute(text("PRAGMA secure_delete = ON"))
    try:
        decls = declarations()
        for d in decls.values():
            if not d.subject or d.on_erase == KEEP:
                continue
            t = _table(d.table)
            cond = t.c[d.subject] == who.openid
            if d.on_erase == DELETE:
                out.add(d.table, "deleted", await _rowcount(session, delete(t).where(cond)))
            elif d.on_erase == PSEUDONYMISE:
                out.add(d.table, "pseudonymised", await _rowcount(
                    session, update(t).where(cond).values({d.subject: out.pseudonym, **d.clear})))
            elif d.on_erase == UNBIND:
                pk = [c.name for c in t.primary_key.columns]
                keep = [*pk, *d.name, *d.phone, *(c for c in d.plain if c not in pk)]
                rows = (await session.execute(select(*[t.c[c] for c in dict.fromkeys(keep)]).where(cond))).mappings().all()
                out.unbound += [(d.table, dict(r)) for r in rows]
                out.add(d.table, "unbound", await _rowcount(
                    session, update(t).where(cond).values({d.subject: None, **d.clear})))
        for d in decls.values():
            t = _table(d.table)
            for ref in d.refs:
                out.add(d.table, "pseudonymised", await _rowcount(
                    session, update(t).where(t.c[ref] == who.openid).values({ref: out.pseudonym})))
        needles = who.needles()
        for d in decls.values():
            t = _table(d.table)
            for col in d.mentions:
                cond = _mentioning(t, col, needles)
                if d.mention_action == "delete":
                    out.add(d.table, "deleted", await _rowcount(session, delete(t).where(cond)))
                elif _is_json(t, col):
                    pk = list(t.primary_key.columns)
                    rows = (await session.execute(select(*pk, t.c[col]).where(cond))).all()
                    for row in rows:
                        key = {c.name: v for c, v in zip(pk, row[:-1], strict=True)}
                        await session.execute(update(t).where(*[t.c[k] == v for k, v in key.items()])
                                              .values({col: _scrub(row[-1], needles)}))
                    out.add(d.table, "scrubbed", len(rows))
                else:
                    c = type_coerce(t.c[col], Text())
                    value: Any = c
                    for n in needles:
                        value = func.replace(value, literal(n, Text()), literal(MARK, Text()))
                    out.add(d.table, "scrubbed", await _rowcount(session, update(t).where(cond).values({col: value})))
    finally:
        if sqlite and before is not None:
            await session.execute(text(f"PRAGMA secure_delete = {int(before)}"))
    return out


async def log_erasure(session: AsyncSession, erased: Erased, *, by: str, reason: str, now: datetime) -> Erasure:
    """Write the audit-log row of an erasure (no identity in it)."""
    row = Erasure(at=now, by=by[:64], reason=reason[:32], pseudonym=erased.pseudonym, counts=erased.counts,
                  compacted_at=None)
    session.add(row)
    await session.flush()
    return row


async def on_roster(session: AsyncSession, openid: str) -> bool:
    """Whether the person has a row staff entered and erasure only unbinds (a team roster entry)."""
    for d in declarations().values():
        if d.subject and d.on_erase == UNBIND:
            t = _table(d.table)
            if (await session.execute(select(literal(1)).select_from(t).where(t.c[d.subject] == openid).limit(1))).first():
                return True
    return False


# ---------------------------------------------------------------------------------------------------
# Retention


async def purge(session: AsyncSession, now: datetime, days: Mapping[str, int]) -> dict[str, int]:
    """Apply every retention rule whose ``privacy.<key>`` is above 0; returns rows per ``table:key``."""
    done: dict[str, int] = {}
    for d in declarations().values():
        t = _table(d.table)
        for r in d.retention:
            n = days.get(r.key, 0) if r.key else 0
            if n <= 0:
                continue
            cond = t.c[r.column] < now - timedelta(days=n)
            if r.where is not None:
                cond = cond & r.where(t)
            stmt = update(t).where(cond).values(r.values) if r.values else delete(t).where(cond)
            got = await _rowcount(session, stmt)
            if got:
                done[f"{d.table}:{r.key}"] = done.get(f"{d.table}:{r.key}", 0) + got
    return done


# ---------------------------------------------------------------------------------------------------
# Physical clean-up


async def pending_compaction(session: AsyncSession) -> list[int]:
    """Ids of erasures whose bytes may still sit in free pages or the WAL of a SQLite file."""
    return list((await session.execute(select(Erasure.id).where(Erasure.compacted_at.is_(None)))).scalars())


def compact_sqlite(raw: Any) -> None:
    """Rebuild a SQLite file so nothing erased survives in it: VACUUM writes every live row into fresh
    pages (free pages and slack space, where deleted rows and old versions of rewritten rows linger, are
    gone), and a TRUNCATE checkpoint copies the WAL into the file and empties it (the WAL holds old page
    images until then). ``raw`` is a sqlite3 connection outside any transaction."""
    before = raw.execute("PRAGMA secure_delete").fetchone()[0]
    raw.execute("PRAGMA secure_delete = ON")
    try:
        raw.execute("VACUUM")
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        raw.execute(f"PRAGMA secure_delete = {int(before)}")
