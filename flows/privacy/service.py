"""Erasure, the data export and the file clean-up — the services chat, the CLI and the staff console share.

``erase_person(session, openid, by=…, now=…)`` is THE erasure: every declared table (see
:mod:`storage.privacy`) in the caller's transaction; a roster entry staff entered is unbound (and every
staff member told), counts stay as anonymous rows, the audit log gets a row without identity. After the
transaction commits, :func:`compact` removes the erased bytes from a SQLite file (the
``privacy_compact`` tick does it within a minute for chat and unfollow erasures).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flows.privacy import texts
from storage import privacy as store
from storage.db import Database
from storage.outbox import HIGH, Push, enqueue

log = logging.getLogger("vetbot.privacy")


@dataclass
class ErasureReport:
    """What one erasure did. ``counts``: {table: {deleted|pseudonymised|unbound|scrubbed: rows}};
    ``roster``: the roster entries unbound (``id``, ``team``, ``phone_tail``); ``staff_told``: pushes queued
    to staff about them; ``log_id``: the audit-log row (privacy_erasures)."""

    at: datetime
    by: str
    reason: str
    pseudonym: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    roster: list[dict[str, Any]] = field(default_factory=list)
    staff_told: int = 0
    log_id: int = 0

    @property
    def rows(self) -> int:
        return sum(sum(v.values()) for v in self.counts.values())

    def lines_zh(self) -> list[str]:
        """One line per table, in plain Chinese (for the CLI and the console)."""
        decls = store.declarations()
        out = []
        for table, acts in sorted(self.counts.items()):
            label = decls[table].label if table in decls else table
            out.append(f"{label}（{table}）：" + "，".join(f"{texts.ACTION_WORDS.get(a, a)} {n}" for a, n in acts.items()))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "by": self.by, "reason": self.reason, "pseudonym": self.pseudonym,
                "counts": self.counts, "roster": self.roster, "staff_told": self.staff_told, "log_id": self.log_id}


def _reason(by: str) -> str:
    head = by.split(":", 1)[0]
    return head if head in ("self", "staff", "unfollow") else "staff"


async def erase_person(session: AsyncSession, openid: str, *, by: str, now: datetime) -> ErasureReport:
    """Erase everything stored about ``openid`` in the caller's transaction and return what was done.

    ``by`` says who asked: ``"self"`` (the person's 注销), ``"staff:<who>"`` (``vetbot users erase``, the
    console: name the staff member or their openid — an openid there is pseudonymised if that staff member
    is erased later), ``"unfollow"`` (the unfollow tick). Idempotent: erasing an unknown openid does
    nothing but write the audit row. Call :func:`compact` after the commit on SQLite (or leave it to the
    ``privacy_compact`` tick)."""
    who = await store.identity(session, openid)
    erased = await store.erase(session, who)
    report = ErasureReport(at=now, by=by, reason=_reason(by), pseudonym=erased.pseudonym, counts=erased.counts)
    report.roster = await _roster_entries(session, erased)
    report.staff_told = await _tell_staff(session, report, now)
    row = await store.log_erasure(session, erased, by=by, reason=report.reason, now=now)
    report.log_id = row.id
    log.info("erasure #%s (%s): %d rows in %d tables", row.id, report.reason, report.rows, len(report.counts))
    return report


async def _roster_entries(session: AsyncSession, erased: store.Erased) -> list[dict[str, Any]]:
    """The unbound roster rows as staff know them: roster number, team, last four digits of the phone."""
    from storage.callup import Member, Team

    out = []
    for table, row in erased.unbound:
        entry: dict[str, Any] = {"table": table, "id": row.get("id")}
        phone = str(row.get("phone") or "")
        entry["phone_tail"] = phone[-4:] if len(phone) >= 4 else ""
        if table == Member.__tablename__ and row.get("id") is not None:
            q = select(Team.name).join(Member, Member.team_id == Team.id).where(Member.id == row["id"])
            entry["team"] = (await session.execute(q)).scalar_one_or_none() or ""
        out.append(entry)
    return out


async def _tell_staff(session: AsyncSession, report: ErasureReport, now: datetime) -> int:
    if not report.roster:
        return 0
    from storage.callup import staff_openids

    staff = await staff_openids(session)
    pushes = []
    for entry in report.roster:
        text = texts.staff_unbound(entry)
        pushes += [Push(openid=o, purpose="notice", key=f"privacy:unbound:{entry['table']}:{entry['id']}:{report.pseudonym}",
                        text=text, priority=HIGH, data={"title": "应急队员解除绑定", "content": text})
                   for o in staff]
    return await enqueue(session, pushes, now) if pushes else 0


# ---------------------------------------------------------------------------------------------------
# Access and portability (我的数据)


def _jsonable(v: Any) -> Any:
    if isinstance(v, (datetime, date)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return v


async def export(session: AsyncSession, openid: str, config: Any, now: datetime,
                 found: list[store.Found] | None = None) -> dict[str, Any]:
    """Everything stored about ``openid`` as one JSON-ready document (the 我的数据 download); ``found``:
    what :func:`storage.privacy.collect` returned, when the caller has it already."""
    from flows.privacy.notice import load_notice

    found = texts.ordered(found if found is not None else await store.collect(session, openid))
    days = texts.retention_values(config)
    items = []
    for f in found:
        d = f.decl
        items.append({
            "table": d.table, "label": d.label, "relation": f.relation,
            "relation_zh": texts.RELATION_WORDS.get(f.relation.split(":")[0], f.relation),
            "purpose": d.purpose, "legal_basis": d.basis, "retention": texts.retention_of(d, days),
            "seen_by": d.seen_by,
            "rows": [{k: _jsonable(v) for k, v in r.items()} for r in f.rows],
        })
    return {"generated_at": now.isoformat() + "Z", "notice_version": load_notice(config).version,
            "openid": openid, "controller": load_notice(config).controller, "items": items}


def export_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, default=str)


# ---------------------------------------------------------------------------------------------------
# Removing erased bytes from the file


async def compact(db: Database, now: datetime) -> int:
    """Make erased data physically unreadable, then mark pending erasures done; returns how many.

    SQLite: VACUUM + ``wal_checkpoint(TRUNCATE)`` (:func:`storage.privacy.compact_sqlite`), so neither free
    pages nor the WAL keep erased rows or their old versions. PostgreSQL: VACUUM of every declared table,
    which frees dead row versions for reuse (the server overwrites them as it reuses the space; disks
    holding the database should be encrypted, see README). Never call it while holding a session."""
    async with db.session() as s:
        ids = await store.pending_compaction(s)
    if not ids:
        return 0
    if db.is_sqlite:
        async with db.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            store.compact_sqlite(getattr(raw, "_conn", raw))
    else:
        tables = ", ".join(f'"{t}"' for t, d in store.declarations().items() if not d.no_personal_data)
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql(f"VACUUM {tables}")
    async with db.session() as s:
        await s.execute(update(store.Erasure).where(store.Erasure.id.in_(ids)).values(compacted_at=now))
    return len(ids)
