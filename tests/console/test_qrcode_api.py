"""The parameter QR code API: the client's call, the fake's answer (the real response shape, from
wechatpy's recorded response), its checks, and the scenes it remembers for tests."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from bot.fake_wechat import FakeWeChatServer, FaultRule
from bot.wechat_api import MemoryTokenStore, WeChatClient, WeChatError
from tests.conftest import CONFORMANCE

FIXTURE = CONFORMANCE / "wechatpy_api_json" / "qrcode_create.json"
PATH = "/cgi-bin/qrcode/create"


@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    async with FakeWeChatServer() as srv:
        yield srv


@pytest.fixture
async def client(fake: FakeWeChatServer):  # type: ignore[no-untyped-def]
    c = WeChatClient(fake.base_url, fake.state.appid, "secret", MemoryTokenStore(), timeout=2.0)
    yield c
    await c.close()


async def test_create_qrcode_answers_like_the_platform(client: WeChatClient, fake: FakeWeChatServer) -> None:
    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    got = await client.create_qrcode("login:abc", expire_seconds=300)
    assert set(got) == set(recorded) == {"ticket", "expire_seconds", "url"}
    assert got["expire_seconds"] == 300 and got["url"].startswith("https://weixin.qq.com/q/")
    (call,) = [c for c in fake.state.calls if c["path"] == PATH]
    assert call["body"] == {"expire_seconds": 300, "action_name": "QR_STR_SCENE",
                            "action_info": {"scene": {"scene_str": "login:abc"}}}
    async with aiohttp.ClientSession() as http, http.get(fake.base_url + "/__fake__/qrcodes",
                                                         params={"url": got["url"]}) as r:
        (qr,) = (await r.json())["qrcodes"]
    assert qr["scene"] == "login:abc" and qr["ticket"] == got["ticket"]


async def test_the_recorded_response_passes_through_the_client(client: WeChatClient, fake: FakeWeChatServer) -> None:
    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    fake.state.add_fault(FaultRule(path=PATH, body=recorded, count=1))
    assert await client.create_qrcode("s") == recorded


@pytest.mark.parametrize("body", [
    {"action_name": "QR_BAD", "action_info": {"scene": {"scene_str": "x"}}},
    {"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": ""}}, "expire_seconds": 60},
    {"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "x" * 65}}, "expire_seconds": 60},
    {"action_name": "QR_STR_SCENE", "action_info": {"scene": {"scene_str": "x"}}, "expire_seconds": 2592001},
    {"action_name": "QR_SCENE", "action_info": {"scene": {"scene_id": 0}}},
    {"action_name": "QR_LIMIT_SCENE", "action_info": {"scene": {"scene_id": 100001}}},
    {"action_name": "QR_STR_SCENE", "action_info": "x"},
])
async def test_bad_requests_get_40097(client: WeChatClient, body: dict[str, Any]) -> None:
    with pytest.raises(WeChatError) as e:
        await client.request("POST", PATH, json_body=body)
    assert e.value.errcode == 40097


async def test_permanent_codes_have_no_expiry(client: WeChatClient) -> None:
    got = await client.request("POST", PATH, json_body={"action_name": "QR_LIMIT_STR_SCENE",
                                                        "action_info": {"scene": {"scene_str": "team:3"}}})
    assert "expire_seconds" not in got and got["ticket"] and got["url"]


async def test_the_client_refuses_a_scene_wechat_would_refuse(client: WeChatClient) -> None:
    with pytest.raises(ValueError):
        await client.create_qrcode("x" * 65)
