"""The pages behind job pushes: opaque per-person links, clear 4xx pages, escaping, pause/unsubscribe
buttons for the person only."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from bot.clock import FakeClock
from bot.config import Config
from flows.jobs.alerts import posting_link, run_digests
from storage import linktokens
from storage.db import Database
from storage.jobs import JobSubscription, expire_postings
from storage.models import OutboxMessage
from tests.helpers import app_client
from tests.jobs.util import add_sub, posting, store

T0 = datetime(2026, 4, 4, 2, 0)


async def _alerts(db: Database, openid: str) -> list[OutboxMessage]:
    async with db.session() as s:
        return list((await s.execute(select(OutboxMessage).where(OutboxMessage.openid == openid)
                                     .order_by(OutboxMessage.id))).scalars())


def _path(url: str) -> str:
    return url.split("127.0.0.1:8080", 1)[1]


async def _viewer(db: Database, openid: str) -> str:
    """The viewer cookie WeChat OAuth leaves for ``openid`` (bot.web.viewer)."""
    from bot.web.viewer import VIEWER_KIND, VIEWER_TTL

    async with db.session() as s:
        return await linktokens.issue(s, VIEWER_KIND, openid, {"m": None, "via": "oauth"}, VIEWER_TTL, now=T0)


async def _link(db: Database, config: Config, openid: str, pid: int) -> str:
    async with db.session() as s:
        return _path(await posting_link(s, config, openid, pid, T0))


async def test_posting_page_from_an_alert(db: Database, config: Config) -> None:
    clock = FakeClock(T0)
    await add_sub(db, "u", T0)
    evil = posting(title="<script>alert(1)</script>保安", requirements="身高170以上 & 退役军人",
                   contact="王先生 138-0000-0001", veteran_priority=True)
    await store(db, config, [evil], T0)
    (alert,) = await _alerts(db, "u")
    me = await _viewer(db, "u")
    async with app_client(config, clock) as (client, _):
        resp = await client.get(_path(alert.payload["url"]), cookies={"vb_who": me})
        body = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "&lt;script&gt;alert(1)&lt;/script&gt;保安" in body and "<script>" not in body
        assert "身高170以上 &amp; 退役军人" in body and "退役军人优先" in body
        assert 'href="tel:13800000001"' in body and 'name="viewport"' in body
        assert 'action="/jobs/s/' in body and "暂停岗位推送" in body
        assert "/jobs/p/" in alert.payload["url"] and '"u"' not in alert.payload["url"] and "." not in \
            alert.payload["url"].split("/jobs/p/")[1]  # nothing readable in the link
        # Someone the link was forwarded to sees the posting but not the buttons.
        anon = await client.get(_path(alert.payload["url"]), cookies={"vb_who": await _viewer(db, "x")})
        assert anon.status == 200 and "暂停岗位推送" not in await anon.text()

        # Tampered, garbage and wrong-kind tokens: 403 with a page, never 500.
        token = alert.payload["url"].rsplit("/", 1)[1].split("?")[0]
        for bad in (token[:-2] + ("AA" if not token.endswith("AA") else "BB"), "nonsense"):
            r = await client.get(f"/jobs/p/{bad}?p=1")
            assert r.status == 403 and "链接无效" in await r.text()
        r = await client.get("/jobs/p/a.b")  # a signed link of earlier releases
        assert r.status == 410
        r = await client.get(f"/jobs/d/{token}")
        assert r.status == 403

        # The posting ends: 410 saying so.
        async with db.session() as s:
            await expire_postings(s, T0 + timedelta(hours=1), ids=[alert.ref_id or 0])
        clock.advance(hours=2)
        r = await client.get(_path(alert.payload["url"]))
        assert r.status == 410 and "已经截止" in await r.text()

        # The link itself expires after jobs.link_ttl_days.
        clock.advance(days=config.jobs.link_ttl_days + 1)
        r = await client.get(_path(alert.payload["url"]))
        assert r.status == 410 and "链接已过期" in await r.text()


async def test_digest_page_lists_every_match_still_open(db: Database, config: Config) -> None:
    clock = FakeClock(T0)
    await add_sub(db, "d", T0, mode="daily", digest_minute=19 * 60)
    await add_sub(db, "other", T0, mode="daily", digest_minute=19 * 60)
    rep = await store(db, config, [posting(title=f"岗位{i}") for i in range(8)], T0)
    due = datetime(2026, 4, 4, 11, 0)
    async with db.session() as s:
        await run_digests(s, due, config)
        await expire_postings(s, due, ids=rep.new_ids[:1])
    (digest,) = await _alerts(db, "d")
    (other,) = await _alerts(db, "other")
    clock.set(due + timedelta(minutes=5))
    async with app_client(config, clock) as (client, _):
        resp = await client.get(_path(digest.payload["url"]))
        body = await resp.text()
        assert resp.status == 200
        assert "找到 8 个岗位" in body and "其中 1 个已截止或已变更" in body
        assert body.count('class="card item"') == 7 and "岗位0" not in body
        # Each entry opens the posting page with this user's own signed link.
        first = body.split('class="card item" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        assert first.startswith("/jobs/p/")  # same server: works whatever public_url says
        r = await client.get(first)
        assert r.status == 200 and "岗位" in await r.text()
        # Someone else's digest id with this person's token is refused.
        token = digest.payload["url"].split("/jobs/d/")[1].split("?")[0]
        r = await client.get(f"/jobs/d/{token}?d={other.ref_id}")
        assert r.status == 404


async def test_digest_page_pages_through_a_long_list(db: Database, config: Config) -> None:
    from bot.web.jobs import PAGE

    clock = FakeClock(T0)
    await add_sub(db, "many", T0, mode="daily", digest_minute=19 * 60)
    await store(db, config, [posting(title=f"岗位{i:02d}") for i in range(PAGE + 5)], T0)
    due = datetime(2026, 4, 4, 11, 0)
    async with db.session() as s:
        await run_digests(s, due, config)
    (digest,) = await _alerts(db, "many")
    clock.set(due + timedelta(minutes=5))
    async with app_client(config, clock) as (client, _):
        url = _path(digest.payload["url"])
        seen: set[str] = set()
        for page, items in ((1, PAGE), (2, 5)):
            body = await (await client.get(url, params={"page": str(page)})).text()
            assert body.count('class="card item"') == items and f"第 {page}/2 页" in body
            seen |= {t for t in (f"岗位{i:02d}" for i in range(PAGE + 5)) if t in body}
            assert ("下一页" in body) == (page == 1) and ("上一页" in body) == (page == 2)
        assert len(seen) == PAGE + 5  # every posting on exactly one of the two pages
        # Odd page values fall back to a valid page instead of failing: never 500.
        for odd in ("0", "-1", "abc", "\u00b2", "99999", "3"):
            r = await client.get(url, params={"page": odd})
            assert r.status == 200 and 'class="card item"' in await r.text()


async def test_pause_and_unsubscribe_buttons(db: Database, config: Config) -> None:
    clock = FakeClock(T0)
    await add_sub(db, "u", T0)
    await add_sub(db, "v", T0)
    late = datetime(2026, 4, 4, 15, 0)  # 23:00 local: alerts wait for the morning
    await store(db, config, [posting(title="甲"), posting(title="乙")], late)
    url_u = await _link(db, config, "u", 1)
    token_u = url_u.rsplit("/", 1)[1].split("?")[0]
    token_v = (await _link(db, config, "v", 1)).rsplit("/", 1)[1].split("?")[0]
    as_u, as_v = {"vb_who": await _viewer(db, "u")}, {"vb_who": await _viewer(db, "v")}
    async with app_client(config, clock) as (client, _):
        r = await client.post(f"/jobs/s/{token_u}", data={"action": "explode"}, cookies=as_u)
        assert r.status == 400
        r = await client.post("/jobs/s/forged.token", data={"action": "pause"}, cookies=as_u)
        assert r.status == 410
        # v's forwarded link, used by u: nothing changes.
        r = await client.post(f"/jobs/s/{token_v}", data={"action": "pause"}, cookies=as_u)
        assert r.status == 403
        r = await client.post(f"/jobs/s/{token_u}", data={"action": "pause"})  # nobody verified, outside WeChat
        assert r.status == 403
        r = await client.post(f"/jobs/s/{token_u}", data={"action": "pause"}, cookies=as_u)
        assert r.status == 200 and "已暂停" in await r.text()
        r = await client.post(f"/jobs/s/{token_v}", data={"action": "unsubscribe"}, cookies=as_v)
        assert r.status == 200 and "已退订" in await r.text()
        r = await client.get(url_u, cookies=as_u)
        assert "岗位推送已暂停" in await r.text()
    async with db.session() as s:
        states = dict((await s.execute(select(JobSubscription.openid, JobSubscription.status))).all())
    assert states == {"u": "paused", "v": "cancelled"}
    assert {a.status for a in await _alerts(db, "u")} == {"cancelled"}
    assert {a.status for a in await _alerts(db, "v")} == {"cancelled"}


async def test_digest_page_on_a_phone(db: Database, config: Config, browser_page) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock(T0)
    await add_sub(db, "d", T0, mode="daily", digest_minute=19 * 60)
    await store(db, config, [posting(title=f"退役军人专岗{i}", requirements="要求" * 40) for i in range(6)], T0)
    due = datetime(2026, 4, 4, 11, 0)
    async with db.session() as s:
        await run_digests(s, due, config)
    (digest,) = await _alerts(db, "d")
    clock.set(due)
    async with app_client(config, clock) as (client, _):
        base = str(client.make_url(""))
        await browser_page.goto(base.rstrip("/") + _path(digest.payload["url"]))
        fits = await browser_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        size = await browser_page.evaluate("parseFloat(getComputedStyle(document.querySelector('a.card.item')).fontSize)")
        assert fits and size >= 18
        await browser_page.click("text=退役军人专岗5")
        assert "联系" in await browser_page.inner_text("main")
