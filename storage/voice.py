"""Voice messages: daily counts for the staff figures, and the once-a-day "please type" hint.

``voice_counts`` has one row per local day and outcome, incremented inside the turn that handled the
voice message (so a turn rolled back counts nothing and a WeChat retry counts once):

============  ==============================================================
``wechat``    WeChat's own speech recognition (``Recognition``) gave the text
``webhook``   our recogniser (``speech.webhook_url``) gave the text
``failed``    the recogniser was asked and gave nothing (error, timeout, empty)
``off``       no recogniser configured and no Recognition from WeChat
============  ==============================================================

``voice_hints`` remembers the last local day each person got the "please type or use the menu" reply,
so it is sent at most once a day per person, across restarts and processes.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Integer, String, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base
from storage.privacy import DELETE, DUTY, Declaration, Retention, declare
from storage.sql import insert_ignore, is_postgres

OUTCOMES = ("wechat", "webhook", "failed", "off")


class VoiceCount(Base):
    """Voice messages per local day and outcome (see the module docstring)."""

    __tablename__ = "voice_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class VoiceHint(Base):
    """The last local day a person was told that voice cannot be understood (at most once a day)."""

    __tablename__ = "voice_hints"

    openid: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date)


async def count_voice(session: AsyncSession, day: date, outcome: str) -> None:
    """Add one voice message of ``outcome`` to ``day``'s count, in the caller's transaction."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown voice outcome {outcome!r}")
    table = VoiceCount.__table__
    ins = (postgresql.insert(table) if is_postgres(session) else sqlite.insert(table)).values(
        day=day, outcome=outcome, count=1)
    await session.execute(ins.on_conflict_do_update(index_elements=["day", "outcome"],
                                                    set_={"count": table.c.count + 1}))


async def take_hint(session: AsyncSession, openid: str, day: date) -> bool:
    """True (and remembered) when ``openid`` has not had the voice hint on ``day`` yet."""
    table = VoiceHint.__table__
    if await insert_ignore(session, table, {"openid": openid, "day": day}, index_elements=["openid"]):
        return True
    result = await session.execute(update(table).where(table.c.openid == openid, table.c.day != day)
                                   .values(day=day), execution_options={"synchronize_session": False})
    return (result.rowcount or 0) == 1


async def voice_counts(session: AsyncSession, since: date | None = None) -> dict[str, dict[str, int]]:
    """``{"YYYY-MM-DD": {outcome: n}}`` from ``since`` on (all days when None), plus ``"total"``.

    The staff console and ``vetbot`` figures read this; every outcome is present (0 when none)."""
    q = select(VoiceCount.day, VoiceCount.outcome, func.sum(VoiceCount.count)).group_by(
        VoiceCount.day, VoiceCount.outcome).order_by(VoiceCount.day)
    if since is not None:
        q = q.where(VoiceCount.day >= since)
    out: dict[str, dict[str, int]] = {}
    total = dict.fromkeys(OUTCOMES, 0)
    for day, outcome, n in await session.execute(q):
        row = out.setdefault(day.isoformat(), dict.fromkeys(OUTCOMES, 0))
        row[outcome] = int(n or 0)
        total[outcome] = total.get(outcome, 0) + int(n or 0)
    out["total"] = total
    return out


declare(
    Declaration("voice_counts", label="语音消息统计",
                no_personal_data="per day and outcome only: how many voice messages were recognised, not whose"),
    Declaration(
        "voice_hints", label="语音提示记录", purpose="听不懂语音时，每天最多提醒您一次改用文字", basis=DUTY,
        subject="openid", on_erase=DELETE,
        retention=(Retention("short_lived_days", "day", note="{days} 天后删除"),), seen_by="仅系统使用"),
)
