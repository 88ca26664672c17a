"""Logging in without passwords: the login page's QR code scanned in WeChat (a SCAN or subscribe event
through the real callback) and confirmed in chat; 登录后台 in chat; ``vetbot console link``. SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select

from bot.fake_wechat import FaultRule
from bot.web.console.auth import COOKIE, LOGIN_COOKIE
from storage import console as store
from storage.models import User
from tests.conftest import ROOT
from tests.console.conftest import ADMIN, PUBLIC, STAFF, T0, Site, add_user

QR_PATH = "/cgi-bin/qrcode/create"


async def _qrcodes(site: Site) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(site.fake.base_url + "/__fake__/qrcodes") as r:
        return (await r.json())["qrcodes"]


async def _poll(site: Site) -> dict:
    resp = await site.client.get("/staff/login/poll", headers={"Accept": "application/json"})
    assert resp.status == 200
    return await resp.json()


async def test_login_by_scanning_the_qr_code(site: Site) -> None:
    page = await site.client.get("/staff/login?next=/staff/callups")
    body = await page.text()
    assert page.status == 200 and "<svg" in body and 'class="qr"' in body and "<img" not in body
    assert page.cookies[LOGIN_COOKIE]["httponly"] and page.cookies[LOGIN_COOKIE]["path"] == "/staff/login"
    (call,) = [c for c in site.fake.state.calls if c["path"] == QR_PATH]
    assert call["body"]["action_name"] == "QR_STR_SCENE" and call["body"]["expire_seconds"] == 300
    (qr,) = await _qrcodes(site)
    scene = qr["scene"]
    assert scene.startswith("login:") and len(scene) <= 64 and scene == call["body"]["action_info"]["scene"]["scene_str"]
    assert await _poll(site) == {"state": "waiting"}
    # The staff member scans the code in WeChat: a SCAN event through the real (encrypted) callback.
    reply = await site.event(STAFF, "SCAN", scene)
    assert reply is not None and "登录工作人员后台" in reply and "1. 确认登录" in reply and "127.0.0.1" in reply
    assert await _poll(site) == {"state": "scanned"}
    assert (await site.client.get("/staff/", allow_redirects=False)).status == 303  # not before confirming
    reply = await site.chat(STAFF, "1")
    assert reply is not None and "已确认" in reply
    done = await _poll(site)
    assert done == {"state": "ok", "next": "/staff/callups"}
    resp = await site.client.get("/staff/callups", allow_redirects=False)
    assert resp.status == 200 and "工作人员乙" in await resp.text()
    # The attempt is spent: a second poll does not log in again, the same scan does nothing more.
    assert (await _poll(site))["state"] in ("used", "none")
    again = await site.event(STAFF, "SCAN", scene, later_s=5)
    assert again is not None and "过期或已经用过" in again
    async with site.db.session() as s:
        user = await s.get(User, STAFF)
        assert user is not None and user.qr_scene == "login"  # the one-time scene is not kept on the user
        (row,) = (await s.execute(select(store.ConsoleLogin))).scalars()
        assert row.state == store.USED and row.scene_hash == store.digest(scene.removeprefix("login:"))
        entry = (await s.execute(select(store.StaffAudit).where(store.StaffAudit.action == "console.login"))).scalar_one()
        assert entry.actor == STAFF and entry.detail["via"] == "qr"


async def test_a_new_follower_scanning_the_login_code_is_asked_too(site: Site) -> None:
    await site.client.get("/staff/login")
    (qr,) = await _qrcodes(site)
    reply = await site.event(ADMIN, "subscribe", f"qrscene_{qr['scene']}")
    assert reply is not None and "1. 确认登录" in reply and "回复数字即可办理" not in reply
    assert "已确认" in (await site.chat(ADMIN, "1") or "")
    assert (await _poll(site))["state"] == "ok"


async def test_the_login_code_scanned_by_someone_without_the_staff_role_logs_nobody_in(site: Site) -> None:
    await site.client.get("/staff/login")
    (qr,) = await _qrcodes(site)
    reply = await site.event(PUBLIC, "SCAN", qr["scene"])
    assert reply is not None and "没有工作人员后台的权限" in reply
    assert await _poll(site) == {"state": "denied"}
    assert "已确认" not in (await site.chat(PUBLIC, "1") or "")
    assert (await _poll(site))["state"] == "denied"
    # A denied code is replaced on reload.
    await site.client.get("/staff/login")
    assert len(await _qrcodes(site)) == 2


async def test_a_staff_member_who_did_not_start_the_login_can_refuse_it(site: Site) -> None:
    await site.client.get("/staff/login")
    (qr,) = await _qrcodes(site)
    await site.event(STAFF, "SCAN", qr["scene"])
    reply = await site.chat(STAFF, "2")
    assert reply is not None and "不会登录" in reply
    assert (await _poll(site))["state"] == "denied"
    resp = await site.client.get("/staff/login/done", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"].startswith("/staff/login")


async def test_the_staff_role_is_checked_again_when_confirming(site: Site) -> None:
    await site.client.get("/staff/login")
    (qr,) = await _qrcodes(site)
    await site.event(STAFF, "SCAN", qr["scene"])
    async with site.db.session() as s:
        user = await s.get(User, STAFF)
        await store.set_role(s, user, "staff", False, by=ADMIN, via="console", now=site.clock.now())  # type: ignore[arg-type]
    reply = await site.chat(STAFF, "1")
    assert reply is not None and "已确认" not in reply
    assert (await _poll(site))["state"] != "ok"


async def test_an_expired_login_code_does_not_log_in(site: Site) -> None:
    await site.client.get("/staff/login")
    (qr,) = await _qrcodes(site)
    await site.event(STAFF, "SCAN", qr["scene"])
    site.clock.advance(seconds=site.config.console.qr_ttl_s + 1)
    reply = await site.chat(STAFF, "1")
    assert reply is not None and "过期" in reply
    assert (await _poll(site))["state"] == "expired"


async def test_without_javascript_the_done_link_finishes_the_login(site: Site) -> None:
    await site.client.get("/staff/login")
    (qr,) = await _qrcodes(site)
    await site.event(STAFF, "SCAN", qr["scene"])
    await site.chat(STAFF, "1")
    resp = await site.client.get("/staff/login/done", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/" and resp.cookies[COOKIE].value


async def test_reloading_the_login_page_keeps_its_code_and_the_process_limits_new_ones(site: Site) -> None:
    for _ in range(3):
        await site.client.get("/staff/login")
    assert len(await _qrcodes(site)) == 1  # one browser, one code while it is valid
    from bot.web.console import auth

    for _ in range(auth.QR_PER_MINUTE + 3):  # many browsers (no login cookie each time)
        site.client.session.cookie_jar.clear()
        resp = await site.client.get("/staff/login")
    assert "太多" in await resp.text() and len(await _qrcodes(site)) == auth.QR_PER_MINUTE


async def test_when_wechat_cannot_make_a_code_the_page_says_what_to_do(site: Site) -> None:
    site.fake.state.add_fault(FaultRule(path=QR_PATH, errcode=48001, count=1))
    resp = await site.client.get("/staff/login")
    body = await resp.text()
    assert resp.status == 200 and "<svg" not in body and "登录后台" in body and "链接" in body


async def test_login_link_from_chat(site: Site) -> None:
    reply = await site.chat(STAFF, "登录后台")
    assert reply is not None and "10分钟内有效" in reply and "只能用一次" in reply
    url = reply.split("\n")[1]
    path = url[url.index("/staff/"):]
    page = await site.client.get(path)
    assert page.status == 200 and "登录工作人员后台" in await page.text()
    token = path.split("t=")[1]
    resp = await site.client.post("/staff/login/link", data={"t": token}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/staff/"
    assert (await site.client.get("/staff/")).status == 200
    # Opening the link (GET) does not spend it; only the button does, once.
    assert (await site.client.get(path)).status == 410
    # Someone without the staff role gets no link (the intent is for staff only).
    other = await site.chat(PUBLIC, "登录后台")
    assert other is None or "/staff/login/link" not in other


async def test_console_link_command(site: Site, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import build_parser, main

    monkeypatch.setenv("VETBOT_DATABASE__URL", site.config.database.url)
    config = str(ROOT / "config.example.yaml")

    def vetbot(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main(list(argv))
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = await asyncio.to_thread(vetbot, "console", "link", "-c", config, STAFF)
    assert code == 0 and out.strip().startswith("http://127.0.0.1:8080/staff/login/link?t="), err
    token = out.strip().split("t=")[1]
    resp = await site.client.post("/staff/login/link", data={"t": token}, allow_redirects=False)
    assert resp.status == 303
    code, _, err = await asyncio.to_thread(vetbot, "console", "link", "-c", config, PUBLIC)
    assert code == 2 and "no staff role" in err and "vetbot users role" in err
    code, _, err = await asyncio.to_thread(vetbot, "console", "link", "-c", config, "oNobodyEverWroteToUs1234")
    assert code == 2 and "no user" in err
    code, out, _ = await asyncio.to_thread(vetbot, "console", "link", "-c", config, ADMIN, "--json")
    assert json.loads(out)["expires_in_min"] == 10
    help_text = build_parser()._subparsers._group_actions[0].choices["console"].format_help()  # type: ignore[union-attr]
    assert "link" in help_text
    async with site.db.session() as s:
        assert (await s.execute(select(store.StaffAudit).where(store.StaffAudit.action == "console.link"))).first()


def test_console_link_help_says_how_the_first_admin_gets_in(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    with pytest.raises(SystemExit):
        main(["console", "link", "--help"])
    out = capsys.readouterr().out
    assert "vetbot users role" in out and "admin" in out and "登录后台" in out and "10" in out


def test_link_ttl_over_ten_minutes_is_refused(tmp_path: Path) -> None:
    from bot.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"console\.link_ttl_min"):
        load_config(ROOT / "config.example.yaml", {"VETBOT_CONSOLE__LINK_TTL_MIN": "60"})


async def test_staff_openids_from_config_can_log_in_once_they_write(site: Site) -> None:
    newcomer = "staff_demo"  # bot.staff_openids in config.example.yaml
    await add_user(site.db, "oSomebodyElse000000001", T0)
    reply = await site.chat(newcomer, "登录后台")
    assert reply is not None and "/staff/login/link?t=" in reply


async def test_users_role_admin_from_the_command_line(site: Site, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.cli import main

    monkeypatch.setenv("VETBOT_DATABASE__URL", site.config.database.url)
    config = str(ROOT / "config.example.yaml")

    def vetbot(*argv: str) -> int:
        try:
            main(list(argv))
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    assert await asyncio.to_thread(vetbot, "users", "role", "-c", config, PUBLIC, "admin") == 0
    assert "roles = admin,staff" in capsys.readouterr().out
    await site.login(PUBLIC)
    assert (await site.client.get("/staff/audit")).status == 200
    assert await asyncio.to_thread(vetbot, "users", "role", "-c", config, PUBLIC, "staff", "--remove") == 0
    assert "roles = (none)" in capsys.readouterr().out
    assert (await site.client.get("/staff/", allow_redirects=False)).status == 303  # logged out at once
    async with site.db.session() as s:
        entries = list((await s.execute(select(store.StaffAudit).where(store.StaffAudit.target_id == PUBLIC)
                                        .where(store.StaffAudit.action.startswith("user.")))).scalars())
    assert [(e.action, e.via) for e in entries] == [("user.grant", "cli"), ("user.revoke", "cli")]
