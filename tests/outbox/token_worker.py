"""A separate process sharing the access token through the database (used by test_processes.py).

    python tests/outbox/token_worker.py DB_URL API_BASE APPID START_AT N

Waits until ``START_AT`` (epoch seconds) so that every worker starts at once, then makes ``N``
concurrent API calls through a WeChatClient whose TokenStore is the database; prints the number of
token fetches this process made.
"""

from __future__ import annotations

import asyncio
import sys
import time

from bot.fake_wechat import fake_openid
from bot.wechat_api import WeChatClient
from storage.db import Database
from storage.tokens import DbTokenStore


async def main(url: str, base: str, appid: str, start_at: float, n: int) -> None:
    db = Database(url)
    store = DbTokenStore(db, appid)
    client = WeChatClient(base, appid, "secret", store)
    try:
        await db.ping()
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(client.user_info(fake_openid(i)) for i in range(n)))
        print(f"fetches={store.fetches}", flush=True)
    finally:
        await client.close()
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])))
