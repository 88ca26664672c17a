"""知识库 and 导入 in Debian's Chromium (Playwright): an administrator edits an entry (a too-long answer
refused at the field first) and the bot then answers with the edited text through WeChat XML; 试问 and
问答缺口 on a phone; a GBK roster uploaded with an error shown at its line, fixed, checked and imported.
Every page is checked (labels, 16 px text, no sideways scrolling) and photographed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from storage.callup import Member
from tests.console import test_browser
from tests.console.conftest import ADMIN, PUBLIC, STAFF, Site
from tests.console.test_browser import DESKTOP, PHONE, _check_page, _login_link, _page, _shot, expect
from tests.console.test_uploads import GOOD, bad_roster

browser = test_browser.browser  # the same Chromium fixture

pytestmark = pytest.mark.browser
QUESTION = "优待证怎么申领？"
EDITED = "（后台修改）优待证请到县退役军人事务局一楼综合窗口办理，带身份证和退伍证。"


async def test_a_kb_edit_is_what_the_bot_answers(site: Site, browser: Any, tmp_path: Path) -> None:
    await site.chat(PUBLIC, "政策问答")
    assert EDITED not in (await site.chat(PUBLIC, QUESTION) or "")
    page = await _page(browser, DESKTOP)
    await _login_link(site, page, ADMIN)
    await page.get_by_role("link", name="知识库").click()
    await page.get_by_label("查找（问题、回答、标签里的字词）").fill("优待证")
    await page.get_by_role("button", name="查找").click()
    await _check_page(page)
    await _shot(page, tmp_path, "kb-list-desktop")
    await page.get_by_role("link", name=QUESTION).click()
    await page.get_by_label("回答", exact=True).fill("太长了" * 250)
    await page.get_by_role("button", name="保存").click()
    await expect(page.locator("#answer-err")).to_contain_text("最多 600 个字")
    assert await page.get_attribute("#f-answer", "aria-invalid") == "true"
    await _check_page(page)
    await _shot(page, tmp_path, "kb-edit-error-desktop")
    await page.get_by_label("回答", exact=True).fill(EDITED)
    await page.get_by_role("button", name="保存").click()
    await page.wait_for_url("**/staff/kb/entry/youdaizheng_apply?done=saved")
    assert "已保存" in await page.inner_text("main") and "管理员甲" in await page.inner_text("#kb-history")
    await _check_page(page)
    await _shot(page, tmp_path, "kb-saved-desktop")
    # The bot, through the real WeChat callback, answers with the edited text: no restart.
    await site.chat(PUBLIC, "政策问答")
    assert (await site.chat(PUBLIC, QUESTION) or "").startswith(EDITED)
    # 试问 shows the same.
    await page.get_by_role("link", name="试问机器人").click()
    await page.get_by_label("问题", exact=True).fill("办优待证需要带什么材料")
    await page.get_by_role("button", name="试问").click()
    await expect(page.locator("#kb-reply")).to_contain_text(EDITED)
    await _check_page(page)
    await _shot(page, tmp_path, "kb-preview-desktop")


async def test_gaps_on_a_phone(site: Site, browser: Any, tmp_path: Path) -> None:
    await site.chat(PUBLIC, "政策问答")
    assert "还没有收录" in (await site.chat(PUBLIC, "退役老兵下象棋比赛在哪里报名") or "")
    page = await _page(browser, PHONE)
    await _login_link(site, page, ADMIN)
    await page.goto(str(site.client.make_url("/staff/kb/gaps")))
    assert "下象棋" in await page.inner_text("#kb-gaps")
    await _check_page(page)
    await _shot(page, tmp_path, "kb-gaps-phone")
    await page.get_by_role("link", name="新增条目").last.click()
    assert await page.get_by_label("问题", exact=True).input_value() == "退役老兵下象棋比赛在哪里报名"
    await page.get_by_label("回答", exact=True).fill("老兵象棋比赛由县老干部活动中心组织，报名电话见县局公众号通知。")
    await page.get_by_role("button", name="保存").click()
    await page.wait_for_url("**/staff/kb/entry/kb_001?done=created")
    await _check_page(page)
    await _shot(page, tmp_path, "kb-new-phone")
    await site.chat(PUBLIC, "政策问答")
    assert (await site.chat(PUBLIC, "退役老兵下象棋比赛在哪里报名") or "").startswith("老兵象棋比赛")


async def test_a_gbk_roster_upload_with_an_error_fixed_and_imported(site: Site, browser: Any,
                                                                     tmp_path: Path) -> None:
    bad, good = tmp_path / "名册-有错.csv", tmp_path / "名册.csv"
    bad.write_bytes(bad_roster())
    good.write_bytes(GOOD.read_bytes())
    page = await _page(browser, DESKTOP)
    await _login_link(site, page, STAFF)
    await page.get_by_role("link", name="导入", exact=True).click()
    await _check_page(page)
    await _shot(page, tmp_path, "imports-desktop")
    await page.get_by_role("link", name="导入应急队伍名册").click()
    await page.get_by_label("CSV 文件").set_input_files(str(bad))
    await _check_page(page)
    await page.get_by_role("button", name="检查文件").click()
    await expect(page.locator("#import-errors")).to_contain_text("第 3 行")
    row = page.locator("#import-errors tbody tr").first
    assert "C 列" in await row.inner_text() and "手机号" in await row.inner_text()
    assert "没有导入任何数据" in await page.inner_text("#import-errors-summary")
    await _check_page(page)
    await _shot(page, tmp_path, "import-errors-desktop")
    await page.get_by_role("link", name="重新选择文件").click()
    await page.get_by_label("CSV 文件").set_input_files(str(good))
    await page.get_by_role("button", name="检查文件").click()
    await expect(page.locator("#import-check")).to_contain_text("新增 4 行")
    assert "刘德胜" in await page.inner_text("#import-preview")
    async with site.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Member))).scalar_one() == 0
    await _check_page(page)
    await _shot(page, tmp_path, "import-check-desktop")
    await page.get_by_role("button", name="确认导入").click()
    await expect(page.locator("#import-done")).to_contain_text("新增 4 行")
    await _check_page(page)
    await _shot(page, tmp_path, "import-done-desktop")
    async with site.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Member))).scalar_one() == 4
    phone = await _page(browser, PHONE)
    await _login_link(site, phone, STAFF)
    await phone.goto(str(site.client.make_url("/staff/imports/jobs")))
    await _check_page(phone)
    await _shot(phone, tmp_path, "import-jobs-phone")
