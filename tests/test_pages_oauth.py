"""Member pages bound to their person (issue 17 item 3): the answer page learns who opens it through WeChat's
OAuth 网页授权 (snsapi_base) inside WeChat and through the phone's last four digits outside; a forwarded
link records nothing; the roster is for staff only; link tokens cannot be guessed and expire.

Everything runs against the bundled fake WeChat API on loopback: its authorize page redirects back with
a code for the openid the test says the "browser" is (the ``fake_wechat_openid`` cookie, or
``POST /__fake__/oauth``), and ``sns/oauth2/access_token`` trades it (40029 / 40163 as WeChat does).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.clock import FakeClock
from bot.fake_wechat import FakeWeChatServer, fake_openid
from bot.links import ANSWER_KIND
from bot.wechat_api import MemoryTokenStore, WeChatClient, WeChatError
from flows.callup import service
from storage import linktokens
from storage.callup import CallUp, CallUpTarget, Member
from storage.models import User
from tests.callup.conftest import T0, TEAMS, roster_rows, seed
from tests.conftest import CHROMIUM_ARGS, IN_CI, make_config

WECHAT_UA = ("Mozilla/5.0 (Linux; Android 13; V2217A) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0 "
             "Mobile Safari/537.36 XWEB/1160027 MMWEBSDK/20231105 MicroMessenger/8.0.44.2502(0x28002C51) "
             "WeChat/arm64 Weixin NetType/WIFI Language/zh_CN")
PHONE_UA = "Mozilla/5.0 (Linux; Android 13) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0 Mobile Safari/537.36"
STAFF = fake_openid("staff1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def site(db_url: str, clock: FakeClock | None = None) -> AsyncIterator[dict[str, Any]]:
    """The bot's app on a known port (its public_url, where WeChat sends the browser back) and the fake
    WeChat API (api_base and oauth_base), with a roster whose members 0-5 are bound to fake openids."""
    from aiohttp.test_utils import TestClient, TestServer

    from bot.app import build_runtime, create_app
    from storage.db import Database

    rows = roster_rows(TEAMS, 6)
    db = Database(db_url)
    try:
        await seed(db, rows)
        async with db.session() as s:
            for m in (await s.execute(select(Member).order_by(Member.id))).scalars():
                n = int(m.phone) - 13900000000
                if n < 6:
                    m.openid = fake_openid(n)
            s.add(User(openid=STAFF, roles="staff", first_seen=T0, last_seen=T0))
    finally:
        await db.close()
    async with FakeWeChatServer() as fake:
        port = _free_port()
        cfg = make_config(db_url, bot__fallback_flow="help", wechat__api_base=fake.base_url,
                          wechat__oauth_base=fake.base_url, server__public_url=f"http://127.0.0.1:{port}")
        runtime = await build_runtime(cfg, clock=clock or FakeClock(T0))
        client = TestClient(TestServer(create_app(runtime, background=False), host="127.0.0.1", port=port))
        await client.start_server()
        try:
            yield {"client": client, "runtime": runtime, "fake": fake, "cfg": cfg, "base": f"http://127.0.0.1:{port}"}
        finally:
            await client.close()
            await runtime.close()


async def _callup(runtime: Any) -> CallUp:
    async with runtime.db.session() as s:
        team = (await s.execute(select(Member.team_id).where(Member.phone == "13900000000"))).scalar_one()
        spec = service.CallupSpec(kind="其他", title="防汛集结", place="城关镇大堤", assemble_at=T0 + timedelta(hours=1),
                                  needed=2, team_ids=[team])
        return await service.create_callup(s, runtime.services, spec, runtime.clock.now())


async def _link(runtime: Any, c: CallUp, n: int, *, unbound: bool = False) -> str:
    async with runtime.db.session() as s:
        m = (await s.execute(select(Member).where(Member.phone == str(13900000000 + n)))).scalar_one()
        if unbound:
            m.openid = None
        url = await service.answer_link(s, runtime.config, c, m.id, m.openid, runtime.clock.now())
    return url[url.index("/r/"):]


async def _status(runtime: Any, c: CallUp, n: int) -> str:
    async with runtime.db.session() as s:
        mid = (await s.execute(select(Member.id).where(Member.phone == str(13900000000 + n)))).scalar_one()
        return (await s.execute(select(CallUpTarget.status).where(CallUpTarget.callup_id == c.id,
                                                                  CallUpTarget.member_id == mid))).scalar_one()


async def _session(site_: dict[str, Any], openid: str) -> aiohttp.ClientSession:
    """A "phone" inside WeChat: the WeChat User-Agent, and the fake knows it as ``openid``."""
    jar = aiohttp.CookieJar(unsafe=True)
    http = aiohttp.ClientSession(cookie_jar=jar, headers={"User-Agent": WECHAT_UA})
    jar.update_cookies({"fake_wechat_openid": openid}, response_url=aiohttp.client.URL(site_["fake"].base_url))
    return http


async def test_forwarded_answer_link_opened_in_wechat_by_another_openid_records_nothing(db_url: str) -> None:
    async with site(db_url) as st:
        runtime = st["runtime"]
        c = await _callup(runtime)
        path = await _link(runtime, c, 0)
        url = st["base"] + path
        # The member's own phone: silently through WeChat's authorize page and back to the page.
        async with await _session(st, fake_openid(0)) as own:
            resp = await own.get(url)
            assert resp.status == 200 and "请选择您的回复" in await resp.text()
            assert [str(h.url).split("?")[0] for h in resp.history][-3:] == [
                url, st["fake"].base_url + "/connect/oauth2/authorize", st["base"] + "/oauth/wechat"]
            auth = resp.history[0].headers["Location"]
            assert "scope=snsapi_base" in auth and auth.endswith("#wechat_redirect") and "appid=" in auth
            cookie = next(c for c in resp.history[-1].cookies.values() if c.key == "vb_who")
            assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]  # http here
        # Forwarded to a group chat: another member opens it in WeChat and taps 不能到.
        async with await _session(st, fake_openid(1)) as other:
            resp = await other.get(url)
            body = await resp.text()
            assert resp.status == 403 and "此链接是发给别人的" in body and "队员0000" not in body
            resp = await other.post(url, data={"a": "no"})
            assert resp.status == 403 and "此链接是发给别人的" in await resp.text()
        assert await _status(runtime, c, 0) == "pending"
        async with runtime.db.session() as s:
            r = await service.roster(s, runtime.services, await s.get(CallUp, c.id))
        assert r["declined"] == 0 and r["confirmed"] == 0
        # The code exchange went through sns/oauth2/access_token, once per visit.
        exchanges = [x for x in st["fake"].state.calls if x["path"] == "/sns/oauth2/access_token"]
        assert len(exchanges) == 2 and all(x["errcode"] == 0 for x in exchanges)


async def test_oauth_callback_refuses_a_replayed_code_and_a_foreign_state(db_url: str) -> None:
    async with site(db_url) as st:
        c = await _callup(st["runtime"])
        url = st["base"] + await _link(st["runtime"], c, 0)
        async with await _session(st, fake_openid(0)) as http:
            resp = await http.get(url, allow_redirects=False)
            auth = resp.headers["Location"].split("#")[0]
            back = (await http.get(auth, allow_redirects=False)).headers["Location"]
            assert (await http.get(back, allow_redirects=False)).status == 303
            replay = await http.get(back, allow_redirects=False)  # the same state and code again
            assert replay.status == 400 and "没能确认身份" in await replay.text()
        # Another browser holding a state it did not start (login CSRF) gets nothing.
        async with await _session(st, fake_openid(1)) as http:
            resp = await http.get(url, allow_redirects=False)
            auth = resp.headers["Location"].split("#")[0]
        async with await _session(st, fake_openid(1)) as thief:
            back = (await thief.get(auth, allow_redirects=False)).headers["Location"]
            resp = await thief.get(back, allow_redirects=False)
            assert resp.status == 400 and "vb_who" not in resp.cookies


async def test_fake_oauth_codes_are_single_use_and_live_five_minutes(db_url: str) -> None:
    async with FakeWeChatServer() as fake:
        client = WeChatClient(fake.base_url, fake.state.appid, "s", MemoryTokenStore())
        try:
            code = fake.state.oauth_code(fake_openid(7))
            assert await client.oauth_openid(code) == fake_openid(7)
            with pytest.raises(WeChatError) as e:
                await client.oauth_openid(code)
            assert e.value.errcode == 40163
            with pytest.raises(WeChatError) as e:
                await client.oauth_openid("made-up")
            assert e.value.errcode == 40029
            old = fake.state.oauth_code(fake_openid(7))
            fake.state.advance_clock(301)
            with pytest.raises(WeChatError) as e:
                await client.oauth_openid(old)
            assert e.value.errcode == 40029
        finally:
            await client.close()
        async with aiohttp.ClientSession() as http:
            # WeChat's own error page for a redirect_uri off the 网页授权域名.
            await http.post(fake.base_url + "/__fake__/oauth", json={"openid": fake_openid(1), "domain": "vet.example.cn"})
            q = {"appid": fake.state.appid, "redirect_uri": "http://evil.example.com/x", "response_type": "code",
                 "scope": "snsapi_base", "state": "s"}
            resp = await http.get(fake.base_url + "/connect/oauth2/authorize", params=q, allow_redirects=False)
            assert resp.status == 400 and "10003" in await resp.text()
            q["redirect_uri"] = "https://vet.example.cn/oauth/wechat"
            resp = await http.get(fake.base_url + "/connect/oauth2/authorize", params=q, allow_redirects=False)
            assert resp.status == 302 and resp.headers["Location"].startswith("https://vet.example.cn/oauth/wechat?code=")


async def test_sms_link_outside_wechat_needs_the_phone_digits_and_limits_attempts(db_url: str) -> None:
    async with site(db_url) as st:
        runtime = st["runtime"]
        c = await _callup(runtime)
        # A member without WeChat (the SMS link): the page asks for the last four digits of 13900000004.
        url = st["base"] + await _link(runtime, c, 4, unbound=True)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         headers={"User-Agent": PHONE_UA}) as http:
            resp = await http.get(url)
            body = await resp.text()
            assert resp.status == 200 and "手机号码后四位" in body and "防汛集结" not in body
            assert '<label for="digits">' in body
            resp = await http.post(url, data={"a": "yes"})  # an answer before the check records nothing
            assert resp.status == 200 and "手机号码后四位" in await resp.text()
            assert await _status(runtime, c, 4) == "pending"
            for n in range(1, 5):
                resp = await http.post(url, data={"gate": "digits", "digits": "1234"})
                assert resp.status == 400 and f"还可以试 {5 - n} 次" in await resp.text()
            resp = await http.post(url, data={"gate": "digits", "digits": "9999"})
            assert resp.status == 429
            resp = await http.post(url, data={"gate": "digits", "digits": "0004"})  # right, but locked now
            assert resp.status == 429 and "一小时后" in await resp.text()
            runtime.clock.advance(hours=1, seconds=1)
            resp = await http.post(url, data={"gate": "digits", "digits": "0004"})
            assert resp.status == 200 and "请选择您的回复" in await resp.text()
            resp = await http.post(url, data={"a": "yes"})
            assert resp.status == 200 and "已记录：到" in await resp.text()
        assert await _status(runtime, c, 4) == "confirmed"
        # Member 0's link in the same plain browser: a new check, the first one does not carry over.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                         headers={"User-Agent": PHONE_UA}) as http:
            other = st["base"] + await _link(runtime, c, 0)
            await http.post(url, data={"gate": "digits", "digits": "0004"})
            resp = await http.post(other, data={"a": "no"})
            assert "手机号码后四位" in await resp.text()
        assert await _status(runtime, c, 0) == "pending"


async def test_roster_is_for_staff_only(db_url: str) -> None:
    async with site(db_url) as st:
        runtime, cfg = st["runtime"], st["cfg"]
        c = await _callup(runtime)
        roster = st["base"] + service.roster_link(cfg, c, runtime.clock.now()).split(cfg.server.public_url)[1]
        async with await _session(st, fake_openid(0)) as member:  # a member the link was forwarded to
            resp = await member.get(roster)
            body = await resp.text()
            assert resp.status == 403 and "仅限工作人员" in body and "13900000001" not in body
        async with await _session(st, STAFF) as staff:
            resp = await staff.get(roster)
            body = await resp.text()
            assert resp.status == 200 and 'href="tel:13900000001"' in body
        async with aiohttp.ClientSession(headers={"User-Agent": PHONE_UA}) as plain:
            resp = await plain.get(roster, allow_redirects=False)
            assert resp.status == 303 and resp.headers["Location"] == f"/staff/callups/{c.id}"
            resp = await plain.get(roster)  # the console's login page: no data without a console session
            assert "13900000001" not in await resp.text()


async def test_answer_tokens_are_not_guessable_and_expire(db_url: str) -> None:
    async with site(db_url) as st:
        runtime, cfg = st["runtime"], st["cfg"]
        c = await _callup(runtime)
        paths = {await _link(runtime, c, 0) for _ in range(20)}
        tokens = [p.rsplit("/", 1)[1] for p in paths]
        assert len(tokens) == 20 and all(len(t) == 32 and "." not in t for t in tokens)
        async with runtime.db.session() as s:
            rows = (await s.execute(select(linktokens.LinkToken).where(linktokens.LinkToken.kind == ANSWER_KIND)))
            stored = {r.token_hash for r in rows.scalars()}
        assert not any(t in stored for t in tokens)  # only hashes are kept
        async with aiohttp.ClientSession(headers={"User-Agent": PHONE_UA}) as http:
            for t in tokens[:3]:  # a neighbour of a real token is no token
                resp = await http.get(st["base"] + "/r/" + t[:-1] + ("A" if t[-1] != "A" else "B"))
                assert resp.status == 404 and "链接无效" in await resp.text()
            runtime.clock.advance(hours=cfg.callup.link_ttl_h, seconds=1)
            resp = await http.get(st["base"] + "/r/" + tokens[0])
            assert resp.status == 410 and "链接已过期" in await resp.text()


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        exe = None
    if not exe:
        if IN_CI:
            pytest.fail("Debian chromium and the playwright package are needed for browser tests")
        pytest.skip("Debian chromium and the playwright package are needed for browser tests")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


def _keep(path: Path) -> None:
    keep = os.environ.get("VETBOT_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


async def _shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    _keep(path)


@pytest.mark.browser
async def test_forwarded_link_in_chromium_through_the_oauth_redirect(db_url: str, chromium: Any, tmp_path: Path) -> None:
    async with site(db_url) as st:
        runtime = st["runtime"]
        c = await _callup(runtime)
        url = st["base"] + await _link(runtime, c, 0)

        async def phone(openid: str) -> Any:
            ctx = await chromium.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1,
                                             locale="zh-CN", user_agent=WECHAT_UA)
            await ctx.add_cookies([{"name": "fake_wechat_openid", "value": openid, "url": st["fake"].base_url}])
            return ctx, await ctx.new_page()

        ctx, page = await phone(fake_openid(1))  # someone the member forwarded the link to
        await page.goto(url)
        assert "此链接是发给别人的" in await page.content()
        assert await page.locator("button").count() == 0
        await _shot(page, tmp_path, "answer-forwarded")
        await ctx.close()
        assert await _status(runtime, c, 0) == "pending"

        ctx, page = await phone(fake_openid(0))  # the member
        await page.goto(url)
        assert page.url.split("#")[0] == url  # back on the page after the silent authorize redirect
        await _shot(page, tmp_path, "answer-own")
        size = await page.locator("h1").evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        body = await page.locator("body p").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 20 and body >= 16
        box = await page.locator("button.yes").bounding_box()
        assert box is not None and box["height"] >= 56 and box["width"] >= 300
        assert await page.locator("label[for=eta]").count() == 1
        await page.click("button.yes")
        await page.wait_for_load_state()
        assert "已记录：到" in await page.content()
        await ctx.close()
        assert await _status(runtime, c, 0) == "confirmed"

        ctx = await chromium.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", user_agent=PHONE_UA)
        page = await ctx.new_page()
        await page.goto(st["base"] + await _link(runtime, c, 2, unbound=True))  # an SMS link, outside WeChat
        await _shot(page, tmp_path, "answer-digits")
        await page.fill("#digits", "0002")
        await page.click("button[type=submit]")
        await page.wait_for_load_state()
        await page.click("button.no")
        await page.wait_for_load_state()
        assert "不能到" in await page.content()
        # The other member pages share the layout and stylesheet: text at least 16 px, no sideways scroll.
        for path, name in (("/m/", "memorial"), ("/privacy", "privacy-notice")):
            await page.goto(st["base"] + path)
            await _shot(page, tmp_path, name)
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            smallest = await page.evaluate(
                "Math.min(...[...document.querySelectorAll('main p, main li, main dd, main button, main label')]"
                ".map(e => parseFloat(getComputedStyle(e).fontSize)))")
            assert smallest >= 16, (path, smallest)
        await ctx.close()
        assert await _status(runtime, c, 2) == "declined"


async def test_forwarded_memorial_link_opened_in_wechat_by_another_openid_acts_for_no_one(db_url: str) -> None:
    from flows.memorial.service import page_link
    from storage import memorial as store

    async with site(db_url) as st:
        runtime = st["runtime"]
        async with runtime.db.session() as s:
            url = await page_link(s, runtime.config, fake_openid(0), 0, runtime.clock.now())
        url = st["base"] + url[url.index("/m/"):]
        token = url.split("t=")[1]
        async with await _session(st, fake_openid(1)) as other:
            resp = await other.get(url)  # through WeChat's authorize page and back
            body = await resp.text()
            assert resp.status == 200 and "此链接是发给别人的" in body and 'value="flower"' not in body
            resp = await other.post(st["base"] + "/m/tribute", data={"t": token, "action": "flower"})
            assert resp.status == 403
        async with runtime.db.session() as s:
            assert (await store.counts(s, 0)).get("flower", 0) == 0
        async with await _session(st, fake_openid(0)) as own:
            resp = await own.get(url)
            assert 'value="flower"' in await resp.text()
            resp = await own.post(st["base"] + "/m/tribute", data={"t": token, "action": "flower"})
            assert resp.status == 200 and "您是第 1 位" in await resp.text()
        async with runtime.db.session() as s:
            assert (await store.counts(s, 0)).get("flower", 0) == 1
