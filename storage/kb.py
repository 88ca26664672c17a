"""The knowledge base as staff edit it in the console: an overlay over the shipped YAML seed.

``kb_entries`` holds one row per entry staff added or changed (its id is the entry id; a row with
``deleted`` hides a seed entry). ``kb_history`` keeps every change — who, when, what the entry was
before and after — so nothing an editor does is lost. The effective knowledge base is the YAML seed
with these rows laid over it (:mod:`flows.policy_qa.overlay`); :func:`revision` changes with every
edit, so each process can tell that its engine is out of date.

Saving is optimistic: :func:`save_entry` takes the version the editor started from and refuses
(:class:`Conflict`) when someone else saved the entry in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base, JSONText
from storage.privacy import DUTY, Declaration, declare

#: Fields of an entry as stored (the YAML schema's keys other than ``id``).
FIELDS = ("question", "alternates", "answer", "tags", "keywords", "source", "updated", "links")


class KBEntryRow(Base):
    """One entry as staff saved it (replaces the seed entry of the same id, or adds one)."""

    __tablename__ = "kb_entries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # {question, alternates, answer, tags, keywords, source, updated, links}: the YAML entry's fields
    data: Mapped[dict[str, Any]] = mapped_column(JSONText, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_by_name: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime)


class KBChange(Base):
    """One change to the knowledge base (append-only)."""

    __tablename__ = "kb_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entry_id: Mapped[str] = mapped_column(String(64), index=True)
    # create (a new entry) / edit / alternate (a question added from 问答缺口) / delete / restore (back to the seed)
    action: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONText)
    by: Mapped[str] = mapped_column(String(64))
    by_name: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(DateTime)


declare(
    Declaration(
        "kb_entries", label="知识库修改", purpose="工作人员在后台修改的政策问答条目", basis=DUTY,
        # data: a question added from 问答缺口 is someone's own words; erasure scrubs their name / phone from it
        refs=("updated_by",), mentions=("updated_by_name", "data"), plain=("id",),
        kept="长期保存（知识库内容）", seen_by="本局工作人员"),
    Declaration(
        "kb_history", label="知识库修改记录", purpose="记录知识库的每一次修改（谁、何时、改了什么）", basis=DUTY,
        refs=("by",), mentions=("by_name", "before", "after"), plain=("entry_id", "action"),
        kept="作为工作档案长期保存", seen_by="本局工作人员"),
)


class Conflict(Exception):
    """Someone else saved the entry since the editor opened it; ``current`` is the version now."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the entry was changed meanwhile (now version {current})")
        self.current = current


@dataclass(frozen=True)
class OverlayRow:
    """A row of ``kb_entries`` detached from its session (what the engine build needs)."""

    id: str
    data: dict[str, Any]
    deleted: bool
    version: int
    updated_by: str
    updated_by_name: str
    updated_at: datetime


def _detach(r: KBEntryRow) -> OverlayRow:
    return OverlayRow(r.id, dict(r.data or {}), bool(r.deleted), r.version, r.updated_by, r.updated_by_name or "",
                      r.updated_at)


async def overlay(session: AsyncSession) -> list[OverlayRow]:
    """Every saved entry (deleted ones too), oldest edit first."""
    rows = await session.execute(select(KBEntryRow).order_by(KBEntryRow.updated_at, KBEntryRow.id))
    return [_detach(r) for r in rows.scalars()]


async def get_row(session: AsyncSession, entry_id: str) -> OverlayRow | None:
    row = await session.get(KBEntryRow, entry_id)
    return _detach(row) if row is not None else None


async def revision(session: AsyncSession) -> int:
    """A number that grows with every change (0: the seed as shipped)."""
    return int((await session.execute(select(func.coalesce(func.max(KBChange.id), 0)))).scalar_one())


async def save_entry(session: AsyncSession, entry_id: str, data: dict[str, Any] | None, *, action: str,
                     before: dict[str, Any] | None, expected_version: int, by: str, by_name: str,
                     now: datetime) -> int:
    """Store ``data`` for ``entry_id`` (``None``: delete it), record the change; returns the new version.

    ``expected_version`` is the version the editor saw (0 for an entry not yet in the table); another
    value now raises :class:`Conflict` and nothing is written. ``before`` is the entry as the editor saw
    it (seed or overlay), kept in the history."""
    row = await session.get(KBEntryRow, entry_id, with_for_update=True)
    current = row.version if row is not None else 0
    if current != expected_version:
        raise Conflict(current)
    version = current + 1
    clean = {k: data[k] for k in FIELDS if k in data} if data is not None else None
    if row is None:
        row = KBEntryRow(id=entry_id, data=clean or {}, deleted=data is None, version=version, updated_by=by[:64],
                         updated_by_name=by_name[:64], updated_at=now)
        session.add(row)
    else:
        row.data = clean if clean is not None else row.data
        row.deleted = data is None
        row.version = version
        row.updated_by, row.updated_by_name, row.updated_at = by[:64], by_name[:64], now
    session.add(KBChange(entry_id=entry_id, action=action[:16], version=version, before=before, after=clean,
                         by=by[:64], by_name=by_name[:64], at=now))
    await session.flush()
    return version


async def restore_seed(session: AsyncSession, entry_id: str, *, before: dict[str, Any] | None,
                       expected_version: int, by: str, by_name: str, now: datetime) -> None:
    """Drop the overlay row: the entry is the seed's again (recorded as ``restore``)."""
    row = await session.get(KBEntryRow, entry_id, with_for_update=True)
    current = row.version if row is not None else 0
    if row is None or current != expected_version:
        raise Conflict(current)
    await session.delete(row)
    session.add(KBChange(entry_id=entry_id, action="restore", version=current + 1, before=before, after=None,
                         by=by[:64], by_name=by_name[:64], at=now))
    await session.flush()


async def history(session: AsyncSession, entry_id: str | None = None, limit: int = 50) -> list[KBChange]:
    """Changes newest first (of one entry, or of all)."""
    q = select(KBChange).order_by(KBChange.id.desc()).limit(limit)
    if entry_id is not None:
        q = q.where(KBChange.entry_id == entry_id)
    return list((await session.execute(q)).scalars())
