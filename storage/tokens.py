"""The access token shared by every vetbot process, kept in ``wechat_tokens``.

:class:`DbTokenStore` implements :class:`bot.wechat_api.TokenStore` (the Protocol is duck-typed, so
storage does not import the bot package). A refresh runs under a lock that spans processes:

* PostgreSQL: ``SELECT … FOR UPDATE`` on the account's row;
* SQLite: the transaction starts with ``BEGIN IMMEDIATE`` (see :mod:`storage.db`), which takes the
  database's write lock before the row is read, so a second process waits at its BEGIN.

The lock is held while WeChat is asked for the token (bounded by the client's timeout): the process
that waits then reads the fresh token and returns it without a fetch of its own. That is what keeps
N processes at one fetch, and the daily token quota untouched. Inside one process an
``asyncio.Lock`` in front of the database lock keeps waiting callers from each holding a pooled
connection while they queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import select, update

from storage.db import Database
from storage.models import WeChatToken
from storage.sql import insert_ignore

#: ``fetch(force_refresh) -> (access_token, expires_in seconds)`` (same shape as bot.wechat_api.TokenFetch).
Fetch = Callable[[bool], Awaitable[tuple[str, int]]]


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


class DbTokenStore:
    """A TokenStore backed by the ``wechat_tokens`` row of ``appid``.

    ``clock`` returns epoch seconds; pass the WeChat client's clock so both agree on expiry.
    """

    def __init__(self, db: Database, appid: str, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.appid = appid
        self._clock = clock
        self._lock = asyncio.Lock()
        #: How many times this store asked WeChat for a token (for tests and `outbox status`).
        self.fetches = 0

    async def load(self) -> tuple[str, float] | None:
        """The stored ``(token, expires_at epoch)``, or None when there is none yet."""
        async with self.db.session() as s:
            row = (await s.execute(
                select(WeChatToken.access_token, WeChatToken.expires_at).where(WeChatToken.appid == self.appid)
            )).first()
        if row is None or not row.access_token:
            return None
        return row.access_token, float(row.expires_at)

    async def refresh(self, fetch: Fetch, stale: str | None) -> str:
        """Return a token newer than ``stale``; fetch one under the row lock if nobody else did.

        An exception from ``fetch`` rolls the transaction back, leaving the stored token as it was.
        """
        async with self._lock, self.db.session() as s:
            # The row must exist before it can be locked; ON CONFLICT keeps a concurrent insert harmless.
            await insert_ignore(s, WeChatToken.__table__,
                                {"appid": self.appid, "access_token": "", "expires_at": 0.0, "updated_at": None},
                                index_elements=["appid"])
            q = select(WeChatToken.access_token, WeChatToken.expires_at).where(WeChatToken.appid == self.appid)
            if not self.db.is_sqlite:
                q = q.with_for_update()
            row = (await s.execute(q)).one()
            now = self._clock()
            if row.access_token and row.expires_at > now and row.access_token != stale:
                return str(row.access_token)  # refreshed by someone else while we waited
            token, expires_in = await fetch(stale is not None)
            self.fetches += 1
            now = self._clock()
            await s.execute(
                update(WeChatToken).where(WeChatToken.appid == self.appid)
                .values(access_token=token, expires_at=now + expires_in, updated_at=_utc(now))
            )
            return token
