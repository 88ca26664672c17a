"""Voice messages without WeChat's Recognition: media download, the pluggable recogniser (HMAC-signed,
inside or past the reply budget), the once-a-day hint without one, and the counts for staff."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.clock import FakeClock
from bot.fake_wechat import DEMO_VOICE_MEDIA_ID, FakeWeChatServer, fake_openid
from bot.sim import WeChatSide, voice_xml
from bot.sms import sign
from bot.wechat_api import MemoryTokenStore, WeChatClient, WeChatError
from storage.models import OutboxMessage
from storage.voice import voice_counts
from tests.conftest import make_config
from tests.helpers import app_client, post_xml

SECRET = "speech-hmac-secret"
USER = fake_openid(400)


class FakeRecogniser:
    """A loopback speech service: checks the HMAC like a real one would, answers ``{"text"}``.

    ``hold`` (an Event) keeps the answer back until the test sets it: a slow recognition without
    sleeping for time to pass."""

    def __init__(self, text: str = "帮助", status: int = 200) -> None:
        self.text, self.status = text, status
        self.got: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        ok = request.headers.get("X-Vetbot-Signature") == sign(SECRET, raw)
        self.got.append({"bytes": raw, "ok": ok, "type": request.headers.get("Content-Type"),
                         "format": request.headers.get("X-Vetbot-Format"),
                         "key": request.headers.get("X-Vetbot-Idempotency-Key")})
        if not ok:
            return web.Response(status=401, text="bad signature")
        if self.hold is not None:
            await self.hold.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="busy")
        return web.json_response({"text": self.text})

    async def __aenter__(self) -> FakeRecogniser:
        app = web.Application()
        app.router.add_post("/asr", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/asr"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.hold is not None:
            self.hold.set()
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeWeChatServer]:
    async with FakeWeChatServer() as server:
        yield server


async def test_the_fake_serves_voice_media_and_refuses_unknown_ids(fake: FakeWeChatServer) -> None:
    async with WeChatClient(fake.base_url, fake.state.appid, "s", MemoryTokenStore()) as client:
        media = await client.get_media(DEMO_VOICE_MEDIA_ID)
        assert media.content.startswith(b"#!AMR\n") and media.content_type == "audio/amr"
        assert media.filename == f"{DEMO_VOICE_MEDIA_ID}.amr"
        with pytest.raises(WeChatError) as e:
            await client.get_media("no-such-media")
        assert e.value.errcode == 40007
        async with aiohttp.ClientSession() as http:
            await http.post(fake.base_url + "/__fake__/media", json={"media_id": "m2", "base64": "IyFBTVIKPAAA"})
        assert (await client.get_media("m2")).content == b"#!AMR\n<\x00\x00"
        with pytest.raises(WeChatError) as big:
            await client.get_media(DEMO_VOICE_MEDIA_ID, max_bytes=100)
        assert not big.value.transient


async def counts(runtime: Any) -> dict[str, int]:
    async with runtime.db.session() as s:
        return (await voice_counts(s))["total"]


async def test_without_a_recogniser_a_kind_hint_once_a_day(db_url: str) -> None:
    cfg = make_config(db_url)
    clock = FakeClock()
    side = WeChatSide(cfg)
    async with app_client(cfg, clock) as (client, runtime):
        _, first = await post_xml(client, side, voice_xml(USER, DEMO_VOICE_MEDIA_ID))
        assert "语音" in side.read_reply(first)["Content"] and "打字" in side.read_reply(first)["Content"]
        _, second = await post_xml(client, side, voice_xml(USER, DEMO_VOICE_MEDIA_ID))
        assert second == "success"  # not again today
        clock.advance(days=1)
        _, third = await post_xml(client, side, voice_xml(USER, DEMO_VOICE_MEDIA_ID))
        assert "打字" in side.read_reply(third)["Content"]
        # WeChat's own Recognition, where it still comes, is read as text.
        _, rec = await post_xml(client, side, voice_xml(USER, DEMO_VOICE_MEDIA_ID, recognition="帮助"))
        assert "回复数字" in side.read_reply(rec)["Content"] or "1." in side.read_reply(rec)["Content"]
        assert await counts(runtime) == {"wechat": 1, "webhook": 0, "failed": 0, "off": 3}


async def test_the_recogniser_hears_the_voice_within_the_budget(db_url: str, fake: FakeWeChatServer) -> None:
    async with FakeRecogniser("帮助") as asr:
        cfg = make_config(db_url, wechat__api_base=fake.base_url, speech__webhook_url=asr.url,
                          speech__hmac_secret=SECRET)
        side = WeChatSide(cfg)
        async with app_client(cfg, FakeClock()) as (client, runtime):
            status, body = await post_xml(client, side, voice_xml(USER, DEMO_VOICE_MEDIA_ID, fmt="amr"))
            reply = side.read_reply(body)["Content"]
            assert status == 200 and "1." in reply  # the help menu: the voice said 帮助
            (got,) = asr.got
            assert got["ok"] and got["bytes"].startswith(b"#!AMR") and got["type"] == "audio/amr"
            assert got["key"]  # the message's dedup key, for a recogniser that remembers
            assert await counts(runtime) == {"wechat": 0, "webhook": 1, "failed": 0, "off": 0}


async def test_a_slow_recognition_answers_later_through_the_outbox(db_url: str, fake: FakeWeChatServer) -> None:
    async with FakeRecogniser("帮助") as asr:
        asr.hold = asyncio.Event()
        cfg = make_config(db_url, wechat__api_base=fake.base_url, speech__webhook_url=asr.url,
                          speech__hmac_secret=SECRET, server__reply_budget_s="0.3")
        side = WeChatSide(cfg)
        async with app_client(cfg, FakeClock()) as (client, runtime):
            status, body = await post_xml(client, side, voice_xml(USER, DEMO_VOICE_MEDIA_ID))
            assert status == 200 and body == "success"  # WeChat is answered within the budget
            asr.hold.set()
            voice = runtime.dispatcher.voice
            await asyncio.gather(*list(voice._inflight.values()))
            from sqlalchemy import select

            async with runtime.db.session() as s:
                (late,) = (await s.execute(select(OutboxMessage))).scalars()
            assert late.purpose == "late_reply" and "1." in late.payload["text"]
            assert await counts(runtime) == {"wechat": 0, "webhook": 1, "failed": 0, "off": 0}


@pytest.mark.parametrize("problem", ["http_500", "bad_secret", "unknown_media"])
async def test_a_failed_recognition_is_counted_and_hinted(db_url: str, fake: FakeWeChatServer, problem: str) -> None:
    async with FakeRecogniser("帮助", status=500 if problem == "http_500" else 200) as asr:
        cfg = make_config(db_url, wechat__api_base=fake.base_url, speech__webhook_url=asr.url,
                          speech__hmac_secret="wrong" if problem == "bad_secret" else SECRET)
        side = WeChatSide(cfg)
        media = "gone-media" if problem == "unknown_media" else DEMO_VOICE_MEDIA_ID
        async with app_client(cfg, FakeClock()) as (client, runtime):
            _, body = await post_xml(client, side, voice_xml(USER, media))
            assert "打字" in side.read_reply(body)["Content"]
            assert await counts(runtime) == {"wechat": 0, "webhook": 0, "failed": 1, "off": 0}


async def test_voice_counts_by_day(db_url: str) -> None:
    from storage.db import Database
    from storage.voice import count_voice

    db = Database(db_url)
    try:
        async with db.session() as s:
            for d, o in [(date(2026, 4, 4), "off"), (date(2026, 4, 4), "off"), (date(2026, 4, 5), "webhook")]:
                await count_voice(s, d, o)
        async with db.session() as s:
            got = await voice_counts(s)
            since = await voice_counts(s, date(2026, 4, 5))
        assert got["2026-04-04"]["off"] == 2 and got["2026-04-05"]["webhook"] == 1
        assert got["total"] == {"wechat": 0, "webhook": 1, "failed": 0, "off": 2}
        assert "2026-04-04" not in since and json.dumps(got)
        with pytest.raises(ValueError):
            async with db.session() as s:
                await count_voice(s, date(2026, 4, 4), "maybe")
    finally:
        await db.close()


def test_speech_config_is_checked() -> None:
    from bot.config import ConfigError, load_config
    from tests.conftest import ROOT

    with pytest.raises(ConfigError, match=r"speech\.webhook_url must start with http"):
        load_config(ROOT / "config.example.yaml", {"VETBOT_SPEECH__WEBHOOK_URL": "asr.local/x"})
    assert timedelta(seconds=load_config(ROOT / "config.example.yaml", {}).speech.timeout_s)
