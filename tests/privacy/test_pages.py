"""Pages: /privacy (the notice), the 我的数据 page and download (no-store, held by the first browser, short
lived), the notice linked from every page, and no page showing a whole phone number except as the staff
roster's call button."""

from __future__ import annotations

import re
from datetime import timedelta

import aiohttp
from sqlalchemy import select

from bot.clock import FakeClock
from flows.callup.service import CallupSpec, answer_link, create_callup, roster_link
from storage import linktokens
from storage.callup import Member
from storage.models import User
from tests.conftest import make_config
from tests.helpers import app_client
from tests.privacy.conftest import NAME, PERSON, PHONE, T0, seed_team

MOBILE = re.compile(r"1[3-9]\d{9}")


async def _person(runtime: object) -> str:
    """The person's row and a fresh 我的数据 token."""
    async with runtime.db.session() as s:  # type: ignore[attr-defined]
        s.add(User(openid=PERSON, subscribed=True, first_seen=T0, last_seen=T0, kefu_sent=0, roles="veteran",
                   name=NAME, phone=PHONE, township="城关镇", kind="veteran"))
        return await linktokens.issue(s, "privacy_export", PERSON, None, timedelta(minutes=15), now=T0)


async def _viewer_cookie(runtime: object, openid: str) -> str:
    """A page viewer session as OAuth leaves it (bot.web.viewer): the roster is for staff only."""
    from bot.web.viewer import VIEWER_KIND, VIEWER_TTL

    async with runtime.db.session() as s:  # type: ignore[attr-defined]
        return await linktokens.issue(s, VIEWER_KIND, openid, {"m": None, "via": "oauth"}, VIEWER_TTL, now=T0)


def _no_store(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff" and resp.headers["Referrer-Policy"] == "no-referrer"


async def test_the_notice_page(db_url: str) -> None:
    async with app_client(make_config(db_url), FakeClock(T0)) as (client, _):
        resp = await client.get("/privacy")
        page = await resp.text()
        assert resp.status == 200 and "个人信息保护提示" in page and "版本 2026-1" in page
        assert "保存多久" in page and "您的权利" in page and "回复“注销”" in page and not re.search(r"\{[a-z_]+\}", page)
        _no_store(resp)


async def test_my_data_page_is_held_by_the_first_browser_and_expires(db_url: str) -> None:
    clock = FakeClock(T0)
    async with app_client(make_config(db_url), clock) as (client, runtime):
        token = await _person(runtime)
        resp = await client.get(f"/privacy/mine?t={token}")
        page = await resp.text()
        assert resp.status == 200 and NAME in page and "136****4321" in page and PHONE not in page
        _no_store(resp)
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert "HttpOnly" in resp.headers["Set-Cookie"] and "Path=/privacy" in resp.headers["Set-Cookie"]
        resp = await client.get(f"/privacy/mine.json?t={token}")
        doc = await resp.json()
        assert resp.status == 200 and doc["openid"] == PERSON and "attachment" in resp.headers["Content-Disposition"]
        _no_store(resp)
        # the same link in another browser (forwarded): nothing of the person's
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            for path in ("/privacy/mine", "/privacy/mine.json"):
                async with other.get(client.make_url(f"{path}?t={token}")) as r2:
                    body = await r2.text()
                    assert r2.status == 403 and NAME not in body and "另一部手机" in body
                    assert r2.headers["Cache-Control"] == "no-store"
        for bad in ("", "x", "A" * 32, token[:-1] + ("A" if token[-1] != "A" else "B")):
            resp = await client.get(f"/privacy/mine?t={bad}")
            assert resp.status == 403 and NAME not in await resp.text()
        clock.advance(minutes=16)
        resp = await client.get(f"/privacy/mine?t={token}")
        assert resp.status == 410 and "过期" in await resp.text() and NAME not in await resp.text()


async def test_every_page_links_the_notice_and_shows_no_whole_phone(db_url: str) -> None:
    await seed_team(db_url, T0)
    cfg = make_config(db_url)
    async with app_client(cfg, FakeClock(T0)) as (client, runtime):
        async with runtime.db.session() as s:
            c = await create_callup(s, runtime.services, CallupSpec(kind="防汛", title="演练", place="城南",
                                                                   assemble_at=T0 + timedelta(hours=1), needed=1), T0)
            m = (await s.execute(select(Member).where(Member.phone == PHONE))).scalar_one()
            base = cfg.server.public_url.rstrip("/")
            answer = (await answer_link(s, cfg, c, m.id, m.openid, T0)).removeprefix(base)
        resp = await client.post(answer, data={"gate": "digits", "digits": PHONE[-4:]}, allow_redirects=False)
        assert resp.status == 303
        from tests.test_pages_oauth import STAFF

        async with runtime.db.session() as s:
            from storage.models import User

            s.add(User(openid=STAFF, roles="staff", first_seen=T0, last_seen=T0))
        staff_cookie = await _viewer_cookie(runtime, STAFF)
        pages = {"answer": answer, "roster": roster_link(cfg, c, T0).removeprefix(base),
                 "memorial": "/m/", "notice": "/privacy"}
        for kind, path in pages.items():
            resp = await client.get(path, cookies={"vb_who": staff_cookie} if kind == "roster" else None)
            page = await resp.text()
            assert resp.status == 200, (kind, page[:300])
            assert 'href="/privacy"' in page or kind == "notice", kind
            # a staff member must be able to call from the roster: the number sits in the tel: link only
            visible = re.sub(r'href="tel:[^"]*"', "", page)
            assert not MOBILE.search(visible), (kind, MOBILE.findall(visible))
        roster = await client.get(pages["roster"], cookies={"vb_who": staff_cookie})
        assert f'href="tel:{PHONE}"' in await roster.text()
