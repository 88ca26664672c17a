"""The async WeChat API client against the fake server: tokens, recovery, error mapping, conformance data."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.fake_wechat import FakeWeChatServer, fake_openid
from bot.wechat_api import (
    InvalidArgument,
    InvalidOpenid,
    InvalidTemplate,
    IPNotWhitelisted,
    MemoryTokenStore,
    NoConsent,
    OutOfWindow,
    OverQuota,
    RateLimited,
    SystemBusy,
    TokenInvalid,
    TokenStore,
    Unfollowed,
    WeChatClient,
    WeChatError,
    WeChatTransportError,
    check_response,
    error_for,
)

APPID = "wx0000000000000000"
SECRET = "s3cret-for-tests"
USER = fake_openid(1)
TEMPLATE = "/cgi-bin/message/template/send"
STABLE = "/cgi-bin/stable_token"
SHARED = Path(os.environ.get("VETBOT_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
API_FIXTURES = SHARED / "wechat-conformance" / "wechatpy_api_json"


class EpochClock:
    """One float clock for the fake, the client and the store; tests move it instead of sleeping."""

    def __init__(self, start: float = 1_775_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def tclock() -> EpochClock:
    return EpochClock()


@pytest.fixture
async def fake(tclock):
    async with FakeWeChatServer(clock=tclock, appid=APPID, secret=SECRET) as srv:
        yield srv


@pytest.fixture
def store(tclock) -> MemoryTokenStore:
    return MemoryTokenStore(clock=tclock)


@pytest.fixture
async def client(fake, store, tclock):
    c = WeChatClient(fake.base_url, APPID, SECRET, store, timeout=2.0, clock=tclock)
    yield c
    await c.close()


def calls(fake: FakeWeChatServer, path: str) -> list[dict[str, Any]]:
    return [c for c in fake.state.calls if c["path"] == path]


async def control(fake: FakeWeChatServer, path: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as http, http.post(fake.base_url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def fault(fake: FakeWeChatServer, **rule: Any) -> None:
    await control(fake, "/__fake__/faults", rule)


# -- tokens -------------------------------------------------------------------------------------------


async def test_token_is_fetched_once_and_reused(client, fake):
    first = await client.access_token()
    assert await client.access_token() == first
    await client.send_template(USER, "T", {"first": "你好"})
    (call,) = calls(fake, STABLE)
    assert call["body"] == {"grant_type": "client_credential", "appid": APPID, "secret": SECRET,
                            "force_refresh": False}
    assert calls(fake, TEMPLATE)[0]["query"]["access_token"] == first


async def test_token_refreshed_inside_the_margin_without_forcing(client, fake, tclock):
    first = await client.access_token()
    tclock.advance(7200 - 250)  # inside the 300 s margin and the platform's early-renewal window
    second = await client.access_token()
    assert second != first
    assert [c["body"]["force_refresh"] for c in calls(fake, STABLE)] == [False, False]
    assert await client.access_token() == second
    assert len(calls(fake, STABLE)) == 2


async def test_wide_margin_does_not_hammer_the_token_endpoint(fake, store, tclock):
    # With a 600 s margin the platform still hands back the same token between 600 s and 300 s left;
    # the client must keep using it instead of asking on every call.
    async with WeChatClient(fake.base_url, APPID, SECRET, store, refresh_margin=600, clock=tclock) as c:
        first = await c.access_token()
        tclock.advance(7200 - 500)
        for _ in range(10):
            assert await c.access_token() == first
        assert len(calls(fake, STABLE)) == 2
        tclock.advance(250)  # 250 s left: the platform renews now
        assert await c.access_token() != first
        assert not any(c["body"]["force_refresh"] for c in calls(fake, STABLE))


async def test_40001_on_one_call_refreshes_once_and_retries(client, fake):
    old = await client.access_token()
    await fault(fake, path=TEMPLATE, errcode=40001, count=1)
    msgid = await client.send_template(USER, "T", {"first": "集结"})
    assert isinstance(msgid, int)
    sends = calls(fake, TEMPLATE)
    assert len(sends) == 2 and sends[0]["query"]["access_token"] == old
    assert sends[1]["query"]["access_token"] != old
    # Normal mode first (free); it returned the refused token, so one forced refresh followed.
    assert [c["body"]["force_refresh"] for c in calls(fake, STABLE)] == [False, False, True]
    assert (await client.token_store.load())[0] == sends[1]["query"]["access_token"]


async def test_two_token_errors_in_a_row_raise(client, fake):
    await fault(fake, path=TEMPLATE, errcode=42001, count=2)
    with pytest.raises(TokenInvalid) as info:
        await client.send_template(USER, "T", {"first": "集结"})
    assert info.value.errcode == 42001 and not info.value.transient
    assert "still refused after one token refresh" in str(info.value)
    assert len(calls(fake, TEMPLATE)) == 2  # one retry, no more
    assert len(calls(fake, STABLE)) <= 3


async def test_revoked_token_recovers_without_forced_refresh(client, fake):
    await client.access_token()
    await control(fake, "/__fake__/tokens", {"revoke": "all"})
    await client.send_custom_text(USER, "您好")
    assert [c["body"]["force_refresh"] for c in calls(fake, STABLE)] == [False, False]
    assert [c["errcode"] for c in calls(fake, "/cgi-bin/message/custom/send")] == [40001, 0]


async def test_expired_token_on_the_server_recovers(fake, store, tclock):
    # The client's clock ran 500 s slow (e.g. a suspended VM): the platform says 42001 first.
    lagging = EpochClock(tclock())
    async with WeChatClient(fake.base_url, APPID, SECRET, MemoryTokenStore(clock=lagging),
                            clock=lagging) as c:
        await c.access_token()
        tclock.advance(7300)  # expired on the platform; 400 s left by the client's clock
        lagging.advance(6800)
        await c.send_template(USER, "T", {"thing1": "b"})
        assert [x["errcode"] for x in calls(fake, TEMPLATE)] == [42001, 0]


async def test_two_clients_share_one_token_under_concurrency(fake, store, tclock):
    a = WeChatClient(fake.base_url, APPID, SECRET, store, clock=tclock)
    b = WeChatClient(fake.base_url, APPID, SECRET, store, clock=tclock)
    try:
        results = await asyncio.gather(*(
            (a if i % 2 else b).send_template(fake_openid(i), "T", {"thing1": str(i)}) for i in range(20)
        ))
        assert len(set(results)) == 20
        assert len(calls(fake, STABLE)) == 1
        assert len({c["query"]["access_token"] for c in calls(fake, TEMPLATE)}) == 1
        # A token error seen by 10 calls at once still causes one refresh cycle (normal + forced).
        await fault(fake, path=TEMPLATE, errcode=40001, count=10)
        await asyncio.gather(*((a if i % 2 else b).send_template(USER, "T", {}) for i in range(10)))
        assert [c["body"]["force_refresh"] for c in calls(fake, STABLE)] == [False, False, True]
    finally:
        await a.close()
        await b.close()


def test_memory_store_satisfies_the_protocol():
    assert isinstance(MemoryTokenStore(), TokenStore)


async def test_memory_store_contract(tclock):
    store = MemoryTokenStore(clock=tclock)
    asked: list[bool] = []

    async def fetch(force: bool) -> tuple[str, int]:
        asked.append(force)
        return f"T{len(asked)}", 7200

    assert await store.load() is None
    assert await store.refresh(fetch, None) == "T1"
    assert await store.load() == ("T1", tclock() + 7200)
    assert await store.refresh(fetch, "OLD") == "T1"  # valid and not the stale one: no fetch
    assert await store.refresh(fetch, "T1") == "T2"  # the stored one is the stale one: forced
    tclock.advance(7200)
    assert await store.refresh(fetch, None) == "T3"  # expired
    assert asked == [False, True, False]

    async def failing(force: bool) -> tuple[str, int]:
        raise WeChatTransportError("down", "/cgi-bin/stable_token")

    with pytest.raises(WeChatTransportError):
        await store.refresh(failing, "T3")
    assert (await store.load())[0] == "T3"


async def test_token_endpoint_errors_are_mapped(fake, tclock):
    async with WeChatClient(fake.base_url, APPID, "wrong", MemoryTokenStore(clock=tclock), clock=tclock) as c:
        with pytest.raises(WeChatError) as info:
            await c.send_custom_text(USER, "x")
        assert info.value.errcode == 40125 and type(info.value) is WeChatError and not info.value.transient
        assert "wrong" not in repr(c)
    async with WeChatClient(fake.base_url, APPID, SECRET, MemoryTokenStore(clock=tclock), clock=tclock) as c:
        await fault(fake, path=STABLE, errcode=40164)
        with pytest.raises(IPNotWhitelisted):
            await c.access_token()
        await fault(fake, path=STABLE, status=502)
        with pytest.raises(WeChatTransportError):
            await c.access_token()
        assert await c.access_token()
    assert not calls(fake, TEMPLATE)


# -- error mapping -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("errcode", "cls", "transient"), [
    (40001, TokenInvalid, False),
    (40014, TokenInvalid, False),
    (42001, TokenInvalid, False),
    (45015, OutOfWindow, False),
    (45047, OverQuota, False),
    (45009, RateLimited, True),
    (45011, RateLimited, True),
    (-1, SystemBusy, True),
    (43004, Unfollowed, False),
    (40003, InvalidOpenid, False),
    (40164, IPNotWhitelisted, False),
    (40037, InvalidTemplate, False),
    (43101, NoConsent, False),
    (47003, InvalidArgument, False),
    (45065, WeChatError, False),
])
async def test_fault_errcodes_map_to_typed_errors(client, fake, errcode, cls, transient):
    # Token errors are answered twice so that the retry fails as well.
    await fault(fake, path=TEMPLATE, errcode=errcode, count=2)
    with pytest.raises(WeChatError) as info:
        await client.send_template(USER, "T", {"thing1": "b"})
    err = info.value
    assert type(err) is cls and err.errcode == errcode and err.transient is transient
    assert err.path == TEMPLATE and err.errmsg
    expected_attempts = 2 if cls is TokenInvalid else 1
    assert len(calls(fake, TEMPLATE)) == expected_attempts


def test_rate_limited_suggests_when_to_retry():
    assert error_for(45011, "minute", "/p").retry_after == 60
    # 2026-04-04 23:00 Beijing = 15:00 UTC: the daily quota comes back in one hour.
    assert error_for(45009, "daily", "/p", now=1_775_314_800.0).retry_after == pytest.approx(3600)


async def test_out_of_window_and_unfollowed_from_user_state(client, fake):
    quiet, gone = fake_openid(20), fake_openid(21)
    await control(fake, "/__fake__/users", {quiet: {"kefu_window": False}, gone: {"followed": False}})
    with pytest.raises(OutOfWindow) as info:
        await client.send_custom_text(quiet, "您好")
    assert info.value.errcode == 45015 and info.value.transient is False
    with pytest.raises(Unfollowed) as info2:
        await client.send_template(gone, "T", {"thing1": "b"})
    assert info2.value.errcode == 43004 and not info2.value.transient
    with pytest.raises(InvalidOpenid):
        await client.send_template("张三", "T", {"thing1": "b"})


async def test_http_502_is_a_transient_transport_error(client, fake):
    await fault(fake, path=TEMPLATE, status=502)
    with pytest.raises(WeChatTransportError) as info:
        await client.send_template(USER, "T", {"thing1": "b"})
    assert info.value.transient and info.value.status == 502 and info.value.errcode is None
    assert isinstance(info.value, WeChatError)
    assert len(calls(fake, TEMPLATE)) == 1  # no retry inside the client


async def test_dropped_connection_is_a_transport_error(client, fake):
    await client.access_token()
    await fault(fake, path=TEMPLATE, drop=True)
    with pytest.raises(WeChatTransportError) as info:
        await client.send_template(USER, "T", {"thing1": "b"})
    assert info.value.transient
    assert client.token_store is not None and (await client.token_store.load())[0] not in str(info.value)


async def test_delay_beyond_timeout_is_a_transport_error(fake, store, tclock):
    async with WeChatClient(fake.base_url, APPID, SECRET, store, timeout=0.1, clock=tclock) as c:
        await c.access_token()
        await fault(fake, path=TEMPLATE, delay_ms=2000)
        with pytest.raises(WeChatTransportError) as info:
            await c.send_template(USER, "T", {"thing1": "b"})
        assert info.value.transient and "0.1 s" in str(info.value)


@pytest.mark.parametrize(("body", "status"), [("<html>gateway</html>", 200), ("[1, 2]", 200), ("", 200),
                                              ("not found", 404)])
async def test_non_json_or_odd_bodies_are_transport_errors(client, fake, body, status):
    await fault(fake, path=TEMPLATE, body=body, status=status)
    with pytest.raises(WeChatTransportError) as info:
        await client.send_template(USER, "T", {"thing1": "b"})
    assert info.value.transient is (status != 404)


def test_errors_pickle():
    for err in (error_for(43004, "require subscribe", "/p"), WeChatTransportError("HTTP 502", "/p", status=502)):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err) and back.transient == err.transient


# -- requests as sent ----------------------------------------------------------------------------------------


async def test_bodies_are_utf8_json_with_raw_chinese(client, fake):
    msgid = await client.send_template(USER, "TPL", {"first": "紧急集结", "remark": {"value": "请回复", "color": "#173177"}},
                                       url="https://example.org/r?id=1")
    (sent,) = calls(fake, TEMPLATE)
    assert sent["body"] == {"touser": USER, "template_id": "TPL", "url": "https://example.org/r?id=1",
                            "data": {"first": {"value": "紧急集结"}, "remark": {"value": "请回复", "color": "#173177"}}}
    assert "紧急集结" in sent["raw"] and "\\u" not in sent["raw"]
    assert sent["errcode"] == 0 and msgid > 0


async def test_every_api_method_hits_its_endpoint(client, fake):
    art = {"title": "优待证", "description": "办理流程", "url": "https://example.org/a", "picurl": ""}
    await client.send_custom_news(USER, [art])
    await client.send_custom(USER, "image", {"media_id": "MEDIA"})
    fake.state.subscribe_choice(USER, "SUB", "accept")
    await client.send_subscribe(USER, "SUB", {"thing1": "集结"}, page="https://example.org/p")
    mass = await client.mass_send_text("清明祭扫安排", clientmsgid="qm-2026")
    assert {"msg_id", "msg_data_id"} <= mass.keys()
    with pytest.raises(WeChatError) as dup:
        await client.mass_send_text("清明祭扫安排", clientmsgid="qm-2026")
    assert dup.value.errcode == 45065 and not dup.value.transient
    await client.mass_send_text("老兵座谈", clientmsgid="t-1", tag_id=100)
    await client.create_menu({"button": [{"type": "click", "name": "政策", "key": "POLICY"}]})
    info = await client.user_info(USER)
    assert info["subscribe"] == 1 and info["openid"] == USER
    got = {c["path"]: c["body"] for c in fake.state.calls}
    assert got["/cgi-bin/message/subscribe/bizsend"] == {"touser": USER, "template_id": "SUB",
                                                         "data": {"thing1": {"value": "集结"}},
                                                         "page": "https://example.org/p"}
    mass_bodies = [c["body"] for c in calls(fake, "/cgi-bin/message/mass/sendall")]
    assert mass_bodies[0]["filter"] == {"is_to_all": True} and mass_bodies[0]["clientmsgid"] == "qm-2026"
    assert mass_bodies[2]["filter"] == {"is_to_all": False, "tag_id": 100}
    customs = [c["body"]["msgtype"] for c in calls(fake, "/cgi-bin/message/custom/send")]
    assert customs == ["news", "image"]
    assert calls(fake, "/cgi-bin/user/info")[0]["query"]["openid"] == USER


async def test_shared_session_is_not_closed(fake, store, tclock):
    async with aiohttp.ClientSession() as session:
        c = WeChatClient(fake.base_url + "/", APPID, SECRET, store, session=session, clock=tclock)
        await c.send_custom_text(USER, "x")
        await c.close()
        assert not session.closed


# -- conformance: wechatpy's recorded API responses ------------------------------------------------------------


def _fixtures_with_errcode() -> list[Path]:
    out = []
    for path in sorted(API_FIXTURES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "errcode" in data:
            out.append(path)
    return out


FIXTURES = _fixtures_with_errcode()


def test_conformance_corpus_is_present():
    assert API_FIXTURES.is_dir(), f"missing {API_FIXTURES} (set VETBOT_SHARED)"
    assert len(FIXTURES) >= 40


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
async def test_conformance_fixture_through_the_client(client, fake, path):
    """Serve the recorded response through the fake and check the client's mapping of its errcode."""
    data = json.loads(path.read_text(encoding="utf-8"))
    api = "/cgi-bin/" + path.stem.replace("_", "/")
    await fault(fake, path=api, body=data)
    errcode = int(data["errcode"])
    if errcode == 0:  # "ok", "", "success." or no errmsg at all: all successes
        assert await client.request("POST", api, json_body={}) == data
    else:
        with pytest.raises(WeChatError) as info:
            await client.request("POST", api, json_body={})
        assert info.value.errcode == errcode


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
@pytest.mark.parametrize(("errcode", "cls"), [(-1, SystemBusy), (45015, OutOfWindow), (40164, IPNotWhitelisted),
                                              (61451, WeChatError)])
def test_conformance_fixture_with_error_codes(path, errcode, cls):
    """The same response shapes, with their errcode replaced, map to the typed errors."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert check_response(data, "/p") is data
    with pytest.raises(WeChatError) as info:
        check_response({**data, "errcode": errcode}, "/p")
    assert type(info.value) is cls and info.value.errcode == errcode
    with pytest.raises(type(info.value)):
        check_response({**data, "errcode": str(errcode)}, "/p")  # some gateways send strings
