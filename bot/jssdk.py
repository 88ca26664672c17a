"""WeChat JS-SDK configuration for our pages: the jsapi_ticket and the ``wx.config`` signature.

A page that uses WeChat's open tags (``wx-open-subscribe``, the 订阅通知 button) must call
``wx.config({appId, timestamp, nonceStr, signature, openTagList})`` where (JS-SDK 附录1)::

    signature = sha1("jsapi_ticket=<ticket>&noncestr=<nonceStr>&timestamp=<timestamp>&url=<url>")

with the keys in that (ASCII) order, the values as they are (no URL escaping) and ``url`` the page's
full address without its ``#fragment``. WeChat checks it against the page actually shown, whose host
must be one of the account's JS接口安全域名 (console: 设置与开发 → 公众号设置 → 功能设置).

The ticket comes from ``GET /cgi-bin/ticket/getticket?type=jsapi`` (7200 s, and the daily quota is
small), so like the access token it is shared by every process through the database: the
``wechat_tokens`` row ``<appid>#jsapi``, refreshed ahead of its expiry (see :meth:`JsSdk.ticket`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from bot.config import Config
from bot.wechat_api import WeChatClient
from storage.tokens import DbTokenStore

__all__ = ["JsSdk", "signature"]

#: A ticket is refreshed this many seconds before it expires.
REFRESH_MARGIN_S = 300


def signature(ticket: str, noncestr: str, timestamp: int | str, url: str) -> str:
    """The ``wx.config`` signature of ``url`` (its ``#fragment`` is dropped, as the JS-SDK requires)."""
    page = url.split("#", 1)[0]
    raw = f"jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={page}"
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()


class JsSdk:
    """Hands pages their ``wx.config`` values; the ticket is shared through the database."""

    def __init__(self, config: Config, db: Any, client: WeChatClient | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        from bot.outbox import build_client

        self.config = config
        self.client = client or build_client(config, db)
        self._own_client = client is None
        self._clock = clock
        self.store = DbTokenStore(db, f"{config.wechat.appid}#jsapi"[:64], clock=clock)
        self._cached: tuple[str, float] | None = None
        self._lock = asyncio.Lock()
        self.db = db

    async def ticket(self) -> str:
        """A jsapi_ticket valid for at least :data:`REFRESH_MARGIN_S` more seconds.

        Unlike the access token, the ticket is fetched *outside* a database transaction: fetching it
        needs the access token, which may itself need the database (on SQLite, the one connection a
        held transaction would keep). Within a process one fetch runs at a time; two processes that
        both find the ticket expired may both fetch one, which is harmless (a few a day)."""
        now = self._clock()
        if self._cached is not None and self._cached[1] - now > REFRESH_MARGIN_S:
            return self._cached[0]
        async with self._lock:
            stored = await self.store.load()
            if stored is not None and stored[1] - self._clock() > REFRESH_MARGIN_S:
                self._cached = stored
                return stored[0]
            ticket, expires_in = await self.client.jsapi_ticket()
            self._cached = (ticket, self._clock() + expires_in)
            await self._save(*self._cached)
            return ticket

    async def _save(self, ticket: str, expires_at: float) -> None:
        from datetime import UTC, datetime

        from sqlalchemy import update

        from storage.models import WeChatToken
        from storage.sql import insert_ignore

        async with self.db.session() as s:
            await insert_ignore(s, WeChatToken.__table__, {"appid": self.store.appid, "access_token": "",
                                                           "expires_at": 0.0, "updated_at": None},
                                index_elements=["appid"])
            await s.execute(update(WeChatToken).where(WeChatToken.appid == self.store.appid).values(
                access_token=ticket, expires_at=expires_at,
                updated_at=datetime.fromtimestamp(self._clock(), UTC).replace(tzinfo=None)))

    async def config_for(self, url: str) -> dict[str, Any]:
        """``{appId, timestamp, nonceStr, signature}`` for a page at ``url`` (its public address)."""
        ticket = await self.ticket()
        nonce = secrets.token_urlsafe(12)
        ts = int(self._clock())
        return {"appId": self.config.wechat.appid, "timestamp": ts, "nonceStr": nonce,
                "signature": signature(ticket, nonce, ts, url)}

    async def close(self) -> None:
        """Close the API client if this object created it."""
        if self._own_client:
            await self.client.close()
