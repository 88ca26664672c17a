"""The callback: signatures, safe mode, limits, dedup, deadline, events — over real HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
import xmltodict
from sqlalchemy import func, select
from wechatpy.crypto import WeChatCrypto

from bot.sim import WeChatSide, event_xml, signature, text_xml
from flows.api import Context, Flow, flow
from storage.models import InboundDedup, OutboxMessage, Ticket, User
from tests.conftest import ROOT, make_config
from tests.helpers import app_client, post_xml

PATH = "/wechat"


def plain_config(db_url: str, **kw: object):  # type: ignore[no-untyped-def]
    return make_config(db_url, wechat__encoding_aes_key="", bot__fallback_flow="help", **kw)


def safe_config(db_url: str, **kw: object):  # type: ignore[no-untyped-def]
    return make_config(db_url, bot__fallback_flow="help", **kw)


async def test_url_check_answers_echostr_and_refuses_bad_signatures(db_url: str) -> None:
    cfg = plain_config(db_url)
    async with app_client(cfg) as (client, _):
        ts, nonce = str(int(time.time())), "n1"
        good = {"signature": signature(cfg.wechat.token, ts, nonce), "timestamp": ts, "nonce": nonce, "echostr": "e42"}
        r = await client.get(PATH, params=good)
        assert r.status == 200 and await r.text() == "e42"
        r = await client.get(PATH, params={**good, "signature": "0" * 40})
        assert r.status == 403
        r = await client.get(PATH, params={"timestamp": ts, "nonce": nonce, "echostr": "x"})
        assert r.status == 403
        old = str(int(time.time()) - 3600)
        r = await client.get(PATH, params={"signature": signature(cfg.wechat.token, old, nonce), "timestamp": old,
                                           "nonce": nonce, "echostr": "x"})
        assert r.status == 403, "a replayed (stale) timestamp must be refused"


async def test_plain_text_message_gets_a_reply_addressed_back(db_url: str) -> None:
    cfg = plain_config(db_url)
    async with app_client(cfg) as (client, _):
        status, body = await post_xml(client, WeChatSide(cfg), text_xml("u_plain", "帮助"))
        assert status == 200
        reply = xmltodict.parse(body)["xml"]
        assert reply["ToUserName"] == "u_plain" and reply["FromUserName"] == "gh_vetbot"
        assert "我的信息" in reply["Content"]


async def test_safe_mode_reply_is_encrypted_and_decrypts(db_url: str) -> None:
    cfg = safe_config(db_url)
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, _):
        status, body = await post_xml(client, side, text_xml("u_safe", "帮助"))
        assert status == 200
        outer = xmltodict.parse(body)["xml"]
        assert "Encrypt" in outer and "Content" not in outer
        assert "我的信息" in side.read_reply(body)["Content"]


async def test_safe_mode_verifies_msg_signature_not_the_plain_signature(db_url: str) -> None:
    cfg = safe_config(db_url)
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, _):
        signed = side.sign(text_xml("u_forge", "帮助"))
        # Tampered ciphertext with a still-valid URL `signature`: the classic bug accepts it.
        enc = xmltodict.parse(signed.body)["xml"]["Encrypt"]
        forged_body = signed.body.replace(enc, "AAAAAAAAAA" + enc[10:])
        r = await client.post(PATH, params=signed.query, data=forged_body.encode())
        assert r.status == 403
        q = {k: v for k, v in signed.query.items() if k != "msg_signature"}
        r = await client.post(PATH, params=q, data=signed.body.encode())
        assert r.status == 403


async def test_safe_mode_refuses_a_message_encrypted_for_another_appid(db_url: str) -> None:
    cfg = safe_config(db_url)
    async with app_client(cfg) as (client, _):
        other = WeChatCrypto(cfg.wechat.token, cfg.wechat.encoding_aes_key, "wx_someone_else")
        ts, nonce = str(int(time.time())), "abc"
        enc = xmltodict.parse(other.encrypt_message(text_xml("u_x", "帮助"), nonce, ts))["xml"]["Encrypt"]
        q = {"timestamp": ts, "nonce": nonce, "encrypt_type": "aes", "signature": signature(cfg.wechat.token, ts, nonce),
             "msg_signature": signature(cfg.wechat.token, ts, nonce, enc)}
        r = await client.post(PATH, params=q, data=f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>".encode())
        assert r.status == 403


async def test_compatible_mode_body_with_plaintext_and_encrypt(db_url: str) -> None:
    cfg = safe_config(db_url)
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, _):
        xml = text_xml("u_compat", "帮助")
        signed = side.sign(xml)
        enc = xmltodict.parse(signed.body)["xml"]["Encrypt"]
        compat = xml.replace("</xml>", f"<Encrypt><![CDATA[{enc}]]></Encrypt></xml>")
        r = await client.post(PATH, params=signed.query, data=compat.encode())
        assert r.status == 200
        assert "我的信息" in side.read_reply(await r.text())["Content"]


@pytest.mark.parametrize("body", [
    b"<xml><ToUserName>",                       # truncated
    b"not xml at all",
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><xml>&lol2;</xml>',
    b'<!DOCTYPE xml SYSTEM "file:///etc/passwd"><xml><a>1</a></xml>',
    b"",
])
async def test_bad_xml_is_400_never_500(db_url: str, body: bytes) -> None:
    cfg = plain_config(db_url)
    async with app_client(cfg) as (client, _):
        ts, nonce = str(int(time.time())), "nn"
        q = {"signature": signature(cfg.wechat.token, ts, nonce), "timestamp": ts, "nonce": nonce}
        r = await client.post(PATH, params=q, data=body)
        assert r.status == 400


async def test_dtd_late_in_the_body_or_inside_the_encryption_is_refused(db_url: str) -> None:
    cfg = plain_config(db_url)
    async with app_client(cfg) as (client, _):
        late = "<!--" + "x" * 5000 + '-->\n<!DOCTYPE xml SYSTEM "http://example.invalid/x.dtd">' + text_xml("u_dtd", "帮助")
        status, _ = await post_xml(client, WeChatSide(cfg), late)
        assert status == 400
    cfg = safe_config(db_url)
    async with app_client(cfg) as (client, _):
        status, _ = await post_xml(client, WeChatSide(cfg), "<!DOCTYPE xml>" + text_xml("u_dtd", "帮助"))
        assert status == 400, "the check must also run on the decrypted message"
        status, _ = await post_xml(client, WeChatSide(cfg), text_xml("u_dtd", "网页开头是<!DOCTYPE html>吗"))
        assert status == 200, "a user may write <!DOCTYPE in a message: only a DTD before the root is refused"


@pytest.mark.parametrize(("xml", "dtd"), [
    (b"<xml><a>1</a></xml>", False),
    (b'\xef\xbb\xbf<?xml version="1.0"?>\n<!-- note --><xml/>', False),
    (b"<xml><Content><![CDATA[<!DOCTYPE html>]]></Content></xml>", False),
    (b"<!-- <xml> -->  <!DOCTYPE x [<!ENTITY e 'v'>]><xml>&e;</xml>", True),
    (b"<?pi x?><!doctype xml><xml/>", True),
    (b"<! DOCTYPE xml><xml/>", True),
    (b"not xml", False),
])
def test_has_dtd_reads_the_prolog_only(xml: bytes, dtd: bool) -> None:
    from bot.gateway import has_dtd

    assert has_dtd(xml) is dtd


@pytest.mark.parametrize("ts", ["9" * 400, "１７００００００００", "²"])
async def test_absurd_timestamps_are_403_never_500(db_url: str, ts: str) -> None:
    cfg = plain_config(db_url)
    async with app_client(cfg) as (client, _):
        q = {"signature": signature(cfg.wechat.token, ts, "n"), "timestamp": ts, "nonce": "n", "echostr": "e"}
        assert (await client.get(PATH, params=q)).status == 403
        r = await client.post(PATH, params=q, data=text_xml("u_ts", "帮助").encode())
        assert r.status == 403


async def test_fields_wechatpy_cannot_convert_never_give_a_500(db_url: str) -> None:
    cfg = plain_config(db_url)
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, _):
        odd_id = text_xml("u_odd", "帮助").rsplit("<MsgId>", 1)[0] + "<MsgId>abc</MsgId></xml>"
        status, body = await post_xml(client, side, odd_id)
        assert status == 200 and "我的信息" in xmltodict.parse(body)["xml"]["Content"]
        status, body = await post_xml(client, side, event_xml("u_odd", "TEMPLATESENDJOBFINISH", None,
                                                               extra={"MsgID": "abc", "Status": "success"}))
        assert (status, body) == (200, "success")
        status, body = await post_xml(client, side, event_xml("u_odd", "TEMPLATESENDJOBFINISH", None,
                                                               extra={"MsgID": "9" * 30, "Status": "success"}))
        assert (status, body) == (200, "success")
        long_key = "k" * 300  # two events that differ only past the dedup column's width are two events
        for tail in ("a", "b"):
            status, body = await post_xml(client, side, event_xml("u_odd", "CLICK", long_key + tail, create_time=1))
            assert status == 200 and "该菜单暂未开通" in body, "the second must not be taken for a replay"
        bad_time = text_xml("u_odd", "帮助").replace("<CreateTime>", "<CreateTime>x")
        status, _ = await post_xml(client, side, bad_time)
        assert status == 200, "CreateTime is only part of an event's dedup key: a bad one is no reason to refuse"


async def test_oversized_body_is_413(db_url: str) -> None:
    cfg = plain_config(db_url, server__max_body_bytes=1024)
    async with app_client(cfg) as (client, _):
        status, _ = await post_xml(client, WeChatSide(cfg), text_xml("u_big", "字" * 2000))
        assert status == 413


async def test_same_msgid_three_times_concurrently_runs_one_turn(db_url: str) -> None:
    cfg = plain_config(db_url)
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, runtime):
        await post_xml(client, side, text_xml("u_dup", "人工"))
        xml = text_xml("u_dup", "请帮我查一下我的优待证进度", msg_id=987654321)
        results = await asyncio.gather(*(post_xml(client, side, xml) for _ in range(3)))
        assert {s for s, _ in results} == {200}
        contents = {xmltodict.parse(b)["xml"]["Content"] for _, b in results}
        assert len(contents) == 1 and "已收到您的留言" in contents.pop()
        async with runtime.db.session() as s:
            assert (await s.execute(select(func.count(Ticket.id)))).scalar() == 1
            assert await s.get(InboundDedup, "m:u_dup:987654321") is not None


_slow_delay = {"s": 0.0}


@flow
class _SlowFlow(Flow):
    name = "test_slow"
    title = "慢"

    async def start(self, ctx: Context) -> None:
        await asyncio.sleep(_slow_delay["s"])
        ctx.say("慢慢的回复")
        ctx.end()

    async def step(self, ctx: Context) -> None:  # pragma: no cover
        await self.start(ctx)


def _intents_with_slow(tmp_path: Path) -> str:
    d = tmp_path / "intents"
    d.mkdir()
    (d / "core.yaml").write_text((ROOT / "intents" / "core.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (d / "slow.yaml").write_text("intents:\n  - id: slow\n    flow: test_slow\n    examples: [慢一点]\n"
                                 "    keywords: [慢一点]\n", encoding="utf-8")
    return str(d)


async def test_turn_over_budget_answers_success_and_queues_the_reply(db_url: str, tmp_path: Path) -> None:
    cfg = plain_config(db_url, server__reply_budget_s=0.2, bot__intents_dir=_intents_with_slow(tmp_path))
    _slow_delay["s"] = 0.6
    try:
        async with app_client(cfg) as (client, runtime):
            status, body = await post_xml(client, WeChatSide(cfg), text_xml("u_slow", "慢一点", msg_id=555))
            assert (status, body) == (200, "success")
            for _ in range(100):  # the turn finishes in the background
                async with runtime.db.session() as s:
                    rows = (await s.execute(select(OutboxMessage).where(OutboxMessage.openid == "u_slow"))).scalars().all()
                if rows:
                    break
                await asyncio.sleep(0.05)
            assert len(rows) == 1 and rows[0].purpose == "late_reply"
            assert rows[0].payload["text"] == "慢慢的回复"
            # WeChat would not retry after `success`, but if it did, the turn must not run again.
            _slow_delay["s"] = 0.0
            status, body = await post_xml(client, WeChatSide(cfg), text_xml("u_slow", "慢一点", msg_id=555))
            assert body == "success"
            async with runtime.db.session() as s:
                n = (await s.execute(select(func.count(OutboxMessage.id)))).scalar()
            assert n == 1
    finally:
        _slow_delay["s"] = 0.0


async def test_events_subscribe_scene_location_unsubscribe_and_template_status(db_url: str) -> None:
    cfg = plain_config(db_url)
    side = WeChatSide(cfg)
    async with app_client(cfg) as (client, runtime):
        _, body = await post_xml(client, side, event_xml("u_ev", "subscribe", "qrscene_poster2026"))
        assert "欢迎关注" in xmltodict.parse(body)["xml"]["Content"]
        _, body = await post_xml(client, side, event_xml("u_ev", "LOCATION", None,
                                                         extra={"Latitude": 31.2, "Longitude": 107.2, "Precision": 50}))
        assert body == "success"
        _, body = await post_xml(client, side, event_xml("u_ev", "CLICK", "MY_PROFILE"))
        assert "还没有登记" in xmltodict.parse(body)["xml"]["Content"]
        from storage.outbox import Push, enqueue

        async with runtime.db.session() as s:
            await enqueue(s, Push(openid="u_ev", purpose="notice", key="n1", text="通知"), runtime.clock.now())
            await enqueue(s, Push(openid="u_ev", purpose="notice", key="n2", text="通知2"), runtime.clock.now())
            row = (await s.execute(select(OutboxMessage).where(OutboxMessage.idempotency_key == "u_ev:n2"))).scalar_one()
            row.status, row.wechat_msgid = "sent", 6532744578767974183  # 19 digits, as WeChat issues them
        _, body = await post_xml(client, side, event_xml("u_ev", "TEMPLATESENDJOBFINISH", None,
                                                         extra={"MsgID": 6532744578767974183, "Status": "failed:user block"}))
        assert body == "success"
        _, body = await post_xml(client, side, event_xml("u_ev", "unsubscribe"))
        assert body == "success"
        _, body = await post_xml(client, side, event_xml("u_ev", "some_future_event"))
        assert body == "success"
        async with runtime.db.session() as s:
            u = await s.get(User, "u_ev")
            assert u is not None and u.qr_scene == "poster2026"  # the LOCATION report is not stored (issue 18)
            assert u.subscribed is False and u.unsubscribed_at is not None
            rows = {r.idempotency_key: r for r in (await s.execute(select(OutboxMessage))).scalars()}
            assert rows["u_ev:n1"].status == "cancelled"
            assert rows["u_ev:n2"].delivery_status == "failed:user block"


async def test_voice_with_recognition_is_treated_as_text(db_url: str) -> None:
    cfg = plain_config(db_url)
    async with app_client(cfg) as (client, _):
        xml = ("<xml><ToUserName><![CDATA[gh]]></ToUserName><FromUserName><![CDATA[u_voice]]></FromUserName>"
               "<CreateTime>1700000000</CreateTime><MsgType><![CDATA[voice]]></MsgType><MediaId><![CDATA[m]]></MediaId>"
               "<Format><![CDATA[amr]]></Format><Recognition><![CDATA[帮助。]]></Recognition><MsgId>777</MsgId></xml>")
        _, body = await post_xml(client, WeChatSide(cfg), xml)
        assert "我的信息" in xmltodict.parse(body)["xml"]["Content"]


async def test_dead_database_gets_a_clear_text_not_a_500(db_url: str) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    cfg = plain_config(db_url)
    async with app_client(cfg) as (client, runtime):
        dead = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        live = runtime.db.engine
        runtime.db.engine, runtime.db.sessionmaker = dead, async_sessionmaker(dead)
        try:
            status, body = await post_xml(client, WeChatSide(cfg), text_xml("u_dead", "帮助"))
        finally:
            runtime.db.engine = live
            await dead.dispose()
        assert status == 200
        assert "系统繁忙" in xmltodict.parse(body)["xml"]["Content"]


def test_signature_helper_matches_wechat_rule() -> None:
    assert signature("t", "1", "n") == hashlib.sha1("".join(sorted(["t", "1", "n"])).encode()).hexdigest()
