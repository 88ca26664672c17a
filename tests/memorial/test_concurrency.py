"""200 concurrent tribute turns through the webhook (real signed, encrypted XML) on SQLite and PostgreSQL:
every counted tribute gets its own ordinal, none is lost, repeats are never counted.

A turn that misses WeChat's reply budget (possible on PostgreSQL, where 200 turns queue on one popular
martyr's counter row) answers ``success`` and pushes the same reply through the outbox; the test reads
those too, so every one of the 200 ordinals is accounted for."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

from sqlalchemy import select

from bot.sim import text_xml
from storage.memorial import MEMORIAL, counts, totals
from storage.models import OutboxMessage
from tests.conftest import make_config
from tests.helpers import chat_session
from tests.memorial.conftest import seed_roll

ORDINAL = re.compile(r"您是第 ([\d,]+) 位")
_MSG_IDS = itertools.count(int(time.time()) * 1000)


async def _replies(chat, openids: list[str], text: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Send ``text`` from every openid at once; each message's passive reply, or its late reply's push
    (found by the message's own dedup key)."""
    ids = [next(_MSG_IDS) for _ in openids]
    passive = await asyncio.gather(*[chat.send_xml(text_xml(o, text, msg_id=i)) for o, i in zip(openids, ids,
                                                                                                 strict=True)])
    out: list[str] = []
    for openid, msg_id, reply in zip(openids, ids, passive, strict=True):
        for _ in range(300):
            if reply is not None:
                break
            async with chat.runtime.db.session() as s:
                row = (await s.execute(select(OutboxMessage).where(
                    OutboxMessage.idempotency_key == f"{openid}:late:m:{msg_id}"))).scalar_one_or_none()
            reply = row.payload["text"] if row is not None else None
            if reply is None:
                await asyncio.sleep(0.1)
        assert reply is not None, f"no reply for {openid}"
        out.append(reply)
    return out


async def test_200_concurrent_turns_count_exactly(db_url: str) -> None:
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        replies = await _replies(chat, [f"crowd_{i:03d}" for i in range(200)], "为张建国烈士献花")
        ordinals = sorted(int(m.group(1).replace(",", "")) for r in replies if (m := ORDINAL.search(r)))
        assert ordinals == list(range(1, 201))
        # 20 people tapping 10 times each, all at once: 20 counted, 180 thanked.
        taps = await _replies(chat, [f"tapper_{i % 20:02d}" for i in range(200)], "为全体英烈献花")
        assert sum(1 for r in taps if ORDINAL.search(r)) == 20
        assert sum(1 for r in taps if "您今天已经为全体英烈献过花了" in r) == 180
        async with chat.runtime.db.session() as s:
            assert (await counts(s, 1))["flower"] == 200
            assert (await counts(s, MEMORIAL))["flower"] == 20 and (await totals(s))["people"] == 220
