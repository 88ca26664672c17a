"""Queueing pushes: a row in ``outbox`` written in the caller's transaction.

Delivery (channel policy, retries, rate limits) lives in :mod:`bot.outbox`; this module only
records what must be sent, so that a push exists exactly when the change that causes it exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import OutboxMessage
from storage.sql import insert_ignore
from storage.turnio import inline_sql

#: Priorities: lower is sent first.
EMERGENCY = 0
HIGH = 2
NORMAL = 5
LOW = 8

#: Every purpose a push may have; each may map to a template in config ``templates:``.
PURPOSES = ("late_reply", "callup", "callup_progress", "job_alert", "memorial_reminder", "broadcast",
            "ticket_reply", "notice", "bind_code", "callup_sms", "sms_reply")
#: Purposes whose pushes go by SMS only (``Push.sms_to``): no template is ever used for them. A binding
#: code; a call-up to a roster member without WeChat (``callup_sms``); the answer to an inbound SMS.
SMS_ONLY_PURPOSES = frozenset({"bind_code", "callup_sms", "sms_reply"})


@dataclass
class Push:
    """One push to queue.

    ``key`` must be unique per recipient and purpose instance (e.g. ``callup:12:notify:1``); queueing
    the same key twice keeps the first row. ``text`` is the customer-service / SMS body; ``data``
    fills the template fields (see ``templates:`` in the config); ``url`` is the link the template
    opens. ``sms_to`` sends the text by SMS to that phone and by no other channel (a verification code
    must reach the phone on the roster, not the WeChat account asking).
    """

    openid: str
    purpose: str
    key: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    priority: int = NORMAL
    due_at: datetime | None = None
    ref_type: str | None = None
    ref_id: int | None = None
    sms_to: str | None = None


def _row(p: Push, now: datetime) -> dict[str, Any]:
    if p.purpose not in PURPOSES:
        raise ValueError(f"unknown push purpose {p.purpose!r}; known: {', '.join(PURPOSES)}")
    payload: dict[str, Any] = {"text": p.text, "data": p.data}
    if p.url:
        payload["url"] = p.url
    if p.sms_to:
        payload["sms_to"] = p.sms_to
    return {
        "idempotency_key": f"{p.openid}:{p.key}"[:200],
        "openid": p.openid,
        "purpose": p.purpose,
        "priority": p.priority,
        "payload": payload,
        "status": "pending",
        "skipped_channels": [],
        "attempts": 0,
        "due_at": p.due_at or now,
        "ref_type": p.ref_type,
        "ref_id": p.ref_id,
        "created_at": now,
    }


_SQLITE_ENQUEUE = sqlite.insert(OutboxMessage.__table__).on_conflict_do_nothing(index_elements=["idempotency_key"])
_ON_COMMIT: list[Callable[[], None]] = []


def on_commit(fn: Callable[[], None]) -> Callable[[], None]:
    """Have ``fn()`` called after a transaction that queued pushes without an ORM session commits (the
    inline path of :func:`enqueue`). :mod:`bot.outbox` registers the wake-up of this process's senders
    here; pushes queued through an ORM session wake them through SQLAlchemy's session events instead."""
    if fn not in _ON_COMMIT:
        _ON_COMMIT.append(fn)
    return fn


def _committed() -> None:
    for fn in list(_ON_COMMIT):
        fn()


async def enqueue(session: AsyncSession, pushes: list[Push] | Push, now: datetime) -> int:
    """Queue pushes in the caller's transaction; duplicates (same openid+key) are ignored.

    Returns how many new rows were written. On a batched SQLite turn that has not opened its ORM session
    (a Qingming 默哀's "minute is over" reply) the same INSERT runs inline on the batch's connection
    (:class:`storage.turnio.InlineSql`) and the senders are woken once the batch has committed.
    """
    if isinstance(pushes, Push):
        pushes = [pushes]
    rows = [_row(p, now) for p in pushes]
    inline = inline_sql(session)
    if inline is not None:
        written = inline.executemany(_SQLITE_ENQUEUE, rows)
        if written:
            inline.after_commit(_committed)
        return written
    written = 0
    # Chunk to stay under SQLite's bound-parameter limit on very large fan-outs.
    for i in range(0, len(rows), 500):
        written += await insert_ignore(session, OutboxMessage.__table__, rows[i : i + 500],
                                       index_elements=["idempotency_key"])
    return written
