"""The staff console in Debian's Chromium (Playwright), at 1366×768 (an office PC) and 390×844 (a phone):
login by a link from chat and by the scanned QR code (a SCAN event through the real callback), a notice
from compose to its delivery report (the fake WeChat API's calls checked), a call-up board that updates
itself, 寄语 review in bulk. Each page is checked for what staff need (labels on every field, text of at
least 16 px, no sideways scrolling, keyboard focus) and photographed into the test's tmp folder
(``VETBOT_SHOTS=folder`` keeps a copy)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.fake_wechat import fake_openid
from bot.outbox import build_sender
from storage.memorial import PENDING, REJECTED, MemorialMessage, add_message
from tests.callup.conftest import TEAMS, roster_rows, seed
from tests.conftest import CHROMIUM_ARGS, IN_CI
from tests.console.conftest import ADMIN, STAFF, T0, Site, add_user

pytestmark = pytest.mark.browser
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 20000


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
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


def expect(locator: Any) -> Any:
    """Playwright's web-first assertions (they poll without evaluating strings, which the pages' CSP forbids)."""
    from playwright.async_api import expect as pw_expect

    return pw_expect(locator)


async def _page(browser: Any, size: dict[str, int]) -> Any:
    ctx = await browser.new_context(viewport=size, device_scale_factor=1, locale="zh-CN")
    page = await ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    return page


def _keep(path: Path) -> None:
    keep = os.environ.get("VETBOT_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


async def _shot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    _keep(path)
    if os.environ.get("VETBOT_SHOTS"):  # the first screen alone too (the README's pictures are taken so)
        view = tmp_path / f"{name}-view.png"
        await page.screenshot(path=str(view))
        _keep(view)


async def _check_page(page: Any) -> None:
    """What every console page must give an office worker: labels, legible text, no sideways scrolling."""
    problems = await page.evaluate("""() => {
      const out = [];
      const visible = el => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
      for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
        if (!visible(el)) continue;
        if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label')) out.push('no label: ' + (el.name || el.id));
      }
      for (const el of document.querySelectorAll('button')) {
        if (!el.textContent.trim()) out.push('button without text');
      }
      const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walker.nextNode()) {
        const node = walker.currentNode, el = node.parentElement;
        if (!node.textContent.trim() || !el || !visible(el) || el.closest('svg')) continue;
        const size = parseFloat(getComputedStyle(el).fontSize);
        if (size < 16) out.push('small text ' + size + 'px: ' + node.textContent.trim().slice(0, 20));
      }
      if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push('scrolls sideways');
      return out;
    }""")
    assert not problems, problems


async def _login_link(site: Site, page: Any, openid: str) -> None:
    raw = await site.link(openid)
    await page.goto(str(site.client.make_url(f"/staff/login/link?t={raw}")))
    await page.get_by_role("button", name="登录工作人员后台").click()
    await page.wait_for_url("**/staff/")


async def test_login_by_link_from_chat_on_a_phone(site: Site, browser: Any, tmp_path: Path) -> None:
    reply = await site.chat(STAFF, "登录后台")
    assert reply is not None
    url = reply.split("\n")[1]
    page = await _page(browser, PHONE)
    await page.goto(str(site.client.make_url(url[url.index("/staff/"):])))
    await _check_page(page)
    await _shot(page, tmp_path, "login-link-phone")
    await page.get_by_role("button", name="登录工作人员后台").click()
    await page.wait_for_url("**/staff/")
    assert "今日概况" in await page.inner_text("main")
    await _check_page(page)
    await _shot(page, tmp_path, "dashboard-phone")
    # The same link a second time: refused, no session.
    page2 = await _page(browser, PHONE)
    await page2.goto(str(site.client.make_url(url[url.index("/staff/"):])))
    assert "已经用过" in await page2.inner_text("main")


async def test_login_by_scanning_the_qr_code_on_an_office_pc(site: Site, browser: Any, tmp_path: Path) -> None:
    page = await _page(browser, DESKTOP)
    await page.goto(str(site.client.make_url("/staff/login")))
    assert await page.locator("svg.qr").count() == 1
    await _check_page(page)
    await _shot(page, tmp_path, "login-qr-desktop")
    async with aiohttp.ClientSession() as http, http.get(site.fake.base_url + "/__fake__/qrcodes") as r:
        (qr,) = (await r.json())["qrcodes"]
    await site.event(ADMIN, "SCAN", qr["scene"])  # the phone scans: WeChat sends SCAN to the callback
    await expect(page.locator("#qr-status")).to_contain_text("已扫码", timeout=WAIT_MS)
    assert "已确认" in (await site.chat(ADMIN, "1") or "")
    await page.wait_for_url("**/staff/")  # login.js polls and enters by itself
    assert "管理员甲" in await page.inner_text("header")
    await _check_page(page)
    await _shot(page, tmp_path, "dashboard-desktop")
    for path, name in (("/staff/users", "users"), ("/staff/audit", "audit"), ("/staff/broadcasts", "broadcasts"),
                       ("/staff/callups", "callups"), (f"/staff/users/{STAFF}", "user")):
        await page.goto(str(site.client.make_url(path)))
        await _check_page(page)
        await _shot(page, tmp_path, f"{name}-desktop")
    # Logging out ends the session; the back button shows no data.
    await page.get_by_role("button", name="退出").click()
    await page.wait_for_url("**/staff/login?bye=1")
    await page.goto(str(site.client.make_url("/staff/users")))
    assert "/staff/login" in page.url


async def test_a_notice_from_compose_to_its_delivery_report(site: Site, browser: Any, tmp_path: Path) -> None:
    for i in range(4):
        await add_user(site.db, fake_openid(800 + i), T0, roles="veteran" if i < 2 else "",
                       kind="veteran" if i < 2 else None, name=f"老兵{i}", phone=f"1390000{i:04d}")
    site.fake.state.set_users({fake_openid(801): {"followed": False}})  # WeChat will refuse this one (43004)
    page = await _page(browser, DESKTOP)
    await _login_link(site, page, STAFF)
    await page.get_by_role("link", name="群发通知").click()
    await page.get_by_role("link", name="新建通知").click()
    # Keyboard only: type, Tab to the next field.
    await page.get_by_label("标题").focus()
    await page.keyboard.type("防汛预警")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "f-text"
    await page.keyboard.type("7月1日上午9点起有大暴雨，请远离河道和危房，注意安全。")
    await page.get_by_label("按身份").check()
    await page.get_by_label("身份", exact=True).select_option("veteran")
    # A warning: WeChat lets a template message reach people outside the chat window only for these.
    await page.get_by_label("灾害、故障预警").check()
    await _check_page(page)
    await _shot(page, tmp_path, "broadcast-compose-desktop")
    await page.get_by_role("button", name="发送", exact=True).click()
    await page.wait_for_url("**/staff/broadcasts/preview")
    assert await page.inner_text("#recipients") == "2"
    assert "登记为退役军人" in await page.inner_text("#explain")
    await _check_page(page)
    await _shot(page, tmp_path, "broadcast-confirm-desktop")
    await page.get_by_role("button", name="确认发送给 2 人").click()
    await page.wait_for_url("**/staff/broadcasts/*?done=queued")
    assert await page.inner_text("#n-pending") == "2"
    sender = build_sender(site.config, site.db, site.clock)
    try:
        await sender.deliver_due()
    finally:
        await sender.close()
    sent = [c for c in site.fake.state.calls if c["path"] == "/cgi-bin/message/template/send"]
    assert sorted(c["body"]["touser"] for c in sent) == [fake_openid(800), fake_openid(801)]
    assert all(c["body"]["data"]["thing2"]["value"].startswith("7月1日上午9点") for c in sent)
    # refresh.js updates the report by itself (every 10 s while pushes wait).
    await expect(page.locator("#n-sent")).to_have_text("1", timeout=WAIT_MS)
    assert await page.inner_text("#n-failed") == "1"
    assert "用户未关注公众号" in await page.inner_text("#not-reached") and "老兵1" in await page.inner_text("#not-reached")
    await _check_page(page)
    await _shot(page, tmp_path, "broadcast-report-desktop")
    phone = await _page(browser, PHONE)
    await _login_link(site, phone, STAFF)
    await phone.goto(page.url)
    await _check_page(phone)
    await _shot(phone, tmp_path, "broadcast-report-phone")


async def test_a_callup_board_updates_itself(site: Site, browser: Any, tmp_path: Path) -> None:
    await seed(site.db, roster_rows(TEAMS, 2), T0)
    page = await _page(browser, DESKTOP)
    await _login_link(site, page, STAFF)
    await page.goto(str(site.client.make_url("/staff/callups/new")))
    await page.get_by_label("类型").select_option("防汛")
    await page.get_by_label("集合地点").fill("城关镇防汛物资仓库")
    await page.get_by_label("集合时间").fill("30分钟后")
    await page.get_by_label("需要总人数").fill("3")
    await page.get_by_label("驾驶").fill("1")
    await page.get_by_label("演练", exact=True).check()
    await _check_page(page)
    await _shot(page, tmp_path, "callup-new-desktop")
    await page.get_by_role("button", name="下一步：确认").click()
    assert "将马上通知" in await page.inner_text("main")
    await page.get_by_role("button", name="确认发起").click()
    await page.wait_for_url("**/staff/callups/*?done=created")
    assert await page.inner_text("#c-confirmed") == "0/3"
    member = roster_rows(TEAMS, 2)[0].openid or ""
    assert "已记录：到" in (await site.chat(member, "1") or "")
    await expect(page.locator("#c-confirmed")).to_have_text("1/3", timeout=WAIT_MS)
    await _check_page(page)
    await _shot(page, tmp_path, "callup-board-desktop")
    phone = await _page(browser, PHONE)
    await _login_link(site, phone, STAFF)
    await phone.goto(page.url)
    await _check_page(phone)
    await _shot(phone, tmp_path, "callup-board-phone")
    await page.get_by_role("link", name="完整记录").click()
    await _check_page(page)
    await _shot(page, tmp_path, "callup-audit-desktop")
    await page.go_back()
    await page.get_by_role("link", name="结束集结").click()
    await page.get_by_role("button", name="确认结束").click()
    await page.wait_for_url("**?done=closed")
    assert "已结束" in await page.inner_text("main")


async def test_reviewing_messages_in_bulk(site: Site, browser: Any, tmp_path: Path) -> None:
    now = site.clock.now()
    async with site.db.session() as s:
        for i, text in enumerate(("英雄永垂不朽，我们永远怀念您", "广告：加微信领红包", "缅怀先烈，牢记历史")):
            await add_message(s, openid=fake_openid(850 + i), martyr_id=0, text=text, preset=False, status=PENDING,
                              now=now, day=now.date())
    page = await _page(browser, PHONE)
    await _login_link(site, page, STAFF)
    await page.get_by_role("link", name="寄语审核").click()
    await _check_page(page)
    await _shot(page, tmp_path, "moderation-phone")
    await page.get_by_label("广告：加微信领红包").check()
    await page.get_by_label("常见原因").select_option("含有广告或联系方式")
    await page.get_by_role("button", name="不通过所选").click()
    await page.wait_for_url("**/staff/memorial?a=0&r=1&s=0")
    await page.get_by_label("全选").check()
    await page.get_by_role("button", name="通过所选", exact=True).click()
    await page.wait_for_url("**/staff/memorial?a=2&r=0&s=0")
    assert "没有待审核的寄语" in await page.inner_text("main")
    await _shot(page, tmp_path, "moderation-done-phone")
    async with site.db.session() as s:
        statuses = sorted(m.status for m in (await s.execute(select(MemorialMessage))).scalars())
    assert statuses == sorted(["approved", "approved", REJECTED])
