"""Questions the policy Q&A could not answer (or answered with low confidence), counted so staff see
what to add to the knowledge base (`vetbot qa gaps`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text, select, update
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
