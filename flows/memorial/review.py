"""Staff review of 寄语: one decision = the status change, the author's notice and the audit entry, in the
caller's transaction. ``vetbot memorial review`` and the staff console both call :func:`review_message`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.memorial.service import notify_decision
from storage.console import audit
from storage.memorial import MemorialMessage, NotPending, decide_message, get_martyr

__all__ = ["NotPending", "review_message"]


async def review_message(session: AsyncSession, config: Any, message_id: int, approve: bool, *, by: str,
                         now: datetime, reason: str = "", via: str = "cli") -> MemorialMessage:
    """Approve or reject a pending 寄语 and tell its author (kindly, for a rejection); NotPending when it
    does not exist or was decided already (two reviewers deciding at once decide it once)."""
    msg = await decide_message(session, message_id, approve, by=by, now=now, reason=reason or None)
    m = await get_martyr(session, msg.martyr_id) if msg.martyr_id else None
    await notify_decision(session, config, msg, m.name if m else None, now)
    await audit(session, actor=by, via=via, action="memorial.approve" if approve else "memorial.reject",
                target_type="memorial_message", target_id=msg.id, now=now,
                summary=(msg.text[:60] + ("" if approve else f"（原因：{reason}）" if reason else "")),
                detail={"martyr_id": msg.martyr_id, **({"reason": reason} if reason and not approve else {})})
    return msg
