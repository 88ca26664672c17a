"""The dedup key change (m:<MsgId> -> m:<openid>:<MsgId>) across an upgrade: a WeChat retry that
straddles it is still answered from the record the old version wrote (migration sec_0002)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import xmltodict
from sqlalchemy import select, text

from bot.sim import WeChatSide, text_xml
from storage.db import Database, upgrade
from storage.models import InboundDedup
from tests.conftest import BACKENDS, _pg_admin_url, _pg_exec, _pg_template, make_config
from tests.helpers import app_client


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema yet), once per backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    _pg_template()  # skips (or fails under CI) when PostgreSQL is absent
    name = f"vetbot_u_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    yield _pg_admin_url(name)
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_retry_straddling_the_upgrade_is_answered_from_the_old_record(empty_db_url: str) -> None:
    upgrade(empty_db_url, "sec_0001")  # the schema the old code ran on (plus this branch's first step)
    now = datetime.utcnow().replace(microsecond=123456)
    earlier = now - timedelta(hours=2)

    async def old_version_wrote() -> None:
        db = Database(empty_db_url)
        try:
            async with db.session() as s:
                for openid, at in (("u_a", now), ("u_b", now - timedelta(seconds=3)), ("u_old", earlier),
                                   ("u_twin1", now - timedelta(seconds=9)), ("u_twin2", now - timedelta(seconds=9))):
                    await s.execute(text(
                        "INSERT INTO users (openid, subscribed, first_seen, last_seen, last_message_at, kefu_sent, "
                        "roles) VALUES (:o, true, :t, :t, :t, 0, '')"), {"o": openid, "t": at})
                for key, at, reply in (("m:111", now, "给A的回复"), ("m:222", now - timedelta(seconds=3), "给B的回复"),
                                       ("m:333", earlier, "很早的"), ("m:444", now - timedelta(seconds=9), "两人同时"),
                                       ("e:u_a:1:subscribe:", now, "欢迎")):
                    await s.execute(text("INSERT INTO inbound_dedup (key, reply, created_at, expires_at) "
                                         "VALUES (:k, :r, :t, :e)"), {"k": key, "r": reply, "t": at,
                                                                      "e": at + timedelta(hours=48)})
        finally:
            await db.close()

    asyncio.run(old_version_wrote())
    upgrade(empty_db_url)  # `vetbot db upgrade` of the new release

    async def after() -> dict[str, str | None]:
        db = Database(empty_db_url)
        try:
            async with db.session() as s:
                return {r.key: r.reply for r in (await s.execute(select(InboundDedup))).scalars()}
        finally:
            await db.close()

    rows = asyncio.run(after())
    assert rows["m:u_a:111"] == "给A的回复" and rows["m:u_b:222"] == "给B的回复"
    assert "m:333" in rows, "rows older than WeChat's retries stay as they were (and expire)"
    assert "m:444" in rows, "a time two users share names no sender: left alone"
    assert "e:u_a:1:subscribe:" in rows

    async def retry_on_new_version() -> str:
        cfg = make_config(empty_db_url, wechat__encoding_aes_key="", bot__fallback_flow="help")
        async with app_client(cfg) as (client, _):
            signed = WeChatSide(cfg).sign(text_xml("u_a", "帮助", msg_id=111))
            r = await client.post(cfg.server.path, params=signed.query, data=signed.body.encode())
            return str(xmltodict.parse(await r.text())["xml"]["Content"])

    assert asyncio.run(retry_on_new_version()) == "给A的回复", "the retry is answered from the old record"
