"""Memorial page links (issue 14 item 6): opaque random tokens stored hashed, a life of hours, and a
forwarded link that neither shows the sender's 寄语 waiting for review nor lets another phone act as the
sender; links from before the upgrade get a kind "expired" page. Plus the link-token store itself, on
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select

from bot.links import sign
from flows.memorial.service import page_link
from storage import linktokens
from storage.db import Database
from storage.linktokens import LinkToken, LinkTokenError
from storage.memorial import PENDING, MemorialMessage, counts
from tests.conftest import make_config
from tests.helpers import app_client, chat_session
from tests.memorial.conftest import seed_roll

PENDING_TEXT = "您救下的孩子们都长大了，家乡修了新路"


@pytest.fixture
async def site(db_url: str):  # type: ignore[no-untyped-def]
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with app_client(cfg) as (client, runtime):
        yield client, runtime, cfg


async def _token(runtime, openid: str, martyr_id: int) -> str:  # type: ignore[no-untyped-def]
    async with runtime.db.session() as s:
        url = await page_link(s, runtime.config, openid, martyr_id, runtime.clock.now())
    m = re.search(r"[?&]t=([^&]+)$", url)
    assert m, url
    return m.group(1)


async def test_forwarded_memorial_link_does_not_show_pending_message_nor_act_as_the_sender(site) -> None:  # type: ignore[no-untyped-def]
    client, runtime, _ = site
    token = await _token(runtime, "sender", 2)
    # The sender opens their link and writes a 寄语 that waits for review.
    assert (await client.get("/m/2", params={"t": token})).status == 200
    r = await client.post("/m/2/message", data={"t": token, "text": PENDING_TEXT}, allow_redirects=False)
    assert r.status == 303 and "msg=pending" in r.headers["Location"]
    mine = await (await client.get("/m/2", params={"t": token})).text()
    assert PENDING_TEXT in mine and "审核中（仅您可见）" in mine
    # They forward the link; a friend opens it on another phone (another browser, no shared cookies).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as friend:
        url = str(client.make_url("/m/2"))
        async with friend.get(url, params={"t": token}) as resp:
            page = await resp.text()
            assert resp.status == 200
        assert PENDING_TEXT not in page and "审核中" not in page
        assert 'method="post"' not in page and "另一部手机上用过" in page and token not in page
        async with friend.post(url + "/tribute", data={"t": token, "action": "flower"}, allow_redirects=False) as resp:
            assert resp.status == 403 and "另一部手机上用过" in await resp.text()
        async with friend.post(url + "/message", data={"t": token, "text": "冒名写的寄语"}, allow_redirects=False) as resp:
            assert resp.status == 403
    async with runtime.db.session() as s:
        assert (await counts(s, 2))["flower"] == 0
        texts = list((await s.execute(select(MemorialMessage.text).where(MemorialMessage.openid == "sender"))).scalars())
        assert texts == [PENDING_TEXT]
    # The sender's own phone still works with the link.
    r = await client.post("/m/2/tribute", data={"t": token, "action": "flower"}, allow_redirects=False)
    assert r.status == 303 and "c=1" in r.headers["Location"]


async def test_a_link_nobody_used_yet_shows_no_pending_message(site) -> None:  # type: ignore[no-untyped-def]
    """Chat wrote a pending 寄语; the link is forwarded before its owner ever opens it: the friend may
    read and could act (nobody holds the link yet), but never sees the owner's pending words."""
    client, runtime, _ = site
    async with runtime.db.session() as s:
        s.add(MemorialMessage(openid="sender", martyr_id=3, text=PENDING_TEXT, preset=False, status=PENDING,
                              day=runtime.clock.now().date(), created_at=runtime.clock.now()))
    token = await _token(runtime, "sender", 3)
    page = await (await client.get("/m/3", params={"t": token})).text()
    assert PENDING_TEXT not in page and 'value="flower"' in page


async def test_memorial_link_reveals_no_openid_and_is_stored_hashed(db_url: str) -> None:
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    openid = "oVeteranOpenid_1234567890"
    async with chat_session(cfg) as chat:
        reply = await chat.send(openid, "祭英烈")
        assert reply is not None
        token = re.search(r'/m/\?t=([^"&]+)"', reply).group(1)  # type: ignore[union-attr]
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token), token
        for part in token.split("."):
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
            assert openid.encode() not in raw and b'"o"' not in raw
        async with chat.runtime.db.session() as s:
            rows = list((await s.execute(select(LinkToken).where(LinkToken.openid == openid))).scalars())
        assert [r.token_hash for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        assert all(token not in str(v) for r in rows for v in r.__dict__.values())
        assert rows[0].expires_at - rows[0].created_at == timedelta(hours=cfg.memorial.link_ttl_h)
    assert cfg.memorial.link_ttl_h <= 12, "a link of a few hours, not a week"


async def test_memorial_link_expires_after_link_ttl_h(site) -> None:  # type: ignore[no-untyped-def]
    client, runtime, cfg = site
    token = await _token(runtime, "web_user", 1)
    runtime.clock.advance(hours=cfg.memorial.link_ttl_h, seconds=-60)
    assert 'value="flower"' in await (await client.get("/m/1", params={"t": token})).text()
    runtime.clock.advance(seconds=120)
    r = await client.get("/m/1", params={"t": token})
    body = await r.text()
    assert r.status == 410 and "链接已过期" in body and "回复“祭英烈”" in body and 'href="/m/1"' in body
    r = await client.post("/m/1/tribute", data={"t": token, "action": "flower"})
    assert r.status == 410


async def test_old_signed_memorial_link_gets_a_kind_expired_page(site) -> None:  # type: ignore[no-untyped-def]
    """Links sent before the upgrade carried signed claims ({"o": openid, "p": "m"}) valid a week."""
    client, runtime, cfg = site
    old = sign(cfg, {"o": "old_user", "p": "m"}, ttl_s=7 * 86400, now=runtime.clock.now().timestamp())
    r = await client.get("/m/1", params={"t": old})
    body = await r.text()
    assert r.status == 410 and "这个链接已过期" in body and "回复“祭英烈”" in body and "不登录，先看看纪念页" in body
    r = await client.post("/m/1/tribute", data={"t": old, "action": "flower"})
    assert r.status == 410
    async with runtime.db.session() as s:
        assert (await counts(s, 1))["flower"] == 0


async def test_unknown_token_is_refused(site) -> None:  # type: ignore[no-untyped-def]
    client, _, _ = site
    for bad in ("A" * 32, "short", "x" * 300, "../../etc"):
        r = await client.get("/m/1", params={"t": bad})
        assert r.status == 403 and "链接无效" in await r.text()


# --- the store ---------------------------------------------------------------------------------------

T0 = datetime(2026, 4, 4, 2, 0)


async def test_issue_resolve_kind_expiry(db: Database) -> None:
    async with db.session() as s:
        token = await linktokens.issue(s, "memorial", "u1", {"m": 3}, timedelta(hours=2), now=T0)
        other = await linktokens.issue(s, "console_login", "u1", None, 600, now=T0)
    async with db.session() as s:
        row = await linktokens.resolve(s, token, "memorial", T0 + timedelta(minutes=119))
        assert (row.openid, row.data) == ("u1", {"m": 3})
        for tok, kind, when, reason in ((token, "console_login", T0, "unknown"), (other, "memorial", T0, "unknown"),
                                        (token, "memorial", T0 + timedelta(hours=2), "expired"),
                                        ("nope" * 8, "memorial", T0, "unknown"), (None, "memorial", T0, "unknown")):
            with pytest.raises(LinkTokenError) as e:
                await linktokens.resolve(s, tok, kind, when)
            assert e.value.reason == reason


async def test_single_use_and_claim_and_revoke_and_purge(db: Database) -> None:
    async with db.session() as s:
        once = await linktokens.issue(s, "console_login", "staff1", None, 600, now=T0, single_use=True)
        many = await linktokens.issue_many(s, "memorial", [("a", None), ("b", None)], 3600, now=T0)
    async with db.session() as s:
        await linktokens.resolve(s, once, "console_login", T0, consume=True)
    async with db.session() as s:
        with pytest.raises(LinkTokenError) as e:
            await linktokens.resolve(s, once, "console_login", T0, consume=True)
        assert e.value.reason == "used"
        row = await linktokens.resolve(s, many[0], "memorial", T0)
        assert await linktokens.claim(s, row, "h1") and await linktokens.claim(s, row, "h1")
        assert not await linktokens.claim(s, row, "h2")
    async with db.session() as s:
        row = await linktokens.resolve(s, many[0], "memorial", T0)
        assert row.holder == "h1"
        assert await linktokens.revoke(s, "memorial", "b") == 1
        with pytest.raises(LinkTokenError):
            await linktokens.resolve(s, many[1], "memorial", T0)
        assert await linktokens.purge(s, T0 + timedelta(days=1, minutes=5)) == 0
        assert await linktokens.purge(s, T0 + timedelta(days=1, hours=2)) == 2
