"""The console refuses what it must: every /staff/ URL without a session (routes enumerated from the app,
so a new page cannot be forgotten), a replayed login link, a forged or foreign session cookie, an expired
session, a POST without its CSRF token or from another site, and a staff member whose role was removed.
Secrets (link tokens, session ids) are stored only as hashes. SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import func, select, text

from bot.web.console.auth import COOKIE
from bot.web.console.auth import PUBLIC as PUBLIC_PATHS
from storage import console as store
from storage.broadcast import Broadcast
from storage.models import InboundDedup, OutboxMessage, User
from tests.console.conftest import ADMIN, PUBLIC, SECRET_BITS, STAFF, Site, seed_everything, staff_routes


def _fill(path: str, ids: dict[str, int]) -> str:
    return path.replace("{id}", str(ids["callup"] if "/callups/" in path else ids["broadcast"])).replace(
        "{openid}", ADMIN)


def _no_secrets(body: str) -> None:
    leaked = [b for b in SECRET_BITS if b in body]
    assert not leaked, f"leaked {leaked}"


async def test_anonymous_requests_to_every_staff_url_get_no_data(site: Site) -> None:
    ids = await seed_everything(site)
    routes = staff_routes(site.client.app)
    assert len(routes) >= 25 and ("GET", "/staff/callups/{id}/board") in routes  # the enumeration works
    for method, pattern in routes:
        path = _fill(pattern, ids)
        resp = await site.client.request(method, path, allow_redirects=False, data={"t": "x", "csrf": "x"}
                                         if method == "POST" else None)
        body = await resp.text()
        _no_secrets(body)
        assert COOKIE not in resp.cookies or not resp.cookies[COOKIE].value, (method, path)
        if pattern in PUBLIC_PATHS:
            assert resp.status in (200, 303, 400, 410), (method, path, resp.status)
            continue
        if method in ("GET", "HEAD"):
            assert resp.status == 303 and resp.headers["Location"].startswith("/staff/login"), (method, path)
        else:
            assert resp.status == 403, (method, path, resp.status)
    # JSON-ish and unknown URLs under /staff/ too: nothing, not even a 404 that confirms a page exists.
    for path in ("/staff/nope", "/staff/callups/1/board.json", "/staff/../staff/users"):
        resp = await site.client.get(path, allow_redirects=False)
        assert resp.status in (303, 401), path
        _no_secrets(await resp.text())
    async with site.db.session() as s:  # nothing was changed by all those requests
        assert (await s.execute(select(func.count()).select_from(store.ConsoleSession))).scalar_one() == 0


async def test_replayed_login_link_is_refused(site: Site) -> None:
    raw = await site.link(STAFF)
    first = await site.client.post("/staff/login/link", data={"t": raw}, allow_redirects=False)
    assert first.status == 303 and first.cookies[COOKIE].value
    site.client.session.cookie_jar.clear()
    again = await site.client.post("/staff/login/link", data={"t": raw}, allow_redirects=False)
    body = await again.text()
    assert again.status == 410 and "已经用过" in body and COOKIE not in again.cookies
    page = await site.client.get(f"/staff/login/link?t={raw}")
    assert page.status == 410
    resp = await site.client.get("/staff/", allow_redirects=False)
    assert resp.status == 303


async def test_expired_login_link_is_refused(site: Site) -> None:
    raw = await site.link(STAFF, ttl_min=10)
    site.clock.advance(minutes=10, seconds=1)
    resp = await site.client.post("/staff/login/link", data={"t": raw}, allow_redirects=False)
    assert resp.status == 410 and "过期" in await resp.text() and COOKIE not in resp.cookies


async def test_forged_and_foreign_session_cookies_are_refused(site: Site) -> None:
    await site.login(STAFF)
    good = site.client.session.cookie_jar.filter_cookies(site.client.make_url("/staff/"))[COOKIE].value
    async with site.db.session() as s:
        stored = (await s.execute(select(store.ConsoleSession.id_hash))).scalar_one()
    # A made-up value, the stored hash itself (someone who read the database), and a session of another
    # deployment (a valid-looking id this database never issued).
    for value in ("A" * 43, stored, store.new_secret(), good[:-1] + ("A" if good[-1] != "A" else "B"), ""):
        site.client.session.cookie_jar.clear()
        site.client.session.cookie_jar.update_cookies({COOKIE: value}, site.client.make_url("/staff/"))
        resp = await site.client.get("/staff/users", allow_redirects=False)
        assert resp.status == 303, value
        _no_secrets(await resp.text())
    site.client.session.cookie_jar.clear()
    site.client.session.cookie_jar.update_cookies({COOKIE: good}, site.client.make_url("/staff/"))
    assert (await site.client.get("/staff/users", allow_redirects=False)).status == 200


async def test_an_idle_or_old_session_expires(site: Site) -> None:
    await site.login(STAFF)
    idle = site.config.console.session_idle_min
    site.clock.advance(minutes=idle - 1)
    assert (await site.client.get("/staff/", allow_redirects=False)).status == 200  # activity keeps it alive
    site.clock.advance(minutes=idle - 1)
    assert (await site.client.get("/staff/", allow_redirects=False)).status == 200
    site.clock.advance(minutes=idle, seconds=1)
    resp = await site.client.get("/staff/", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/staff/login")
    async with site.db.session() as s:  # the dead session is gone, not just ignored
        assert (await s.execute(select(func.count()).select_from(store.ConsoleSession))).scalar_one() == 0
    # However active, a session ends after console.session_max_h.
    await site.login(STAFF)
    for _ in range(site.config.console.session_max_h * 60 // (idle - 1) + 2):
        site.clock.advance(minutes=idle - 1)
        if (await site.client.get("/staff/", allow_redirects=False)).status != 200:
            break
    else:
        raise AssertionError("the session outlived console.session_max_h")


async def test_post_without_csrf_token_is_refused(site: Site) -> None:
    csrf = await site.login(ADMIN)
    form = {"title": "通知", "text": "内容", "audience": "all", "when": "now", "do": "send"}
    for data, headers in ((form, {}), ({**form, "csrf": "0" * 40}, {}),
                          ({**form, "csrf": csrf}, {"Origin": "https://evil.example"})):
        resp = await site.client.post("/staff/broadcasts/send", data=data, headers=headers, allow_redirects=False)
        assert resp.status == 403 and "没有保存" in await resp.text()
    async with site.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Broadcast))).scalar_one() == 0
        assert (await s.execute(select(func.count()).select_from(OutboxMessage))).scalar_one() == 0
    resp = await site.client.post("/staff/broadcasts/send", data={**form, "csrf": csrf}, allow_redirects=False)
    assert resp.status == 303  # the same form with its token goes through
    # The token belongs to the session: another staff member's token is refused.
    site.client.session.cookie_jar.clear()
    await site.login(STAFF)
    resp = await site.client.post("/staff/logout", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 403


async def test_staff_member_whose_role_was_removed_is_logged_out(site: Site) -> None:
    staff_client = site.client
    await site.login(STAFF)
    assert (await staff_client.get("/staff/", allow_redirects=False)).status == 200
    async with site.db.session() as s:
        user = await s.get(User, STAFF)
        assert user is not None
        await store.set_role(s, user, "staff", False, by=ADMIN, via="console", now=site.clock.now())
    resp = await staff_client.get("/staff/broadcasts", allow_redirects=False)
    assert resp.status == 303
    async with site.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(store.ConsoleSession))).scalar_one() == 0
    # Even if a session row survived (role removed by hand in the database), the role is checked per request.
    async with site.db.session() as s:
        user = await s.get(User, STAFF)
        user.add_role("staff")  # type: ignore[union-attr]
    await site.login(STAFF)
    async with site.db.session() as s:
        await s.execute(text("UPDATE users SET roles = '' WHERE openid = :o"), {"o": STAFF})
    assert (await staff_client.get("/staff/", allow_redirects=False)).status == 303


async def test_a_login_link_of_someone_without_the_staff_role_opens_nothing(site: Site) -> None:
    raw = await site.link(PUBLIC)
    resp = await site.client.post("/staff/login/link", data={"t": raw}, allow_redirects=False)
    assert resp.status == 403 and COOKIE not in resp.cookies


async def test_only_admins_see_the_audit_log_and_change_roles(site: Site) -> None:
    csrf = await site.login(STAFF)
    assert (await site.client.get("/staff/audit")).status == 403
    resp = await site.client.post(f"/staff/users/{PUBLIC}/role", data={"csrf": csrf, "role": "staff", "grant": "1"})
    assert resp.status == 403
    async with site.db.session() as s:
        assert not (await s.get(User, PUBLIC)).has_role("staff")  # type: ignore[union-attr]
    assert "操作记录" not in await (await site.client.get("/staff/")).text()


async def test_login_does_not_redirect_to_another_site(site: Site) -> None:
    for nxt in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "/staff/login/link?t=x"):
        resp = await site.client.get("/staff/login", params={"next": nxt})
        assert nxt not in await resp.text()
    raw = await site.link(STAFF)
    resp = await site.client.post(f"/staff/login/link?next={'https://evil.example'}", data={"t": raw},
                                  allow_redirects=False)
    assert resp.headers["Location"] == "/staff/"


async def test_session_cookie_flags(site: Site, db_url: str) -> None:
    raw = await site.link(STAFF)
    resp = await site.client.post("/staff/login/link", data={"t": raw}, allow_redirects=False)
    morsel = resp.cookies[COOKIE]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/staff"
    assert not morsel["secure"] and not morsel["max-age"] and not morsel["expires"]
    assert resp.headers["Cache-Control"] == "no-store" and "frame-ancestors 'none'" in \
        (await site.client.get("/staff/login")).headers["Content-Security-Policy"]
    from bot.web.console import auth

    https = site.config
    https.server.public_url = "https://vets.example.gov.cn"
    try:
        raw = await site.link(STAFF)
        resp = await site.client.post("/staff/login/link", data={"t": raw}, allow_redirects=False)
        assert resp.cookies[auth.COOKIE]["secure"]
    finally:
        https.server.public_url = "http://127.0.0.1:8080"


async def test_login_secrets_are_stored_only_as_hashes(site: Site) -> None:
    reply = await site.chat(STAFF, "登录后台")
    assert reply is not None and "/staff/login/link?t=" in reply
    token = reply.split("?t=")[1].split()[0]
    await site.client.post("/staff/login/link", data={"t": token}, allow_redirects=False)
    session_id = site.client.session.cookie_jar.filter_cookies(site.client.make_url("/staff/"))[COOKIE].value
    async with site.db.session() as s:
        rows = []
        for table in ("console_logins", "console_sessions", "inbound_dedup", "outbox", "staff_audit"):
            rows += [str(tuple(r)) for r in await s.execute(text(f"SELECT * FROM {table}"))]
        replies = list((await s.execute(select(InboundDedup.reply))).scalars())
    dump = "\n".join(rows)
    assert token not in dump and session_id not in dump
    assert store.digest(token) in dump and store.digest(session_id) in dump
    assert any(r and "不再重发" in r for r in replies)  # WeChat's retry gets a note instead of the link


async def test_staff_pages_are_not_cached_nor_framed(site: Site) -> None:
    await site.login(ADMIN)
    for path in ("/staff/", "/staff/users", "/staff/login"):
        resp = await site.client.get(path)
        assert resp.headers["Cache-Control"] == "no-store" and resp.headers["X-Frame-Options"] == "DENY"
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "<script>" not in await resp.text()  # no inline script anywhere (CSP default-src 'self')


async def test_expired_session_shows_login_not_data_on_post(site: Site) -> None:
    csrf = await site.login(ADMIN)
    site.clock.advance(hours=1)
    resp = await site.client.post("/staff/broadcasts/send", data={"csrf": csrf, "title": "x", "text": "y"},
                                  allow_redirects=False)
    assert resp.status == 403 and "重新登录" in await resp.text()
    assert resp.cookies[COOKIE].value == ""  # the dead cookie is cleared
