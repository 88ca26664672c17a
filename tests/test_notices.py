"""订阅通知 end to end: WeChat's consent events through the gateway, the offer in chat, the subscribe page
with its JS-SDK signature checked by the fake WeChat client, and the full-text page of a push."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from wechatpy import parse_message

from bot.clock import FakeClock
from bot.config import Config
from bot.fake_wechat import FakeWeChatServer, fake_openid, templates_of
from bot.gateway import to_inbound
from bot.jssdk import signature
from bot.sim import WeChatSide, subscribe_event_xml
from bot.web.render import static_version
from flows.notices import NOTICES_KIND
from storage import linktokens
from storage.subscribe import SubscribeConsent, consents_of
from tests.conftest import CONFORMANCE, make_config
from tests.helpers import app_client, post_xml, viewer_cookie

XML = CONFORMANCE / "xml"
WECHAT_UA = ("Mozilla/5.0 (Linux; Android 13) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
             "MicroMessenger/8.0.47.2560(0x28002F30) NetType/WIFI Language/zh_CN")
USER = fake_openid(300)


def _inbound(name: str) -> Any:
    return to_inbound(parse_message((XML / name).read_text(encoding="utf-8")))


def test_the_official_event_samples_carry_their_lists() -> None:
    popup = _inbound("wechatpy__test_events__EventsTestCase.test_template_subscribe_msg_popup_event.xml")
    assert popup.kind == "event" and popup.event == "subscribe_msg_popup_event"
    assert [(e["template_id"], e["status"], e["scene"]) for e in popup.extra["subscribe"]] == [
        ("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "accept", "2"),
        ("9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI", "reject", "2")]
    change = _inbound("wechatpy__test_events__EventsTestCase.test_template_subscribe_msg_change_event.xml")
    assert [(e["template_id"], e["status"]) for e in change.extra["subscribe"]] == [
        ("VRR0UEO9VJOLs0MHlU0OilqX6MVFDwH3_3gz3Oc0NIc", "reject")]
    sent = _inbound("wechatpy__test_events__EventsTestCase.test_template_subscribe_msg_sent_event.xml")
    (e,) = sent.extra["subscribe"]
    assert e["msg_id"] == 1700827132819554304 and e["error_code"] == "0" and e["error_status"] == "success"


def test_a_change_event_in_the_popup_wrapper_is_read_too() -> None:
    # The official doc's change-event sample wraps its List in SubscribeMsgPopupEvent.
    xml = (XML / "wechatpy__test_events__EventsTestCase.test_template_subscribe_msg_change_event.xml").read_text()
    xml = xml.replace("SubscribeMsgChangeEvent", "SubscribeMsgPopupEvent")
    assert to_inbound(parse_message(xml)).extra["subscribe"][0]["status"] == "reject"


@pytest.mark.parametrize("body", [
    "<SubscribeMsgPopupEvent><List>oops</List></SubscribeMsgPopupEvent>",
    "<SubscribeMsgPopupEvent></SubscribeMsgPopupEvent>",
    "<SubscribeMsgPopupEvent><List><SubscribeStatusString>accept</SubscribeStatusString></List></SubscribeMsgPopupEvent>",
])
def test_odd_event_bodies_give_an_empty_list(body: str) -> None:
    xml = ("<xml><ToUserName>gh</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>"
           f"<MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event>{body}</xml>")
    assert to_inbound(parse_message(xml)).extra["subscribe"] == []


async def test_popup_change_and_sent_events_keep_each_persons_consent(db_url: str, config: Config) -> None:
    tid = config.templates["callup"].subscribe.template_id
    one_time = "SUB_UNKNOWN_ONE_TIME_TEMPLATE"
    side = WeChatSide(config)
    async with app_client(config, FakeClock()) as (client, runtime):
        status, body = await post_xml(client, side, subscribe_event_xml(USER, "subscribe_msg_popup_event", [
            {"TemplateId": tid, "SubscribeStatusString": "accept", "PopupScene": "1"},
            {"TemplateId": one_time, "SubscribeStatusString": "accept", "PopupScene": "1"}]))
        assert status == 200 and body == "success"  # the person is on a page: nothing said in chat
        async with runtime.db.session() as s:
            got = {c.template_id: c for c in await consents_of(s, USER)}
        assert got[tid].status == "accept" and got[tid].kind == "long_term" and got[tid].scene == "1"
        assert got[one_time].kind == "one_time" and got[one_time].credits == 1
        # A second acceptance of a one-time template allows one more notice.
        await post_xml(client, side, subscribe_event_xml(USER, "subscribe_msg_popup_event", [
            {"TemplateId": one_time, "SubscribeStatusString": "accept", "PopupScene": "1"}], create_time=1_775_000_001))
        await post_xml(client, side, subscribe_event_xml(USER, "subscribe_msg_sent_event", [
            {"TemplateId": tid, "MsgID": "1700827132819554304", "ErrorCode": "0", "ErrorStatus": "success"}]))
        await post_xml(client, side, subscribe_event_xml(USER, "subscribe_msg_change_event", [
            {"TemplateId": tid, "SubscribeStatusString": "reject"}], create_time=1_775_000_009))
        async with runtime.db.session() as s:
            got = {c.template_id: c for c in await consents_of(s, USER)}
        assert got[one_time].credits == 2
        assert got[tid].status == "reject" and got[tid].rejected_at is not None and got[tid].last_result == "success"


async def test_the_fakes_popup_reaches_both_sides_and_the_next_push_uses_it(db_url: str) -> None:
    """The demo's way to consent without a phone: the fake records the choice and hands back the event
    WeChat would send; posted to the bot, both sides agree and the outbox sends a 订阅通知."""
    from bot.outbox import build_sender
    from storage.outbox import Push, enqueue

    async with FakeWeChatServer() as fake:
        cfg = make_config(db_url, wechat__api_base=fake.base_url)
        fake.state.add_templates(templates_of(cfg))
        tid = cfg.templates["job_alert"].subscribe.template_id
        async with aiohttp.ClientSession() as http:
            async with http.post(fake.base_url + "/__fake__/subscribe",
                                 json={"openid": USER, "templates": {tid: "accept"}, "scene": 1}) as r:
                xml = (await r.json())["xml"]
        clock = FakeClock()
        async with app_client(cfg, clock) as (client, runtime):
            assert (await post_xml(client, WeChatSide(cfg), xml))[0] == 200
            async with runtime.db.session() as s:
                await enqueue(s, Push(openid=USER, purpose="job_alert", key="j1", text="新岗位：保安",
                                      data={"title": "新岗位：保安", "content": "某公司｜竹阳街道｜3000元"},
                                      url="http://127.0.0.1:8080/jobs/p/x"), clock.now())
            sender = build_sender(cfg, runtime.db, clock)
            try:
                await sender.deliver_due()
            finally:
                await sender.close()
        sent = [c for c in fake.state.calls if c["path"] == "/cgi-bin/message/subscribe/bizsend"]
        assert len(sent) == 1 and sent[0]["errcode"] == 0 and sent[0]["rendered"]["title"] == "岗位推荐通知"


async def test_subscribing_to_job_alerts_or_reminders_in_chat_offers_the_page(config: Config) -> None:
    from tests.helpers import chat_session

    async with chat_session(config) as chat:
        reply = await chat.send(USER, "清明提醒")
        assert "祭扫" in reply and "/notices/" in reply and "允许" in reply
        link = re.search(r"https?://\S+/notices/\S+", reply).group(0)  # type: ignore[union-attr]
        # Given consent (long-term), the offer is not repeated.
        tid = config.templates["memorial_reminder"].subscribe.template_id
        await chat.send_xml(subscribe_event_xml(USER, "subscribe_msg_popup_event", [
            {"TemplateId": tid, "SubscribeStatusString": "accept", "PopupScene": "1"}]))
        again = await chat.send(USER, "祭扫提醒")
        assert "/notices/" not in again
    assert link


async def test_the_subscribe_page_outside_and_inside_wechat(db_url: str) -> None:
    async with FakeWeChatServer() as fake:
        cfg = make_config(db_url, wechat__api_base=fake.base_url)
        async with app_client(cfg, FakeClock()) as (client, runtime):
            async with runtime.db.session() as s:
                token = await linktokens.issue(s, NOTICES_KIND, USER, {"p": "job_alert,callup"}, 3600,
                                               now=runtime.clock.now())
            me = {"vb_who": await viewer_cookie(runtime, USER)}
            path = f"/notices/{token}"
            link = cfg.server.public_url.rstrip("/") + path
            assert USER not in link
            # Inside WeChat, someone the link was forwarded to: this is not theirs.
            other = await client.get(path, headers={"User-Agent": WECHAT_UA},
                                     cookies={"vb_who": await viewer_cookie(runtime, fake_openid(302))})
            assert other.status == 403 and "此链接是发给别人的" in await other.text()
            outside = await client.get(path)
            body = await outside.text()
            assert outside.status == 200 and "请在<b>微信</b>里打开" in body
            assert "<script" not in body and "res.wx.qq.com" not in body  # no external resource outside WeChat
            assert "岗位推荐通知" in body and "未开启" in body
            inside = await client.get(path, headers={"User-Agent": WECHAT_UA}, cookies=me)
            page = await inside.text()
            ids = {cfg.templates[p].subscribe.template_id for p in ("job_alert", "callup")}
            (tag,) = re.findall(r'<wx-open-subscribe template="([^"]+)"', page)  # both long-term: one button
            assert set(tag.split(",")) == ids
            # Under a policy that allows WeChat's JS-SDK and this origin's scripts, no inline script: the
            # settings are a JSON data block that /static/subscribe.js applies.
            csp = inside.headers["Content-Security-Policy"]
            assert "script-src 'self' https://res.wx.qq.com" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
            assert re.findall(r"<script(?: [^>]*)?>", page) == [
                '<script type="text/wxtag-template" slot="style">', '<script type="text/wxtag-template">',
                '<script type="application/json" id="vb-wx-config">',
                '<script src="https://res.wx.qq.com/open/js/jweixin-1.6.0.js">',
                f'<script src="/static/subscribe.js?v={static_version("subscribe.js")}">']
            assert "script-src 'none'" in outside.headers["Content-Security-Policy"]  # no button, no script
            conf = re.search(r'<script type="application/json" id="vb-wx-config">(.*?)</script>', page).group(1)  # type: ignore[union-attr]
            import json

            wx = json.loads(conf)
            assert wx["appId"] == cfg.wechat.appid and wx["openTagList"] == ["wx-open-subscribe"]
            # What WeChat's client does: check the signature against the page's address and its tickets.
            async with aiohttp.ClientSession() as http:
                async with http.post(fake.base_url + "/__fake__/jssdk/verify",
                                     json={"url": link, **{k: wx[k] for k in ("nonceStr", "timestamp", "signature")}}) as r:
                    assert await r.json() == {"ok": True, "reason": None}
                async with http.post(fake.base_url + "/__fake__/jssdk/verify",
                                     json={"url": link + "&x=1", **{k: wx[k] for k in ("nonceStr", "timestamp",
                                                                                      "signature")}}) as r:
                    assert (await r.json())["ok"] is False
            # The ticket is shared: a second page view asks WeChat for none.
            await client.get(path, headers={"User-Agent": WECHAT_UA}, cookies=me)
            assert len([c for c in fake.state.calls if c["path"] == "/cgi-bin/ticket/getticket"]) == 1
            bad = await client.get("/notices/nonsense")
            assert bad.status == 400 and "链接无效" in await bad.text()


def test_jssdk_signature_matches_the_official_example() -> None:
    # JS-SDK 附录1 (the sample every implementation checks against); the #fragment is not signed.
    ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    assert signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value") == \
        "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    assert signature(ticket, "Wm3WZYTPz0wzccnW", "1414587457", "http://mp.weixin.qq.com?params=value#top") == \
        "0f9de62fce790f9a083d5c99e95740ceb90c27ed"


async def test_the_full_text_page_of_a_push(db_url: str, config: Config) -> None:
    from bot.links import sign_link
    from storage.outbox import Push, enqueue

    clock = FakeClock()
    async with app_client(config, clock) as (client, runtime):
        async with runtime.db.session() as s:
            await enqueue(s, Push(openid=USER, purpose="late_reply", key="late:1",
                                  text="优待证在乡镇服务站办理。\n带上<身份证>和退役证。"), clock.now())
        from sqlalchemy import select

        from storage.models import OutboxMessage

        async with runtime.db.session() as s:
            row_id = (await s.execute(select(OutboxMessage.id))).scalar_one()
        ok = sign_link(config, "/msg/{token}", 3600, k="msg", o=row_id).split("8080", 1)[1]
        other = sign_link(config, "/msg/{token}", 3600, k="msg", o=row_id, u=fake_openid(301)).split("8080", 1)[1]
        wechat = {"User-Agent": WECHAT_UA}
        r = await client.get(ok, headers=wechat, cookies={"vb_who": await viewer_cookie(runtime, USER)})
        text = await r.text()
        assert r.status == 200 and "带上&lt;身份证&gt;和退役证" in text and "您的消息已有回复" in text
        assert r.headers["Cache-Control"] == "no-store" and r.headers["X-Content-Type-Options"] == "nosniff"
        # The link names the push only: someone it was forwarded to sees nothing of it.
        r = await client.get(ok, headers=wechat, cookies={"vb_who": await viewer_cookie(runtime, fake_openid(301))})
        assert r.status == 403 and "身份证" not in await r.text()
        r = await client.get(ok)  # outside WeChat, nobody known: nothing either
        assert r.status == 403 and "身份证" not in await r.text()
        assert (await client.get(other)).status == 404
        wrong_kind = sign_link(config, "/msg/{token}", 3600, k="sub", o=row_id, u=USER).split("8080", 1)[1]
        assert (await client.get(wrong_kind)).status == 400


def test_consent_model_is_registered() -> None:
    assert SubscribeConsent.__tablename__ == "subscribe_consents"
    assert Path(__file__).exists()


async def test_the_chat_tool_presses_allow_and_sends_voice(db_url: str) -> None:
    """`vetbot chat` against the demo: /allow gives 订阅通知 consent through the fake, /voice sends a voice."""
    from tests.helpers import chat_session

    async with FakeWeChatServer() as fake:
        cfg = make_config(db_url, wechat__api_base=fake.base_url)
        fake.state.add_templates(templates_of(cfg))
        fake.state.openid_rule = "demo"  # as `vetbot serve --with-fake-wechat` runs it
        async with chat_session(cfg) as chat:
            said = await chat.allow("my_openid", ["callup", "nosuch"])
            assert said.startswith("已允许订阅通知")
            async with chat.runtime.db.session() as s:
                (c,) = await consents_of(s, "my_openid")
            assert c.template_id == cfg.templates["callup"].subscribe.template_id and c.status == "accept"
            assert ("my_openid", c.template_id) in fake.state.consents
            assert "没有配置" in await chat.allow("my_openid", ["late_reply"])
            assert "打字" in (await chat.voice("my_openid") or "")
