"""Callback (timestamp, nonce) pairs already seen, shared by every `vetbot serve` process on PostgreSQL.

A callback URL's ``signature`` covers the token, timestamp and nonce, not the body: whoever captured
one genuine URL could post it again with any body while its timestamp is inside the window. Each
pair is remembered with a digest of the body it came with; the same pair with another body is
refused (the same pair with the same body is WeChat's retry: the turn's dedup handles it).

On SQLite (one process) the gateway keeps the pairs in memory; this table exists there too, unused,
so that models and migrations agree on both databases.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String, bindparam, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Mapped, mapped_column

from storage.base import Base
from storage.db import Database
from storage.privacy import Declaration, declare


class CallbackNonce(Base):
    """One (timestamp, nonce) pair of an accepted callback, kept until its timestamp leaves the window."""

    __tablename__ = "callback_nonces"

    # sha1 hex of "<timestamp>:<nonce>" (a nonce is whatever the sender chose; the key stays 40 chars).
    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    # sha1 hex of the body the pair first came with.
    digest: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


declare(Declaration("callback_nonces", label="回调防重放记录",
                    no_personal_data="hashes of a callback's timestamp/nonce and of its body, kept for the "
                                     "timestamp window (minutes): no openid, no text"))

_T = CallbackNonce.__table__
# One round trip: insert the pair, or on conflict take the row's lock (a concurrent first insert of the
# same pair in another process is waited for) and return the digest stored first. The commit is
# asynchronous (synchronous_commit off for this transaction only): no WAL flush wait per callback; a
# database crash could forget the last fraction of a second of pairs, which then stay refused by the
# timestamp window alone once it passes.
_ASYNC_COMMIT = select(func.set_config("synchronous_commit", "off", True).label("s")).cte("async_commit")
_INS = pg_insert(_T).from_select(
    ["key", "digest", "expires_at"],
    select(bindparam("key", type_=String), bindparam("digest", type_=String),
           bindparam("expires_at", type_=DateTime)).select_from(_ASYNC_COMMIT),
)
_REMEMBER = _INS.on_conflict_do_update(
    index_elements=["key"], set_={"expires_at": func.greatest(_T.c.expires_at, _INS.excluded.expires_at)}
).returning(_T.c.digest)


async def remember_pg(db: Database, key: str, digest: str, expires_at: datetime) -> str:
    """Record ``key`` with ``digest`` (PostgreSQL); returns the digest stored for ``key`` first (equal
    to ``digest`` for a new pair or a retry with the same body)."""
    async with db.session() as s:
        return str((await s.execute(_REMEMBER, {"key": key, "digest": digest, "expires_at": expires_at})).scalar_one())


async def purge(db: Database, now: datetime) -> int:
    """Drop pairs whose timestamps have left the window; returns how many."""
    async with db.session() as s:
        return (await s.execute(delete(CallbackNonce).where(CallbackNonce.expires_at < now))).rowcount or 0
