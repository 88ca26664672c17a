"""The memorial pages over HTTP: public reading, per-user signed tribute links, moderation visibility,
bad links and bad input answered with clear 4xx pages (never 500), and a phone-sized browser check."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import pytest

from flows.memorial.service import page_link
from storage.memorial import decide_message
from tests.conftest import make_config
from tests.helpers import app_client
from tests.memorial.conftest import seed_roll


def _rel(url: str) -> str:
    u = urlsplit(url)
    return f"{u.path}?{u.query}" if u.query else u.path


def _token(url: str) -> str:
    m = re.search(r"[?&]t=([^&]+)", url)
    assert m, url
    return m.group(1)


async def _link(runtime, openid: str, martyr_id: int) -> str:  # type: ignore[no-untyped-def]
    async with runtime.db.session() as s:
        return await page_link(s, runtime.config, openid, martyr_id, runtime.clock.now())


@pytest.fixture
async def site(db_url: str):  # type: ignore[no-untyped-def]
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with app_client(cfg) as (client, runtime):
        yield client, runtime, cfg


async def test_anyone_can_read_but_only_a_signed_link_can_act(site) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = site
    r = await client.get("/m/1")
    html = await r.text()
    assert r.status == 200 and r.content_type == "text/html"
    assert "张建国烈士" in html and "示例部队第一团三连" in html and "1928年3月 — 1951年11月" in html
    assert 'method="post"' not in html and "回复“祭英烈”" in html
    assert "http" not in html.split("<body", 1)[1].replace("http-equiv", ""), "no external resources"
    r = await client.get("/m/")
    html = await r.text()
    assert r.status == 200 and "云端祭英烈" in html and "张建国" in html and "无名烈士" in html
    r = await client.get("/m/", params={"q": "zjg"})
    assert "张建国" in await r.text() and "李秀英" not in await r.text()
    r = await client.get("/m", allow_redirects=False)
    assert r.status == 301 and r.headers["Location"] == "/m/"


async def test_tribute_buttons_count_once_per_day(site) -> None:  # type: ignore[no-untyped-def]
    client, runtime, _ = site
    link = _rel(await _link(runtime, "web_user", 1))
    html = await (await client.get(link)).text()
    assert 'action="/m/1/tribute"' in html and 'value="flower">献花' in html and "给张建国烈士写寄语" in html
    token = _token(link)
    r = await client.post("/m/1/tribute", data={"t": token, "action": "flower"}, allow_redirects=False)
    assert r.status == 303 and "did=flower" in r.headers["Location"] and "c=1" in r.headers["Location"]
    html = await (await client.get(r.headers["Location"])).text()
    assert "您是第 1 位为张建国烈士献花的人" in html and ">今日已献花<" in html
    r = await client.post("/m/1/tribute", data={"t": token, "action": "flower"})
    html = await r.text()
    assert r.status == 200 and "您今天已经为张建国烈士献过花了" in html
    assert re.search(r"<b>1</b>献花", html)
    # 默哀 on the page: the page itself tells when the minute is over (meta refresh, no JavaScript).
    r = await client.post("/m/tribute", data={"t": token, "action": "silence"}, allow_redirects=False)
    html = await (await client.get(r.headers["Location"])).text()
    assert "您是第 1 位为全体英烈默哀的人" in html and 'http-equiv="refresh" content="60;url=/m/?' in html
    end = re.search(r'content="60;url=([^"]+)"', html).group(1).replace("&amp;", "&")
    assert "一分钟默哀结束" in await (await client.get(end)).text()


async def test_bad_links_and_bad_input_get_clear_4xx_pages(site) -> None:  # type: ignore[no-untyped-def]
    client, runtime, _ = site
    token = _token(await _link(runtime, "web_user", 1))
    r = await client.get("/m/1", params={"t": token[:-3] + "xyz"})
    assert r.status == 403 and "链接无效" in await r.text()
    r = await client.post("/m/1/tribute", data={"t": "garbage", "action": "flower"})
    assert r.status == 403
    r = await client.post("/m/1/tribute", data={"action": "flower"})
    assert r.status == 403 and "专属链接" in await r.text()
    r = await client.post("/m/1/tribute", data={"t": token, "action": "dance"})
    assert r.status == 400
    r = await client.post("/m/999/tribute", data={"t": token, "action": "flower"})
    assert r.status == 404
    assert (await client.get("/m/999")).status == 404
    assert (await client.get("/m/abc")).status == 404
    assert (await client.get("/m/99999999999999999999")).status == 404
    r = await client.post("/m/1/message", data={"t": token, "text": ""})
    assert r.status == 400 and "请选一句寄语" in await r.text()
    r = await client.post("/m/1/message", data={"t": token, "preset": "77"})
    assert r.status == 400
    r = await client.post("/m/1/tribute", data=b"\xff\xfe", headers={"Content-Type": "multipart/form-data"})
    assert 400 <= r.status < 500
    # Found by fuzzing: these gave 500s.
    for before in ("9223372036854775808", "-9223372036854775809", "2147483648", "²"):
        assert (await client.get("/m/1", params={"before": before})).status == 200, before
        assert (await client.get("/m/", params={"before": before})).status == 200, before
    for ctype in ("application/x-www-form-urlencoded; charset=foo", "multipart/form-data; boundary=b"):
        body = b"action=flower" if "charset" in ctype else (
            b'--b\r\nContent-Disposition: form-data; name="action"\r\nContent-Transfer-Encoding: foo\r\n\r\n'
            b"flower\r\n--b--\r\n")
        r = await client.post("/m/1/tribute", data=body, headers={"Content-Type": ctype})
        assert r.status == 400, ctype
    # A body that says gzip and is not (sent raw: aiohttp's own client drops the connection on the answer).
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST /m/tribute HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Encoding: gzip\r\nContent-Length: 13\r\n\r\naction=flower")
    status_line = await reader.readline()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 400"), status_line
    r = await client.post("/m/1/message", data={"t": token, "text": "英雄\x00永垂不朽"}, allow_redirects=False)
    assert r.status == 303, "a NUL from a form is dropped (PostgreSQL refuses it in text)"
    runtime.clock.advance(hours=runtime.config.memorial.link_ttl_h + 1)
    r = await client.get("/m/1", params={"t": token})
    assert r.status == 410 and "链接已过期" in await r.text() and 'href="/m/1"' in await r.text()


async def test_messages_moderation_on_the_page(site) -> None:  # type: ignore[no-untyped-def]
    client, runtime, _ = site
    author = _token(await _link(runtime, "author", 2))
    other = _token(await _link(runtime, "other", 2))
    await client.get("/m/2", params={"t": author})  # the browser opens the link first (and gets its cookie)
    r = await client.post("/m/2/message", data={"t": author, "preset": "0"}, allow_redirects=False)
    assert r.status == 303 and "msg=approved" in r.headers["Location"]
    free = "<script>alert(1)</script>您救下的孩子们都长大了"
    r = await client.post("/m/2/message", data={"t": author, "text": free}, allow_redirects=False)
    assert r.status == 303 and "msg=pending" in r.headers["Location"]
    mine = await (await client.get("/m/2", params={"t": author})).text()
    theirs = await (await client.get("/m/2", params={"t": other})).text()
    public = await (await client.get("/m/2")).text()
    assert "英雄永垂不朽" in public and "英雄永垂不朽" in theirs
    assert "审核中（仅您可见）" in mine and "您救下的孩子们都长大了" in mine
    assert "您救下的孩子们都长大了" not in theirs and "您救下的孩子们都长大了" not in public
    assert "<script>alert(1)" not in mine and "&lt;script&gt;" in mine
    r = await client.post("/m/2/message", data={"t": author, "text": "加 ＶＸ 领红包"})
    assert r.status == 400 and "不适合公开展示" in await r.text()
    async with runtime.db.session() as s:
        from storage.memorial import pending_messages

        (pending,) = await pending_messages(s)
        await decide_message(s, pending.id, True, by="test", now=runtime.clock.now())
    public = await (await client.get("/m/2")).text()
    assert "您救下的孩子们都长大了" in public and "<script>alert(1)" not in public
    assert "加 ＶＸ" not in public and "寄语（2）" in public


async def test_phone_browser_pays_a_tribute(site, browser_page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client, runtime, _ = site
    url = str(client.make_url(_rel(await _link(runtime, "phone_user", 4))))
    page = browser_page
    await page.goto(url)
    assert await page.locator("h1").inner_text() == "黄建军烈士"
    size = await page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert size >= 18
    button = page.locator("button[value=flower]")
    box = await button.bounding_box()
    assert box is not None and box["height"] >= 48, "big buttons for elderly users"
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scrolling"
    await button.click()
    await page.wait_for_load_state()
    assert "您是第 1 位为黄建军烈士献花的人" in await page.locator(".banner").inner_text()
    await page.locator("textarea").fill("英雄一路走好")
    await page.locator("form[action='/m/4/message'] button").click()
    await page.wait_for_load_state()
    assert "审核后公开展示" in await page.locator(".banner").inner_text()
    await page.screenshot(path=str(tmp_path / "memorial_phone.png"), full_page=True)
