"""The fake WeChat API server: token rules, API validation, faults, recording, control endpoints, speed."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.commands import fake_wechat as fake_command
from bot.fake_wechat import OPENID_RE, FakeWeChatServer, fake_openid

APPID = "wx0000000000000000"
SECRET = "s3cret-for-tests"
USER = fake_openid(1)
ROOT = Path(__file__).resolve().parent.parent


class EpochClock:
    """A float clock the fake reads; tests move it instead of sleeping."""

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
async def fake(tclock: EpochClock):
    async with FakeWeChatServer(clock=tclock, appid=APPID, secret=SECRET) as srv:
        yield srv


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, fake: FakeWeChatServer, path: str, body: Any = None,
               params: dict[str, str] | None = None, *, status: int = 200) -> Any:
    async with http.post(fake.base_url + path, json=body, params=params) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json(content_type=None) if status == 200 else await resp.text()


async def get(http: aiohttp.ClientSession, fake: FakeWeChatServer, path: str,
              params: dict[str, str] | None = None) -> Any:
    async with http.get(fake.base_url + path, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(content_type=None)


async def stable(http, fake, *, force: bool = False, appid: str = APPID, secret: str = SECRET,
                 grant_type: str = "client_credential") -> dict[str, Any]:
    body = {"grant_type": grant_type, "appid": appid, "secret": secret, "force_refresh": force}
    return await post(http, fake, "/cgi-bin/stable_token", body)


async def template(http, fake, token: str | None, touser: Any = USER, **extra: Any) -> dict[str, Any]:
    body = {"touser": touser, "template_id": "TPL_CALLUP", "data": {"first": {"value": "集结通知"}}, **extra}
    params = {"access_token": token} if token is not None else None
    return await post(http, fake, "/cgi-bin/message/template/send", body, params)


# -- tokens -------------------------------------------------------------------------------------------


async def test_stable_token_is_reused_until_the_last_five_minutes(http, fake, tclock):
    first = await stable(http, fake)
    assert first["expires_in"] == 7200 and len(first["access_token"]) >= 100
    tclock.advance(1000)
    again = await stable(http, fake)
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] == 6200  # what is left, as the platform reports it
    tclock.advance(6200 - 299)  # inside the last 5 minutes: the platform renews early
    renewed = await stable(http, fake)
    assert renewed["access_token"] != first["access_token"] and renewed["expires_in"] == 7200
    assert (await template(http, fake, first["access_token"]))["errcode"] == 0  # old one until it expires
    tclock.advance(300)
    assert (await template(http, fake, first["access_token"]))["errcode"] == 42001
    assert (await template(http, fake, renewed["access_token"]))["errcode"] == 0


async def test_force_refresh_overlap_interval_and_daily_limit(http, fake, tclock):
    old = (await stable(http, fake))["access_token"]
    new = (await stable(http, fake, force=True))["access_token"]
    assert new != old
    tclock.advance(29)  # forced refreshes less than 30 s apart do nothing
    assert (await stable(http, fake, force=True))["access_token"] == new
    assert (await template(http, fake, old))["errcode"] == 0  # 5-minute overlap
    tclock.advance(-29)
    tclock.advance(299)
    assert (await template(http, fake, old))["errcode"] == 0
    tclock.advance(2)
    expired = await template(http, fake, old)
    assert expired["errcode"] == 40001 and expired["errmsg"].startswith("invalid credential")
    assert " rid: " in expired["errmsg"]
    assert (await template(http, fake, new))["errcode"] == 0
    # The daily quota counts real refreshes only (1 so far: the ignored one did not count).
    await post(http, fake, "/__fake__/config", {"force_refresh_daily_limit": 3})
    third = (await stable(http, fake, force=True))["access_token"]
    assert third != new
    tclock.advance(31)
    assert (await stable(http, fake, force=True))["access_token"] != third
    tclock.advance(31)
    assert (await stable(http, fake, force=True))["errcode"] == 45009


async def test_token_credential_errors(http, fake):
    assert (await stable(http, fake, appid="wx1111111111111111"))["errcode"] == 40013
    assert (await stable(http, fake, secret="wrong"))["errcode"] == 40125
    assert (await stable(http, fake, grant_type="password"))["errcode"] == 40002
    assert (await post(http, fake, "/cgi-bin/stable_token", {"grant_type": "client_credential"}))["errcode"] == 41002
    async with http.post(fake.base_url + "/cgi-bin/stable_token", data=b"{not json") as resp:
        assert (await resp.json(content_type=None))["errcode"] == 47001


async def test_any_secret_is_accepted_when_none_is_configured(http):
    async with FakeWeChatServer() as open_fake:
        assert "access_token" in await stable(http, open_fake, secret="whatever")


async def test_classic_token_always_new_and_isolated_from_stable(http, fake):
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    stable_tok = (await stable(http, fake))["access_token"]
    a = await get(http, fake, "/cgi-bin/token", params)
    b = await get(http, fake, "/cgi-bin/token", params)
    assert a["access_token"] != b["access_token"] and a["expires_in"] == 7200
    assert (await stable(http, fake))["access_token"] == stable_tok
    for tok in (stable_tok, a["access_token"], b["access_token"]):
        assert (await template(http, fake, tok))["errcode"] == 0
    assert (await get(http, fake, "/cgi-bin/token", {**params, "secret": "bad"}))["errcode"] == 40125


async def test_access_token_checks(http, fake):
    assert (await template(http, fake, None))["errcode"] == 41001
    assert (await template(http, fake, "forged"))["errcode"] == 40001
    tok = (await stable(http, fake))["access_token"]
    assert (await post(http, fake, "/__fake__/tokens", {"revoke": "all"}))["revoked"] == 1
    assert (await template(http, fake, tok))["errcode"] == 40001
    fresh = (await stable(http, fake))["access_token"]  # a revoked token is replaced in normal mode
    assert fresh != tok and (await template(http, fake, fresh))["errcode"] == 0


# -- API validation -----------------------------------------------------------------------------------


@pytest.fixture
async def token(http, fake) -> str:
    return (await stable(http, fake))["access_token"]


@pytest.mark.parametrize("touser", [None, "", "张三", "13800138000", "someone@example.com", "o" * 70, 12345])
async def test_touser_must_look_like_an_openid(http, fake, token, touser):
    body = {"template_id": "T", "data": {}}
    if touser is not None:
        body["touser"] = touser
    res = await post(http, fake, "/cgi-bin/message/template/send", body, {"access_token": token})
    assert res["errcode"] == 40003
    custom = {"touser": touser, "msgtype": "text", "text": {"content": "你好"}}
    assert (await post(http, fake, "/cgi-bin/message/custom/send", custom, {"access_token": token}))["errcode"] == 40003


def test_openid_shape():
    assert OPENID_RE.match("o6_bmjrPTlm6_2sgVt7hMZOPfL2M")  # the wechatpy fixture's openid
    assert len(fake_openid(42)) == 28 and OPENID_RE.match(fake_openid(42))
    assert fake_openid(1) != fake_openid(2)


async def test_template_send_returns_increasing_msgids(http, fake, token):
    a = await template(http, fake, token, url="https://example.org/answer?id=1")
    b = await template(http, fake, token)
    assert a["errcode"] == 0 and a["errmsg"] == "ok" and isinstance(a["msgid"], int) and b["msgid"] > a["msgid"]
    missing = await post(http, fake, "/cgi-bin/message/template/send", {"touser": USER, "data": {}},
                         {"access_token": token})
    assert missing["errcode"] == 40037


async def test_user_state_follow_window_quota_and_subscribe(http, fake, token):
    gone, quiet, counted, refused = fake_openid(10), fake_openid(11), fake_openid(12), fake_openid(13)
    await post(http, fake, "/__fake__/users", {
        gone: {"followed": False}, quiet: {"kefu_window": False}, counted: {"kefu_quota": 1},
        refused: {"accept_subscribe": False}, USER: {"subscribe": {"SUB": "accept"}},
    })
    q = {"access_token": token}

    def custom(to: str) -> dict[str, Any]:
        return {"touser": to, "msgtype": "text", "text": {"content": "您好，请回复1确认"}}

    sub = {"template_id": "SUB", "data": {"thing1": {"value": "集结"}}}
    assert (await template(http, fake, token, touser=gone))["errcode"] == 43004
    assert (await post(http, fake, "/cgi-bin/message/subscribe/bizsend", {"touser": gone, **sub}, q))["errcode"] == 43004
    assert (await post(http, fake, "/cgi-bin/message/custom/send", custom(gone), q))["errcode"] == 45015
    assert (await post(http, fake, "/cgi-bin/message/custom/send", custom(quiet), q))["errcode"] == 45015
    assert (await template(http, fake, token, touser=quiet))["errcode"] == 0  # templates need no window
    assert (await post(http, fake, "/cgi-bin/message/custom/send", custom(counted), q))["errcode"] == 0
    assert (await post(http, fake, "/cgi-bin/message/custom/send", custom(counted), q))["errcode"] == 45047
    assert (await post(http, fake, "/cgi-bin/message/subscribe/send", {"touser": refused, **sub}, q))["errcode"] == 43101
    assert (await post(http, fake, "/cgi-bin/message/subscribe/bizsend", {"touser": USER, **sub}, q))["errcode"] == 0
    assert (await get(http, fake, "/__fake__/users"))["users"][counted]["kefu_quota"] == 0


async def test_custom_send_validation(http, fake, token):
    q = {"access_token": token}
    send = "/cgi-bin/message/custom/send"
    assert (await post(http, fake, send, {"touser": USER, "msgtype": "text", "text": {"content": " "}}, q))["errcode"] == 44004
    assert (await post(http, fake, send, {"touser": USER, "msgtype": "fax", "fax": {}}, q))["errcode"] == 40008
    art = {"title": "优待证办理", "description": "材料清单", "url": "https://example.org/a", "picurl": ""}
    one = {"touser": USER, "msgtype": "news", "news": {"articles": [art]}}
    two = {"touser": USER, "msgtype": "news", "news": {"articles": [art, art]}}
    assert (await post(http, fake, send, one, q))["errcode"] == 0
    assert (await post(http, fake, send, two, q))["errcode"] == 45008


async def test_mass_send_dedups_clientmsgid_for_24h(http, fake, token, tclock):
    q = {"access_token": token}
    body = {"filter": {"is_to_all": True}, "msgtype": "text", "text": {"content": "清明祭扫安排"},
            "clientmsgid": "qingming-2026"}
    first = await post(http, fake, "/cgi-bin/message/mass/sendall", body, q)
    assert first["errcode"] == 0 and {"msg_id", "msg_data_id"} <= first.keys()
    repeat = await post(http, fake, "/cgi-bin/message/mass/sendall", body, q)
    assert repeat["errcode"] == 45065 and repeat["msg_id"] == first["msg_id"]
    tclock.advance(86400)
    token2 = (await stable(http, fake))["access_token"]
    later = await post(http, fake, "/cgi-bin/message/mass/sendall", body, {"access_token": token2})
    assert later["errcode"] == 0 and later["msg_id"] != first["msg_id"]
    no_filter = {k: v for k, v in body.items() if k != "filter"}
    assert (await post(http, fake, "/cgi-bin/message/mass/sendall", no_filter, {"access_token": token2}))["errcode"] == 47001


def _leaf(name: str = "政策", **kw: Any) -> dict[str, Any]:
    return {"type": "click", "name": name, "key": "POLICY", **kw}


@pytest.mark.parametrize(("menu", "errcode"), [
    ({"button": []}, 40016),
    ({"button": [_leaf()] * 4}, 40016),
    ({"button": [{"type": "dance", "name": "跳舞", "key": "K"}]}, 40017),
    ({"button": [_leaf(name="优待证办理流程说明")]}, 40018),  # 27 bytes > 16
    ({"button": [{"type": "click", "name": "政策"}]}, 40019),
    ({"button": [{"type": "view", "name": "官网"}]}, 40020),
    ({"button": [{"name": "服务", "sub_button": [_leaf()] * 6}]}, 40023),
    ({"button": [{"name": "服务", "sub_button": [{"type": "dance", "name": "x", "key": "k"}]}]}, 40024),
    ({"button": [{"name": "服务", "sub_button": [_leaf(name="")]}]}, 40025),
    ({"button": [{"name": "服务", "sub_button": [{"type": "view", "name": "官网", "url": ""}]}]}, 40027),
])
async def test_menu_validation(http, fake, token, menu, errcode):
    assert (await post(http, fake, "/cgi-bin/menu/create", menu, {"access_token": token}))["errcode"] == errcode


async def test_valid_menu_is_stored(http, fake, token):
    q = {"access_token": token}
    menu = {"button": [
        _leaf(),
        {"type": "view", "name": "祭英烈", "url": "https://example.org/memorial"},
        {"name": "服务", "sub_button": [
            _leaf(name="招聘信息", key="JOBS"),
            {"type": "location_select", "name": "附近服务站", "key": "NEAR"},
            {"type": "miniprogram", "name": "小程序", "url": "https://example.org", "appid": "wx1", "pagepath": "p"},
        ]},
    ]}
    assert (await post(http, fake, "/cgi-bin/menu/create", menu, q)) == {"errcode": 0, "errmsg": "ok"}
    assert (await get(http, fake, "/cgi-bin/menu/get", q))["menu"] == menu


async def test_user_info(http, fake, token):
    q = {"access_token": token}
    await post(http, fake, "/__fake__/users", {USER: {"nickname": "老兵张", "subscribe_time": 1600000000},
                                               fake_openid(2): {"followed": False}})
    info = await get(http, fake, "/cgi-bin/user/info", {**q, "openid": USER})
    assert info["subscribe"] == 1 and info["openid"] == USER and info["nickname"] == "老兵张"
    assert info["subscribe_time"] == 1600000000 and "followed" not in info
    assert await get(http, fake, "/cgi-bin/user/info", {**q, "openid": fake_openid(2)}) == {
        "subscribe": 0, "openid": fake_openid(2)}
    assert (await get(http, fake, "/cgi-bin/user/info", {**q, "openid": "bad id"}))["errcode"] == 40003


async def test_wrong_method_and_unknown_api(http, fake, token):
    assert (await get(http, fake, "/cgi-bin/message/template/send", {"access_token": token}))["errcode"] == 43002
    assert (await post(http, fake, "/cgi-bin/user/info", {}, {"access_token": token}))["errcode"] == 43001
    assert (await post(http, fake, "/cgi-bin/tags/create", {}, {"access_token": token}))["errcode"] == 48001


# -- recording, faults, control -------------------------------------------------------------------------


async def test_calls_are_recorded_as_sent(http, fake, token):
    raw = json.dumps({"touser": USER, "template_id": "T", "data": {"thing1": {"value": "紧急集结"}}},
                     ensure_ascii=False).encode()
    async with http.post(fake.base_url + "/cgi-bin/message/template/send", data=raw,
                         params={"access_token": token}) as resp:
        assert (await resp.json())["errcode"] == 0
    await get(http, fake, "/__fake__/stats")  # control endpoints are not recorded
    calls = (await get(http, fake, "/__fake__/calls"))["calls"]
    assert [c["path"] for c in calls] == ["/cgi-bin/stable_token", "/cgi-bin/message/template/send"]
    sent = calls[1]
    assert sent["body"] == json.loads(raw) and sent["raw"] == raw.decode() and "紧急集结" in sent["raw"]
    assert sent["query"] == {"access_token": token} and sent["errcode"] == 0 and sent["index"] == 1
    assert isinstance(sent["at"], float)
    only = await get(http, fake, "/__fake__/calls", {"path": "/cgi-bin/message/template/send"})
    assert [c["index"] for c in only["calls"]] == [1] and only["next"] == 2
    assert (await get(http, fake, "/__fake__/calls", {"since": "2"}))["calls"] == []
    stats = await get(http, fake, "/__fake__/stats")
    assert stats["total"] == 2 and stats["by_path"]["/cgi-bin/message/template/send"] == 1


async def test_errcode_fault_applies_count_times_and_is_recorded(http, fake, token):
    path = "/cgi-bin/message/template/send"
    await post(http, fake, "/__fake__/faults", {"path": path, "errcode": 45009, "count": 2})
    results = [(await template(http, fake, token))["errcode"] for _ in range(3)]
    assert results == [45009, 45009, 0]
    calls = (await get(http, fake, "/__fake__/calls", {"path": path}))["calls"]
    assert len(calls) == 3 and [c.get("fault", False) for c in calls] == [True, True, False]
    assert (await get(http, fake, "/__fake__/stats"))["by_errcode"]["45009"] == 2


async def test_fault_answers_before_token_and_status_faults(http, fake):
    path = "/cgi-bin/message/template/send"
    await post(http, fake, "/__fake__/faults", [
        {"path": path, "status": 502},
        {"path": path, "errcode": -1, "errmsg": "system error"},
        {"path": path, "body": "<html>proxy</html>"},
    ])
    async with http.post(fake.base_url + path, json={}) as resp:
        assert resp.status == 502 and "text/html" in resp.content_type
    assert (await template(http, fake, "no-token-needed"))["errmsg"].startswith("system error")
    async with http.post(fake.base_url + path, json={}) as resp:
        assert resp.status == 200 and await resp.text() == "<html>proxy</html>"
    assert (await template(http, fake, None))["errcode"] == 41001  # rules used up


async def test_drop_closes_the_connection(http, fake, token):
    await post(http, fake, "/__fake__/faults", {"path": "/cgi-bin/message/template/send", "drop": True})
    with pytest.raises(aiohttp.ClientError):
        await template(http, fake, token)
    assert (await template(http, fake, token))["errcode"] == 0
    assert (await get(http, fake, "/__fake__/stats"))["by_errcode"]["drop"] == 1


async def test_delay_and_latency_use_asyncio_sleep(http, fake, token):
    """Delays never block the server: while 20 delayed sends sleep, another request is answered."""
    path = "/cgi-bin/message/template/send"
    await post(http, fake, "/__fake__/faults", {"path": path, "delay_ms": 1500, "count": 20})
    await post(http, fake, "/__fake__/config", {"latency_ms": 10})
    t0 = time.perf_counter()
    sends = [asyncio.ensure_future(template(http, fake, token)) for _ in range(20)]
    await asyncio.sleep(0)
    await get(http, fake, "/__fake__/stats")  # answered while the sends are still sleeping
    assert not any(t.done() for t in sends), "a delayed call blocked the fake's event loop"
    results = await asyncio.gather(*sends)
    assert all(r["errcode"] == 0 for r in results)  # a delay-only rule answers normally
    assert time.perf_counter() - t0 >= 1.5  # the delay was applied (a lower bound only)


async def test_wildcard_probability_and_reset(http, fake, token):
    await post(http, fake, "/__fake__/faults", {"path": "*", "errcode": -1, "count": -1})
    assert (await template(http, fake, token))["errcode"] == -1
    assert (await stable(http, fake))["errcode"] == -1
    await post(http, fake, "/__fake__/faults", [{"path": "/x", "probability": 2}], status=400)
    await post(http, fake, "/__fake__/faults", {"path": "/x", "nonsense": 1}, status=400)
    await post(http, fake, "/__fake__/users", {USER: {"followed": False}})
    await post(http, fake, "/__fake__/reset", {})
    assert (await get(http, fake, "/__fake__/calls"))["calls"] == []
    assert (await get(http, fake, "/__fake__/faults"))["faults"] == []
    assert (await get(http, fake, "/__fake__/users"))["users"] == {}
    assert (await template(http, fake, token))["errcode"] == 40001  # tokens are gone too
    fresh = (await stable(http, fake))["access_token"]
    assert (await template(http, fake, fresh))["errcode"] == 0


async def test_probability_fault_hits_a_share(http, fake, token):
    await post(http, fake, "/__fake__/faults", {"path": "/cgi-bin/message/template/send", "errcode": 45011,
                                                "count": -1, "probability": 0.5})
    codes = [(await template(http, fake, token))["errcode"] for _ in range(60)]
    assert 0 < codes.count(45011) < 60 and set(codes) == {0, 45011}


async def test_config_and_clock_endpoints(http, fake, tclock):
    cfg = await post(http, fake, "/__fake__/config", {"latency_ms": 20, "token_ttl": 600})
    assert cfg["latency_ms"] == 20 and cfg["token_ttl"] == 600 and cfg["appid"] == APPID
    await post(http, fake, "/__fake__/config", {"bogus": 1}, status=400)
    await post(http, fake, "/__fake__/config", {"latency_ms": 0})
    tok = await stable(http, fake)
    assert tok["expires_in"] == 600
    clock = await post(http, fake, "/__fake__/clock", {"advance": 600})
    assert clock["now"] == tclock() + 600
    assert (await template(http, fake, tok["access_token"]))["errcode"] == 42001


# -- CLI and throughput -----------------------------------------------------------------------------------


def test_cli_registration():
    parser = argparse.ArgumentParser(prog="vetbot")
    fake_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["fake-wechat", "--port", "0", "--latency-ms", "20"])
    assert args.func is fake_command.run and args.port == 0 and args.latency_ms == 20
    assert args.host == "127.0.0.1"
    defaults = parser.parse_args(["fake-wechat"])
    assert defaults.port == 8081 and defaults.latency_ms == 0




# -- WeChat's template rules of today, 订阅通知, media, JS-SDK ----------------------------------------------

TEMPLATES = {
    "TPL_CALLUP": {"type": "template", "title": "应急集结通知",
                   "fields": {"thing1": "集结事项", "thing2": "集合地点", "time3": "集合时间"}},
    "SUB_CALLUP": {"type": "subscribe", "title": "应急集结通知", "kind": "long_term",
                   "fields": {"thing1": "集结事项", "time2": "集合时间"}},
    "SUB_ONCE": {"type": "subscribe", "title": "岗位推荐", "kind": "one_time", "fields": {"thing1": "岗位"}},
}


def values(**kw: str) -> dict[str, dict[str, str]]:
    return {k: {"value": v} for k, v in kw.items()}


async def send(http, fake, token, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    out = await post(http, fake, path, body, {"access_token": token})
    return out, fake.state.calls[-1]


async def test_template_messages_are_recorded_as_wechat_shows_them(http, fake, token):
    await post(http, fake, "/__fake__/templates", TEMPLATES)
    out, call = await send(http, fake, token, "/cgi-bin/message/template/send", {
        "touser": USER, "template_id": "TPL_CALLUP", "url": "https://example.org/r/1",
        "data": {"first": {"value": "您有新的集结任务"}, "remark": {"value": "请点击回复：到 / 晚到 / 不能到"},
                 **values(thing1="【应急集结】城南河段防汛抢险（第二批）请立即出发", thing2="城南水文站\n东侧🙂", time3="7月1日 21:30")}})
    assert out["errcode"] == 0  # first/remark and long values are accepted…
    r = call["rendered"]
    assert r["title"] == "应急集结通知" and r["url"] == "https://example.org/r/1"
    # …but not shown: no first/remark, 20 characters with …, no line breaks, no emoji.
    assert r["fields"] == [
        {"name": "thing1", "label": "集结事项", "value": "【应急集结】城南河段防汛抢险（第二批）…"},
        {"name": "thing2", "label": "集合地点", "value": "城南水文站 东侧"},
        {"name": "time3", "label": "集合时间", "value": "7月1日 21:30"}]
    assert r["hidden"] == ["first", "remark"]


@pytest.mark.parametrize(("data", "errcode"), [
    (values(time3="明天晚上"), 47003),                 # not a time
    (values(time3="2026-07-01"), 47003),               # a date is not a time
    (values(phrase1="正在路上了吗"), 47003),           # a phrase: at most 5 Chinese characters
    (values(phrase1="OK"), 47003),
    (values(number1="12a"), 47003),
    (values(remark5="跟进"), 47003),                   # no such keyword type in a category template
    (values(time3="2026年7月1日 21:30"), 0),
    (values(time3="21:30"), 0),
    (values(time3="7月1日 21:30~22:00"), 0),
    (values(thing1="x" * 40), 0),                     # a long thing is cut on display, not refused
])
async def test_template_values_wechat_refuses(http, fake, token, data, errcode):
    out, call = await send(http, fake, token, "/cgi-bin/message/template/send",
                           {"touser": USER, "template_id": "ANY", "data": data})
    assert out["errcode"] == errcode
    if errcode:
        assert out["errmsg"].startswith(f"argument invalid! data.{next(iter(data))}.value")
        assert "rendered" not in call


async def test_unknown_template_ids_once_the_account_has_templates(http, fake, token):
    ok = {"touser": USER, "template_id": "ANYTHING", "data": values(thing1="x")}
    assert (await send(http, fake, token, "/cgi-bin/message/template/send", ok))[0]["errcode"] == 0  # a fresh fake
    await post(http, fake, "/__fake__/templates", TEMPLATES)
    assert (await send(http, fake, token, "/cgi-bin/message/template/send", ok))[0]["errcode"] == 40037
    # A 订阅通知 id is not a template message id, nor the other way round.
    wrong = {**ok, "template_id": "SUB_CALLUP"}
    assert (await send(http, fake, token, "/cgi-bin/message/template/send", wrong))[0]["errcode"] == 40037
    wrong = {**ok, "template_id": "TPL_CALLUP"}
    assert (await send(http, fake, token, "/cgi-bin/message/subscribe/bizsend", wrong))[0]["errcode"] == 40037
    assert (await get(http, fake, "/__fake__/templates"))["templates"]["SUB_ONCE"]["kind"] == "one_time"


async def test_bizsend_needs_consent_and_valid_values(http, fake, token):
    await post(http, fake, "/__fake__/templates", TEMPLATES)
    path = "/cgi-bin/message/subscribe/bizsend"
    body = {"touser": USER, "template_id": "SUB_CALLUP", "page": "https://example.org/r/1",
            "data": values(thing1="城南河段防汛", time2="7月1日 21:30")}
    assert (await send(http, fake, token, path, body))[0]["errcode"] == 43101  # never asked
    answer = await post(http, fake, "/__fake__/subscribe",
                        {"openid": USER, "templates": {"SUB_CALLUP": "accept", "SUB_ONCE": "accept"}, "scene": 1})
    # The event WeChat sends the bot, in the official format.
    assert "<Event><![CDATA[subscribe_msg_popup_event]]></Event>" in answer["xml"]
    assert "<SubscribeStatusString><![CDATA[accept]]></SubscribeStatusString>" in answer["xml"]
    out, call = await send(http, fake, token, path, body)
    assert out["errcode"] == 0 and call["rendered"]["fields"][0] == {"name": "thing1", "label": "集结事项",
                                                                       "value": "城南河段防汛"}
    assert (await send(http, fake, token, path, body))[0]["errcode"] == 0  # long-term: again
    once = {"touser": USER, "template_id": "SUB_ONCE", "data": values(thing1="保安")}
    assert (await send(http, fake, token, path, once))[0]["errcode"] == 0
    assert (await send(http, fake, token, path, once))[0]["errcode"] == 43101  # one-time: used up
    # 订阅通知 refuses what a template message would only cut.
    long = {**body, "data": values(thing1="城南水文站东侧二号堤坝北端集合点沿河堤路进入", time2="7月1日 21:30")}
    out, _ = await send(http, fake, token, path, long)
    assert out["errcode"] == 47003 and "data.thing1.value" in out["errmsg"]
    for bad in ({**body, "page": "javascript:alert(1)"}, {**body, "data": {}}, {**body, "data": values(first="x")}):
        assert (await send(http, fake, token, path, bad))[0]["errcode"] in (47001, 47003)
    assert (await send(http, fake, token, path, {**body, "touser": "张三"}))[0]["errcode"] == 40003
    # Turned off in WeChat's settings: refused again.
    await post(http, fake, "/__fake__/subscribe", {"openid": USER, "templates": {"SUB_CALLUP": "reject"},
                                                   "event": "change"})
    assert (await send(http, fake, token, path, body))[0]["errcode"] == 43101
    consents = (await get(http, fake, "/__fake__/subscribe"))["consents"]
    assert {(c["template_id"], c["status"]) for c in consents} == {("SUB_CALLUP", "reject"), ("SUB_ONCE", "accept")}


async def test_jsapi_ticket_is_kept_and_renewed_like_a_token(http, fake, token, tclock):
    from bot.jssdk import signature

    q = {"access_token": token}
    first = await get(http, fake, "/cgi-bin/ticket/getticket", {**q, "type": "jsapi"})
    assert first["errcode"] == 0 and first["expires_in"] == 7200 and first["ticket"]
    again = await get(http, fake, "/cgi-bin/ticket/getticket", {**q, "type": "jsapi"})
    assert again["ticket"] == first["ticket"]
    assert (await get(http, fake, "/cgi-bin/ticket/getticket", {**q, "type": "nope"}))["errcode"] == 40097
    url = "https://vet.example.gov.cn/notices/abc?x=1"
    sig = signature(first["ticket"], "n0nce", 1775000000, url)
    verify = {"url": url + "#frag", "nonceStr": "n0nce", "timestamp": 1775000000, "signature": sig}
    assert await post(http, fake, "/__fake__/jssdk/verify", verify) == {"ok": True, "reason": None}
    assert (await post(http, fake, "/__fake__/jssdk/verify", {**verify, "nonceStr": "other"}))["ok"] is False
    tclock.advance(7200 - 299)
    renewed = await get(http, fake, "/cgi-bin/ticket/getticket", {**q, "type": "jsapi"})
    assert renewed["ticket"] != first["ticket"]


async def test_demo_openid_rule_takes_the_readmes_ids_but_not_names_or_phones(http, fake, token):
    body = {"template_id": "T", "data": values(thing1="通知")}
    for openid in ("my_openid", "staff_demo", "u_veteran_1", "chat_user"):
        assert (await template(http, fake, token, touser=openid, data=body["data"]))["errcode"] == 40003
    await post(http, fake, "/__fake__/config", {"openid_rule": "demo"})
    for openid in ("my_openid", "staff_demo", "u_veteran_1", "chat_user", USER):
        assert (await template(http, fake, token, touser=openid, data=body["data"]))["errcode"] == 0
    for openid in ("张三", "13800138000", "", "a b", "x" * 65):
        assert (await template(http, fake, token, touser=openid, data=body["data"]))["errcode"] == 40003
    resp = await http.post(fake.base_url + "/__fake__/config", json={"openid_rule": "lenient"})
    assert resp.status == 400
