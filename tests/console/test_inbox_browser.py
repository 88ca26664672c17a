"""The 人工 inbox in Debian's Chromium (Playwright): a two-way ticket — the person writes in WeChat (real
signed XML), the staff member sees it appear on the page by itself, answers from the page (the fake WeChat
API receives the kefu message), sees the person's answer arrive in the thread, and ends the ticket — on an
office PC and on a phone, each page checked (labels, 16 px text, no sideways scrolling) and photographed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.outbox import build_sender
from tests.console.conftest import PUBLIC, STAFF, Site
from tests.console.test_browser import (  # noqa: F401 - the browser fixture
    DESKTOP,
    PHONE,
    WAIT_MS,
    _check_page,
    _login_link,
    _page,
    _shot,
    browser,
    expect,
)

pytestmark = pytest.mark.browser


async def test_a_two_way_ticket_through_the_inbox_page(site: Site, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    page = await _page(browser, DESKTOP)
    await _login_link(site, page, STAFF)
    await page.get_by_role("link", name="人工", exact=True).click()
    await page.wait_for_url("**/staff/inbox")
    assert "现在没有待处理的人工留言" in await page.inner_text("main")
    # The person asks for 人工 in WeChat: the list updates itself (refresh.js) and shows who is waiting.
    assert "请直接输入" in (await site.chat(PUBLIC, "人工") or "")
    assert "结束人工" in (await site.chat(PUBLIC, "我父亲的抚恤金这个月没到账，请帮忙查一下") or "")
    await expect(page.locator("#open-tickets")).to_contain_text("群众丙", timeout=WAIT_MS)
    await expect(page.locator("#open-tickets")).to_contain_text("抚恤金", timeout=WAIT_MS)
    await _check_page(page)
    await _shot(page, tmp_path, "inbox-desktop")
    await page.locator("#open-tickets a").first.click()
    await page.wait_for_url("**/staff/inbox/*")
    assert "抚恤金这个月没到账" in await page.inner_text("#thread")
    await page.locator("#recent summary").click()  # what the bot said just before (人工's prompt)
    assert "请直接输入您要留给工作人员的话" in await page.inner_text("#recent")
    assert "客服消息直接出现在对方的对话里" in await page.inner_text("#reply")
    await page.get_by_label("回复内容").fill("您好，已转财务股核实，明天上午给您回电话。")
    await _check_page(page)
    await _shot(page, tmp_path, "inbox-ticket-desktop")
    await page.get_by_role("button", name="发送回复").click()
    await page.wait_for_url("**?done=replied*")
    assert "回复已发出" in await page.inner_text("main")
    sender = build_sender(site.config, site.db, site.clock)
    try:
        await sender.deliver_due()
    finally:
        await sender.close()
    sent = [c for c in site.fake.state.calls if c["path"] == "/cgi-bin/message/custom/send"
            and c["body"]["touser"] == PUBLIC]
    assert len(sent) == 1 and "明天上午给您回电话" in sent[0]["body"]["text"]["content"]
    # The person answers in WeChat: no bot reply; it appears in the thread by itself.
    assert await site.chat(PUBLIC, "好的，谢谢你们") is None
    await expect(page.locator("#thread")).to_contain_text("好的，谢谢你们", timeout=WAIT_MS)
    await expect(page.locator("#thread")).to_contain_text("已送达微信（客服消息）", timeout=WAIT_MS)
    await _shot(page, tmp_path, "inbox-thread-desktop")
    # On a phone too.
    phone = await _page(browser, PHONE)
    await _login_link(site, phone, STAFF)
    await phone.goto(page.url.split("?")[0])
    await _check_page(phone)
    await _shot(phone, tmp_path, "inbox-ticket-phone")
    await page.get_by_role("button", name="结束人工服务").click()
    await page.wait_for_url("**/staff/inbox?done=closed-*")
    assert "已结束" in await page.inner_text("main") and "最近结束的" in await page.inner_text("main")
    await _shot(page, tmp_path, "inbox-closed-desktop")
    # The bot answers the person again.
    assert "您可以回复数字办理" in (await site.chat(PUBLIC, "帮助") or "")
