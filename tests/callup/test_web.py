"""The answer page (/r/<token>) and the staff roster page over HTTP, on SQLite and PostgreSQL: answers
by POST + redirect, bad / expired / wrong-kind tokens get clear 4xx pages (never 500), user text is
escaped; and once in a real phone-sized Chromium."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.clock import FakeClock
from bot.links import sign
from flows.callup import service
from storage.callup import CallUp, Member
from tests.callup.conftest import T0, TEAMS, roster_rows, seed
from tests.conftest import make_config
from tests.helpers import app_client

PLACE = '城关镇<script>alert("x")</script>大堤'


async def _setup(db_url: str):  # type: ignore[no-untyped-def]
    from storage.db import Database

    db = Database(db_url)
    try:
        await seed(db, roster_rows(TEAMS, 6))
    finally:
        await db.close()
    return make_config(db_url, bot__fallback_flow="help")


async def _create(runtime, needed: int = 2, drill: bool = False) -> CallUp:  # type: ignore[no-untyped-def]
    async with runtime.db.session() as s:
        team = (await s.execute(select(Member.team_id).where(Member.phone == "13900000000"))).scalar_one()
        spec = service.CallupSpec(kind="其他", title="防汛集结", place=PLACE, assemble_at=T0 + timedelta(hours=1),
                                  needed=needed, team_ids=[team], drill=drill)
        return await service.create_callup(s, runtime.services, spec, runtime.clock.now())


async def _member(runtime, n: int) -> int:  # type: ignore[no-untyped-def]
    async with runtime.db.session() as s:
        return (await s.execute(select(Member.id).where(Member.phone == str(13900000000 + n)))).scalar_one()


def _path(url: str) -> str:
    return url[url.index("/", len("http://")):]


async def _link(runtime, c: CallUp, n: int) -> str:  # type: ignore[no-untyped-def]
    """Member n's answer page path (a fresh opaque token, as a push or an SMS carries)."""
    mid = await _member(runtime, n)
    async with runtime.db.session() as s:
        m = await s.get(Member, mid)
        return _path(await service.answer_link(s, runtime.config, c, mid, m.openid, runtime.clock.now()))


async def _as_member(client, path: str, n: int) -> None:  # type: ignore[no-untyped-def]
    """Pass the page's check as member n outside WeChat: the last four digits of 1390000000n."""
    resp = await client.post(path, data={"gate": "digits", "digits": f"{n:04d}"}, allow_redirects=False)
    assert resp.status == 303, await resp.text()


async def test_answer_page_get_post_redirect_and_escaping(db_url: str) -> None:
    cfg = await _setup(db_url)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        c = await _create(runtime)
        path = await _link(runtime, c, 0)
        resp = await client.get(path)
        assert resp.status == 200 and "手机号码后四位" in await resp.text() and "防汛集结" not in await resp.text()
        await _as_member(client, path, 0)
        resp = await client.get(path)
        body = await resp.text()
        assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
        assert "<script>alert" not in body and "&lt;script&gt;" in body
        assert all(w in body for w in ("队员0000", "防汛集结", ">到</button>", ">晚到</button>", ">不能到</button>"))
        resp = await client.post(path, data={"a": "late", "eta": "30"}, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == path
        body = await (await client.get(path)).text()
        assert "已记录：晚到（约晚 30 分钟）" in body and "如有变化" in body
        resp = await client.post(path, data={"a": "yes"}, allow_redirects=False)
        assert resp.status == 303
        async with runtime.db.session() as s:
            r = await service.roster(s, runtime.services, await s.get(CallUp, c.id))
        assert (r["confirmed"], r["late"]) == (1, 0)
        resp = await client.post(path, data={"a": "maybe"})
        assert resp.status == 400 and "请点" in await resp.text()
        resp = await client.post(path, data=b"\xff\xfe\x00garbage", headers={"Content-Type": "text/plain"})
        assert resp.status == 400
        for eta in ("²", "9" * 5000, "፩"):  # isdigit() but not int(), or past int()'s digit limit: gave 500s
            resp = await client.post(path, data={"a": "late", "eta": eta}, allow_redirects=False)
            assert resp.status == 303, eta
        resp = await client.post(path, data={"a": "late", "eta": "１５"}, allow_redirects=False)
        assert resp.status == 303 and "约晚 15 分钟" in await (await client.get(path)).text()


async def test_bad_expired_and_wrong_kind_tokens_get_clear_4xx_pages(db_url: str) -> None:
    cfg = await _setup(db_url)
    clock = FakeClock(T0)
    async with app_client(cfg, clock) as (client, runtime):
        c = await _create(runtime)
        member = await _member(runtime, 0)
        assert member
        good = await _link(runtime, c, 0)
        token = good.rsplit("/", 1)[1]
        tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        for bad in ("/r/abc", "/r/" + "x" * 400, "/r/%00%ff", "/callup/roster/abc"):
            resp = await client.get(bad)
            assert resp.status == 400, bad
            assert "链接无效" in await resp.text()
        resp = await client.get("/r/" + tampered)  # the shape of a token, never issued
        assert resp.status == 404 and "链接无效" in await resp.text()
        resp = await client.post("/r/" + tampered, data={"a": "yes"})
        assert resp.status == 404
        roster = _path(service.roster_link(cfg, c, clock.now()))
        assert (await client.get(roster.replace("/callup/roster/", "/r/"))).status == 410  # old signed form
        assert (await client.get("/callup/roster/" + token)).status == 400  # answer token, roster page
        # A signed answer link of earlier releases (readable claims, forgeable with the key): refused.
        forged = sign(cfg, {"c": c.id, "m": member}, ttl_s=3600, now=service.epoch(clock.now()))
        resp = await client.get("/r/" + forged)
        assert resp.status == 410 and "队员0000" not in await resp.text()
        clock.advance(hours=cfg.callup.staff_link_ttl_h, seconds=1)
        assert (await client.get(roster)).status == 410
        clock.advance(hours=cfg.callup.link_ttl_h)
        resp = await client.get(good)
        assert resp.status == 410 and "链接已过期" in await resp.text()
        resp = await client.post(good, data={"a": "yes"})
        assert resp.status == 410


async def test_closed_call_up_page_and_roster_page(db_url: str) -> None:
    cfg = await _setup(db_url)
    clock = FakeClock(T0)
    async with app_client(cfg, clock) as (client, runtime):
        c = await _create(runtime, drill=True)
        p0, p1 = await _link(runtime, c, 0), await _link(runtime, c, 1)
        await _as_member(client, p0, 0)
        await client.post(p0, data={"a": "yes"}, allow_redirects=False)
        await _as_member(client, p1, 1)
        await client.post(p1, data={"a": "no"}, allow_redirects=False)
        roster = _path(service.roster_link(cfg, c, clock.now()))
        # Outside WeChat the roster leads to the console's board (behind the console login) ...
        resp = await client.get(roster, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == f"/staff/callups/{c.id}"
        # ... whose login page shows no data (a member who passed a page's check is no staff member).
        resp = await client.get(roster)
        assert resp.status == 200 and "登录" in await resp.text() and "13900000002" not in await resp.text()
        async with runtime.db.session() as s:
            await service.close_callup(s, runtime.services, c.id, "tester", clock.now())
        body = await (await client.get(p1)).text()
        assert "本次集结已结束" in body and "<button" not in body
        resp = await client.post(p1, data={"a": "yes"})
        assert resp.status == 409 and "已结束" in await resp.text()


async def test_late_driver_pressing_yes_on_the_page_after_the_quorum_stays_counted(db_url: str) -> None:
    # Issue 14.11 through the page: 晚到 30 (counted for 防汛), the call-up fills, then 到 on the page.
    cfg = await _setup(db_url)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        async with runtime.db.session() as s:
            team = (await s.execute(select(Member.team_id).where(Member.phone == "13900000000"))).scalar_one()
            c = await service.create_callup(s, runtime.services, service.CallupSpec(
                kind="防汛", title="防汛集结", place="城关镇大堤", assemble_at=T0 + timedelta(hours=1), needed=2,
                skills_needed={"驾驶": 1}, team_ids=[team]), runtime.clock.now())
        driver = await _link(runtime, c, 3)
        await _as_member(client, driver, 3)
        await client.post(driver, data={"a": "late", "eta": "30"}, allow_redirects=False)
        # member 0 drives too (驾驶 2/1 with the late driver), member 1 (医护) becomes standby
        for n in (0, 1):
            path = await _link(runtime, c, n)
            await _as_member(client, path, n)
            await client.post(path, data={"a": "yes"}, allow_redirects=False)
        await _as_member(client, driver, 3)
        resp = await client.post(driver, data={"a": "yes"}, allow_redirects=False)
        assert resp.status == 303
        body = await (await client.get(driver)).text()
        assert "已记录：到" in body and "备用" not in body
        async with runtime.db.session() as s:
            r = await service.roster(s, runtime.services, await s.get(CallUp, c.id))
        assert (r["state"], r["counted"], r["standby"], r["by_skill"]["驾驶"]["confirmed"]) == ("filled", 2, 1, 2)


@pytest.mark.browser
async def test_answer_page_in_a_phone_browser(db_url: str, browser_page, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = await _setup(db_url)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        c = await _create(runtime)
        url = str(client.make_url(await _link(runtime, c, 3)))
        page = browser_page
        await page.goto(url)
        await page.fill("#digits", "0003")
        await page.click("button[type=submit]")
        await page.wait_for_load_state()
        buttons = page.locator("button.wide")
        assert await buttons.count() == 3
        box = await buttons.first.bounding_box()
        assert box is not None and box["height"] >= 56 and box["width"] >= 300  # big enough for old fingers
        await page.screenshot(path=str(tmp_path / "answer.png"), full_page=True)
        await page.select_option("select[name=eta]", "60")
        await page.click("button.late")
        await page.wait_for_load_state()
        assert "已记录：晚到（约晚 60 分钟）" in await page.content()
        async with runtime.db.session() as s:
            r = await service.roster(s, runtime.services, await s.get(CallUp, c.id))
        assert r["late"] == 1
