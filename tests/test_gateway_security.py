"""Regression tests for the callback holes of issue 14: a captured URL reused with another body, plain
callbacks in safe mode, a compatible-mode body trusted by its plaintext copy, a staff openid
impersonated, a MsgId that another openid reuses. Each over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import pytest
import xmltodict
from sqlalchemy import func, select

from bot.sim import Signed, WeChatSide, signature, text_xml
from storage.models import Ticket, User
from tests.conftest import make_config
from tests.helpers import app_client

PATH = "/wechat"
STAFF = "staff_demo"  # bot.staff_openids in config.example.yaml


def config(db_url: str, mode: str, **kw: object):  # type: ignore[no-untyped-def]
    extra: dict[str, object] = {"wechat__encoding_aes_key": ""} if mode == "plain" else {}
    return make_config(db_url, bot__fallback_flow="help", wechat__mode=mode, **extra, **kw)


def plain_signed(cfg: Any, xml: str, *, ts: str | None = None, nonce: str = "n4711") -> Signed:
    """What an unencrypted callback looks like (URL signature only), as WeChat posts in plain mode."""
    ts = ts or str(int(time.time()))
    q = {"signature": signature(cfg.wechat.token, ts, nonce), "timestamp": ts, "nonce": nonce}
    return Signed(q, xml, nonce, ts)


async def _post(client: Any, query: dict[str, str], body: str) -> tuple[int, str]:
    r = await client.post(PATH, params=query, data=body.encode())
    return r.status, await r.text()


async def _user(runtime: Any, openid: str) -> User | None:
    async with runtime.db.session() as s:
        return await s.get(User, openid)


async def _tickets(runtime: Any) -> int:
    async with runtime.db.session() as s:
        return int((await s.execute(select(func.count(Ticket.id)))).scalar_one())


@pytest.mark.parametrize("mode", ["plain", "compat"])
async def test_captured_url_reused_with_another_body_as_another_user_is_refused(db_url: str, mode: str) -> None:
    cfg = config(db_url, mode)
    async with app_client(cfg) as (client, runtime):
        genuine = plain_signed(cfg, text_xml("u_genuine", "帮助"))
        status, body = await _post(client, genuine.query, genuine.body)
        assert status == 200 and "我的信息" in body
        # The same URL (signature, timestamp, nonce) with a body the attacker wrote, as the staff member.
        forged = text_xml(STAFF, "人工 请把名单发给我")
        status, _ = await _post(client, genuine.query, forged)
        assert status == 403
        assert await _user(runtime, STAFF) is None and await _tickets(runtime) == 0
        # WeChat's own retry (same URL, same body) still passes: the dedup record answers it.
        status, body = await _post(client, genuine.query, genuine.body)
        assert status == 200 and "我的信息" in body


async def test_a_captured_url_is_refused_by_every_serve_process_on_postgresql(db_url: str) -> None:
    """Two apps on one PostgreSQL database, as two `vetbot serve` processes behind a load balancer: the
    pair one of them accepted is refused by the other with another body (the database remembers it)."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite runs one serve process; its pairs live in that process's memory")
    cfg = config(db_url, "plain")
    async with app_client(cfg) as (one, _), app_client(cfg) as (two, runtime_two):
        genuine = plain_signed(cfg, text_xml("u_genuine", "帮助"))
        assert (await _post(one, genuine.query, genuine.body))[0] == 200
        status, _ = await _post(two, genuine.query, text_xml(STAFF, "人工 名单"))
        assert status == 403
        assert await _user(runtime_two, STAFF) is None
        assert (await _post(two, genuine.query, genuine.body))[0] == 200  # the retry, on the other process


async def test_plaintext_callback_in_safe_mode_is_refused(db_url: str) -> None:
    cfg = config(db_url, "safe")
    async with app_client(cfg) as (client, runtime):
        # A perfectly signed URL (signature over token, timestamp, nonce) with a plaintext body: the
        # signature does not cover the body, so safe mode must not take it from anyone.
        plain = plain_signed(cfg, text_xml(STAFF, "人工 请把名单发给我"))
        status, _ = await _post(client, plain.query, plain.body)
        assert status == 403
        # Claiming encryption in the URL without an <Encrypt> body does not help either.
        status, _ = await _post(client, {**plain.query, "encrypt_type": "aes"}, plain.body)
        assert status in (400, 403)
        assert await _user(runtime, STAFF) is None and await _tickets(runtime) == 0
        # What WeChat really sends in safe mode still works.
        signed = WeChatSide(cfg).sign(text_xml("u_safe", "帮助"))
        status, body = await _post(client, signed.query, signed.body)
        assert status == 200 and "我的信息" in WeChatSide(cfg).read_reply(body)["Content"]


@pytest.mark.parametrize("mode", ["safe", "compat"])
async def test_staff_openid_cannot_be_impersonated_through_a_compatible_mode_body(db_url: str, mode: str) -> None:
    """A body with both a plaintext copy and <Encrypt> (compatible mode) is read from its ciphertext
    only: rewriting the plaintext copy as the staff member gets nothing done as staff, with or without
    the URL's ``encrypt_type`` / ``msg_signature``."""
    cfg = config(db_url, mode)
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, runtime):
        genuine = side.sign(text_xml("u_member", "帮助"))  # the member's real, encrypted message
        enc = xmltodict.parse(genuine.body)["xml"]["Encrypt"]
        forged = text_xml(STAFF, "人工 请把名单发给我").replace("</xml>", f"<Encrypt><![CDATA[{enc}]]></Encrypt></xml>")
        # With a fresh plain URL signature (another captured callback that never reached us): the body
        # carries <Encrypt>, so msg_signature is required, and there is none for it.
        status, _ = await _post(client, plain_signed(cfg, "", nonce="fresh1").query, forged)
        assert status == 403
        # With the member's own URL: the message is the decrypted one, the member's.
        status, body = await _post(client, genuine.query, forged)
        assert status == 200
        reply = side.read_reply(body)
        assert reply["ToUserName"] == "u_member" and "我的信息" in reply["Content"]
        # The genuine post (same URL, same ciphertext) is the same callback: answered, not refused.
        status, body = await _post(client, genuine.query, genuine.body)
        assert status == 200 and side.read_reply(body)["Content"] == reply["Content"]
        assert await _user(runtime, STAFF) is None and await _tickets(runtime) == 0


async def test_compatible_mode_reply_is_encrypted_only_when_the_request_was(db_url: str) -> None:
    cfg = config(db_url, "compat")
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, _):
        signed = side.sign(text_xml("u_c1", "帮助"))
        _, body = await _post(client, signed.query, signed.body)
        assert "Encrypt" in xmltodict.parse(body)["xml"]
        plain = plain_signed(cfg, text_xml("u_c2", "帮助"), nonce="c2")
        _, body = await _post(client, plain.query, plain.body)
        assert xmltodict.parse(body)["xml"]["ToUserName"] == "u_c2"


async def test_plain_mode_refuses_an_encrypted_body(db_url: str) -> None:
    cfg = config(db_url, "plain")
    async with app_client(cfg) as (client, _):
        q = plain_signed(cfg, "", nonce="p1").query
        status, _ = await _post(client, q, "<xml><ToUserName>gh</ToUserName><Encrypt>AAAA</Encrypt></xml>")
        assert status == 400


async def test_same_msgid_from_another_openid_does_not_get_the_stored_reply(db_url: str) -> None:
    cfg = config(db_url, "plain")
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, runtime):
        a = side.sign(text_xml("u_first", "人工", msg_id=4242))
        status, body = await _post(client, a.query, a.body)
        first = xmltodict.parse(body)["xml"]["Content"]
        assert status == 200 and "我的信息" not in first
        b = side.sign(text_xml("u_other", "帮助", msg_id=4242))
        status, body = await _post(client, b.query, b.body)
        reply = xmltodict.parse(body)["xml"]
        assert reply["ToUserName"] == "u_other"
        assert reply["Content"] != first and "我的信息" in reply["Content"]
        assert await _user(runtime, "u_other") is not None  # its turn ran
        # The first sender's retry is still answered from the dedup record.
        status, body = await _post(client, a.query, a.body)
        assert xmltodict.parse(body)["xml"]["Content"] == first


def test_pairs_are_forgotten_once_their_timestamp_leaves_the_window() -> None:
    from bot.replay import MemoryReplayGuard

    now = [1_700_000_000.0]
    guard = MemoryReplayGuard(300, 3600, clock=lambda: now[0])
    assert guard.seen_ok(1_700_000_000, "n1", b"a") and not guard.seen_ok(1_700_000_000, "n1", b"b")
    now[0] += 302  # past timestamp + window: the gateway refuses the timestamp itself from here on
    assert guard.seen_ok(1_700_000_300, "n2", b"c") and len(guard) == 1, "memory stays bounded"


async def test_purge_tick_drops_pairs_past_the_window(db_url: str) -> None:
    from datetime import datetime, timedelta

    from bot.replay import DbReplayGuard
    from bot.scheduler import run_tick
    from flows.api import ticks
    from storage.replay import CallbackNonce

    if db_url.startswith("sqlite"):
        pytest.skip("SQLite keeps the pairs in memory")
    cfg = config(db_url, "plain")
    async with app_client(cfg) as (_, runtime):
        guard = DbReplayGuard(runtime.db, 300, 3600)
        ts = int(time.time())
        assert await guard.check(ts, "n1", b"a") and await guard.check(ts, "n1", b"a")
        assert not await guard.check(ts, "n1", b"b")
        (tick,) = [t for t in ticks() if t.name == "purge_callback_nonces"]
        runtime.clock.set(datetime.utcnow() + timedelta(seconds=60))
        await run_tick(tick, runtime.db, runtime.services)
        async with runtime.db.session() as s:
            assert (await s.execute(select(func.count()).select_from(CallbackNonce))).scalar_one() == 1
        runtime.clock.set(datetime.utcnow() + timedelta(seconds=400))
        await run_tick(tick, runtime.db, runtime.services)
        async with runtime.db.session() as s:
            assert (await s.execute(select(func.count()).select_from(CallbackNonce))).scalar_one() == 0
