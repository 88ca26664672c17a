"""Pages (issue 14, item 9): security headers on every response, pages that work under the CSP, a
Chinese 503 page (not an English 500) with the database gone, and rapid taps that deadlock answered
with the answer recorded or a Chinese "tap again" page, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import xmltodict
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot.gateway import BUSY_TEXT
from bot.sim import WeChatSide, text_xml
from tests.callup.test_web import _as_member, _create, _setup
from tests.callup.test_web import _link as _answer_link
from tests.conftest import PG_URL, make_config
from tests.helpers import app_client
from tests.memorial.conftest import seed_roll
from tests.memorial.test_web import _link, _rel

HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def _assert_secure(resp: Any, *, cacheable: bool = False) -> None:
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "script-src 'none'" in csp and "frame-ancestors 'none'" in csp, resp.url
    for k, v in HEADERS.items():
        assert resp.headers.get(k) == v, (resp.url, k)
    if not cacheable:
        assert resp.headers.get("Cache-Control") == "no-store", resp.url


async def test_every_response_sends_security_headers(db_url: str) -> None:
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with app_client(cfg) as (client, runtime):
        link = _rel(await _link(runtime, "u_web", 1))
        for method, path in (("GET", "/healthz"), ("GET", "/m/"), ("GET", link), ("GET", "/m/999999"),
                             ("GET", "/r/forged"), ("GET", "/jobs/p/forged"), ("GET", "/callup/roster/x"),
                             ("GET", "/nowhere"), ("GET", "/wechat"), ("POST", "/wechat"), ("POST", "/m/1/tribute"),
                             ("GET", "/m")):
            resp = await client.request(method, path, allow_redirects=False)
            assert resp.status < 500, (path, resp.status)
            _assert_secure(resp)
        side = WeChatSide(cfg)
        signed = side.sign(text_xml("u_web", "帮助"))
        resp = await client.post(cfg.server.path, params=signed.query, data=signed.body.encode())
        assert resp.status == 200
        _assert_secure(resp)
        page = await (await client.get(link)).text()
        assert "<style" not in page and "style=" not in page and "<script" not in page
        assert 'rel="stylesheet" href="/static/vetbot.css?v=' in page  # the one stylesheet of every page
        resp = await client.get("/static/vetbot.css")
        assert resp.status == 200 and resp.content_type == "text/css" and "font-size" in await resp.text()
        _assert_secure(resp, cacheable=True)
        assert (await client.get("/static/nothing.css")).status == 404


@pytest.mark.browser
async def test_pages_work_under_the_csp_in_a_browser(db_url: str, browser_page: Any, tmp_path: Path) -> None:
    """Chromium enforces the policy: the page's styles apply (they come from /static/) and nothing is
    refused (no inline style or script left)."""
    cfg = await _setup(db_url)  # a roster for the answer page
    await seed_roll(db_url)
    async with app_client(cfg) as (client, runtime):
        page = browser_page
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        await page.goto(str(client.make_url(_rel(await _link(runtime, "u_csp", 1)))))
        header_bg = await page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor")
        assert header_bg == "rgb(58, 58, 58)", "vetbot.css applies (the memorial's look)"
        await page.locator("button[value=flower]").click()
        await page.wait_for_load_state()
        assert "献花" in await page.content()
        await page.screenshot(path=str(tmp_path / "memorial_csp.png"), full_page=True)
        c = await _create(runtime)
        await page.goto(str(client.make_url(await _answer_link(runtime, c, 0))))
        await page.fill("#digits", "0000")  # outside WeChat: the phone's last four digits
        await page.click("button[type=submit]")
        await page.wait_for_load_state()
        bg = await page.evaluate("getComputedStyle(document.querySelector('button.yes')).backgroundColor")
        assert bg == "rgb(23, 112, 58)", "vetbot.css applies"
        assert not refused, refused


def _swap(path: Path, moved: Path) -> None:
    path.rename(moved)
    path.mkdir()


def _unswap(path: Path, moved: Path) -> None:
    path.rmdir()
    moved.rename(path)


async def _take_the_database_away(db_url: str, runtime: Any) -> Any:
    """Make the database unreachable as an outage would; returns an undo for the fixture's teardown."""
    if db_url.startswith("sqlite"):
        await runtime.db.engine.dispose()  # the pooled connection would keep reading the unlinked file
        path = Path(make_url(db_url).database or "")
        moved = path.with_suffix(".away")
        _swap(path, moved)  # where the file was: a directory, which sqlite cannot open

        async def undo() -> None:
            _unswap(path, moved)

        return undo
    from sqlalchemy.ext.asyncio import create_async_engine

    name = make_url(db_url).database
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        await c.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
        await c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                        {"n": name})

    async def undo_pg() -> None:
        async with admin.connect() as c:
            await c.execute(text(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true'))
        await admin.dispose()

    return undo_pg


async def test_database_outage_gives_a_chinese_503_page_not_an_english_500(db_url: str) -> None:
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with app_client(cfg) as (client, runtime):
        link = _rel(await _link(runtime, "u_out", 1))
        assert (await client.get(link)).status == 200
        undo = await _take_the_database_away(db_url, runtime)
        try:
            for method, path in (("GET", "/m/"), ("GET", link), ("POST", "/m/1/tribute")):
                data = {"t": link.split("t=")[1], "action": "flower"} if method == "POST" else None
                resp = await client.request(method, path, data=data, allow_redirects=False)
                body = await resp.text()
                assert resp.status == 503, (path, resp.status, body[:200])
                assert "系统繁忙，请稍后再试" in body and "Internal Server Error" not in body
                assert resp.content_type == "text/html"
                _assert_secure(resp)
            assert (await client.get("/static/busy.css")).status == 200  # the busy page's own style
            resp = await client.get("/healthz")
            assert resp.status == 503 and (await resp.json()) == {"ok": False, "error": "database"}
            side = WeChatSide(cfg)
            signed = side.sign(text_xml("u_out", "帮助"))
            resp = await client.post(cfg.server.path, params=signed.query, data=signed.body.encode())
            assert resp.status == 200
            assert side.read_reply(await resp.text())["Content"] == BUSY_TEXT
        finally:
            await undo()


class _Deadlock(Exception):
    sqlstate = "40P01"


def _deadlock() -> DBAPIError:
    return DBAPIError("UPDATE callup_targets …", {}, _Deadlock("deadlock detected"))


async def test_rapid_taps_that_deadlock_never_give_a_500(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL aborts one of two transactions that deadlock (one member tapping 到 and 不能到 at once).
    The answer is recorded after a retry; a conflict that outlives the retries gets a Chinese page that
    says to tap again (SQLite has one writer: no deadlocks, the page is its only case)."""
    from flows.callup import service
    from flows.memorial import service as memorial

    cfg = await _setup(db_url)
    await seed_roll(db_url)
    pg = not db_url.startswith("sqlite")
    async with app_client(cfg) as (client, runtime):
        c = await _create(runtime)
        answer = await _answer_link(runtime, c, 0)
        await _as_member(client, answer, 0)
        link = _rel(await _link(runtime, "u_tap", 1))
        token = link.split("t=")[1]
        real_answer, real_tribute = service.record_answer, memorial.pay_tribute
        fails = {"left": 0}

        def flaky(real: Any) -> Any:
            async def call(*a: Any, **kw: Any) -> Any:
                if fails["left"]:
                    fails["left"] -= 1
                    raise _deadlock()
                return await real(*a, **kw)
            return call

        monkeypatch.setattr(service, "record_answer", flaky(real_answer))
        monkeypatch.setattr(memorial, "pay_tribute", flaky(real_tribute))
        if pg:
            fails["left"] = 2  # two aborted tries, then it goes through
            resp = await client.post(answer, data={"a": "yes"}, allow_redirects=False)
            assert resp.status == 303 and fails["left"] == 0
            assert "已记录：到" in await (await client.get(answer)).text()
            fails["left"] = 2
            resp = await client.post("/m/1/tribute", data={"t": token, "action": "candle"}, allow_redirects=False)
            assert resp.status == 303 and "c=1" in resp.headers["Location"]
        for path, data in ((answer, {"a": "no"}), ("/m/1/tribute", {"t": token, "action": "salute"})):
            fails["left"] = 100  # never goes through
            resp = await client.post(path, data=data, allow_redirects=False)
            body = await resp.text()
            assert resp.status == 503 and "再点一次" in body and "Internal Server Error" not in body, path


async def test_a_real_bug_is_not_hidden_behind_the_busy_page(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Only database trouble becomes the "busy" page: a bug stays a 500 (a Chinese page, with the
    headers), logged with its traceback."""
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    from bot.web import memorial as pages

    async def boom(*_: Any, **__: Any) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr(pages.store, "get_martyr", boom)
    async with app_client(cfg) as (client, _):
        resp = await client.get("/m/1")
        body = await resp.text()
        assert resp.status == 500 and "系统出错了" in body and "Internal Server Error" not in body
        _assert_secure(resp)
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


async def test_outage_of_the_replay_memory_fails_closed_on_postgresql(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite keeps callback nonces in memory")
    cfg = make_config(db_url, bot__fallback_flow="help", wechat__encoding_aes_key="")
    async with app_client(cfg) as (client, runtime):
        undo = await _take_the_database_away(db_url, runtime)
        try:
            signed = WeChatSide(cfg).sign(text_xml("u_nonce", "帮助"))
            resp = await client.post(cfg.server.path, params=signed.query, data=signed.body.encode())
            assert resp.status == 200 and xmltodict.parse(await resp.text())["xml"]["Content"] == BUSY_TEXT
        finally:
            await undo()
