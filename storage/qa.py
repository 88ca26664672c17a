"""Questions the policy Q&A could not answer (or answered with low confidence), counted so staff see
what to add to the knowledge base (`vetbot qa gaps`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base
from storage.privacy import DUTY, Declaration, Retention, declare
from storage.sql import insert_ignore


class QAGap(Base):
    """One normalised question; ``count`` how often it was asked."""

    __tablename__ = "qa_gaps"

    norm: Mapped[str] = mapped_column(String(200), primary_key=True)
    example: Mapped[str] = mapped_column(Text)
    # unknown (declined) or ambiguous (offered a list)
    kind: Mapped[str] = mapped_column(String(16))
    count: Mapped[int] = mapped_column(Integer, default=1)
    best_id: Mapped[str | None] = mapped_column(String(64))
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]


declare(Declaration(
    "qa_gaps", label="没能回答的问题", purpose="统计机器人答不上的问题，补充知识库（不记录是谁问的）",
    basis=DUTY, mentions=("norm", "example"), mention_action="delete", plain=("kind", "best_id"),
    retention=(Retention("qa_gap_days", "last_at", note="最后一次被问到 {days} 天后删除"),)))


async def record_gap(session: AsyncSession, norm: str, example: str, kind: str, best_id: str | None,
                     now: datetime) -> None:
    """Count one unanswered question (exact under concurrency: insert-or-increment in SQL)."""
    key = norm[:200] or example[:200]
    inserted = await insert_ignore(session, QAGap.__table__, {
        "norm": key, "example": example[:500], "kind": kind, "count": 1, "best_id": best_id,
        "first_at": now, "last_at": now}, index_elements=["norm"])
    if not inserted:
        await session.execute(update(QAGap).where(QAGap.norm == key)
                              .values(count=QAGap.count + 1, last_at=now, kind=kind, best_id=best_id))


async def top_gaps(session: AsyncSession, limit: int = 50, kind: str | None = None) -> list[QAGap]:
    """Most-asked first."""
    q = select(QAGap).order_by(QAGap.count.desc(), QAGap.last_at.desc()).limit(limit)
    if kind:
        q = q.where(QAGap.kind == kind)
    return list((await session.execute(q)).scalars())


class QAAsk(Base):
    """One question the policy Q&A decided on (answer / list / unknown): the console's daily figures.

    Insert-only (no counter row every question would lock); rows older than :data:`ASK_KEEP_DAYS` are
    deleted by the console's housekeeping tick."""

    __tablename__ = "qa_asks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # answer (answered), list (offered a numbered list), unknown (declined)
    decision: Mapped[str] = mapped_column(String(16))
    entry_id: Mapped[str | None] = mapped_column(String(64))


#: How long :class:`QAAsk` rows are kept.
ASK_KEEP_DAYS = 90


async def record_ask(session: AsyncSession, decision: str, entry_id: str | None, now: datetime) -> None:
    """Log one decision of the Q&A (in the turn's transaction)."""
    session.add(QAAsk(at=now, decision=decision[:16], entry_id=(entry_id or None) and entry_id[:64]))


async def ask_counts(session: AsyncSession, since: datetime) -> dict[str, int]:
    """How many questions were answered / offered a list / declined since ``since``."""
    rows = await session.execute(select(QAAsk.decision, func.count()).where(QAAsk.at >= since)
                                 .group_by(QAAsk.decision))
    out = {"answer": 0, "list": 0, "unknown": 0}
    out.update({d: int(n) for d, n in rows})
    return out


declare(Declaration("qa_asks", label="问答统计",
                    no_personal_data="the time, the decision and the entry id of each question: no text, no openid"))
