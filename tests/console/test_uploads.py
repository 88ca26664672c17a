"""导入 in the console: a GBK roster with a bad phone answered with its line and column and nothing
imported; the fixed file checked (a dry run: counts and a sample), then confirmed and imported, audited.
The confirmation carries the file signed for this session: a changed file, another session or a
missing CSRF token imports nothing; a file over ``console.upload_max_kb`` is refused. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from sqlalchemy import func, select

from storage.callup import Member
from storage.console import StaffAudit
from storage.jobs import JobPosting
from storage.memorial import Martyr
from tests.console.conftest import ADMIN, STAFF, Site

DATA = Path(__file__).parents[1] / "imports" / "data"
GOOD = DATA / "roster_excel_gbk.csv"


def bad_roster() -> bytes:
    """The Excel (GBK) roster with line 3's phone mistyped."""
    text = GOOD.read_bytes().decode("gbk").replace("13900001002", "1390000100")
    return text.encode("gbk")


def _upload(csrf: str, data: bytes, name: str = "名册.csv", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("csrf", csrf)
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("file", data, filename=name, content_type="text/csv")
    return form


def _confirm(body: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', body))


async def _members(site: Site) -> int:
    async with site.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(Member))).scalar_one())


async def test_gbk_roster_error_at_its_line_then_fixed_checked_and_imported(site: Site) -> None:
    csrf = await site.login(STAFF)
    page = await (await site.client.get("/staff/imports/roster")).text()
    assert 'type="file"' in page and "应急队伍名册" in page
    resp = await site.client.post("/staff/imports/roster/check", data=_upload(csrf, bad_roster()))
    body = await resp.text()
    assert resp.status == 400 and "没有导入任何数据" in body
    assert re.search(r"第 3 行</td>\s*<td[^>]*>C 列（手机号（必填））</td>", body), body[:3000]
    assert "GBK" in body and 'name="payload"' not in body  # nothing to confirm
    assert await _members(site) == 0

    resp = await site.client.post("/staff/imports/roster/check", data=_upload(csrf, GOOD.read_bytes()))
    body = await resp.text()
    assert resp.status == 200 and "检查通过" in body and "现在还没有导入任何数据" in body
    rows = sum(1 for line in GOOD.read_bytes().decode("gbk").splitlines()[1:] if line.strip(", "))
    assert f"新增 {rows} 行" in body and "刘德胜" in body
    assert await _members(site) == 0  # a dry run writes nothing

    hidden = _confirm(body)
    resp = await site.client.post("/staff/imports/roster/apply", data=hidden)
    body = await resp.text()
    assert resp.status == 200 and "已导入" in body and f"新增 {rows} 行" in body
    assert await _members(site) == rows
    async with site.db.session() as s:
        entry = (await s.execute(select(StaffAudit).where(StaffAudit.action == "import.roster"))).scalar_one()
        assert entry.actor == STAFF and entry.detail["counts"]["new"] == rows and entry.detail["encoding"] == "GBK"

    # The same file again: every row unchanged.
    body = await (await site.client.post("/staff/imports/roster/check", data=_upload(csrf, GOOD.read_bytes()))).text()
    assert f"不变 {rows} 行" in body


async def test_a_changed_or_foreign_confirmation_imports_nothing(site: Site) -> None:
    csrf = await site.login(STAFF)
    body = await (await site.client.post("/staff/imports/roster/check", data=_upload(csrf, GOOD.read_bytes()))).text()
    hidden = _confirm(body)
    import base64

    other = GOOD.read_bytes().replace("刘德胜".encode("gbk"), "刘德利".encode("gbk"))
    for forged in ({**hidden, "payload": base64.b64encode(other).decode()}, {**hidden, "sig": "0" * 64},
                   {**hidden, "payload": "不是base64"}):
        resp = await site.client.post("/staff/imports/roster/apply", data=forged)
        assert resp.status == 400 and "没有导入任何数据" in await resp.text()
    # another staff member's session cannot confirm it either
    site.client.session.cookie_jar.clear()
    csrf2 = await site.login(ADMIN)
    resp = await site.client.post("/staff/imports/roster/apply", data={**hidden, "csrf": csrf2})
    assert resp.status == 400
    # and without the CSRF token: 403
    no_csrf = {k: v for k, v in hidden.items() if k != "csrf"}
    assert (await site.client.post("/staff/imports/roster/apply", data=no_csrf)).status == 403
    assert (await site.client.post("/staff/imports/roster/check",
                                   data=_upload("", GOOD.read_bytes()))).status == 403
    assert await _members(site) == 0


async def test_upload_limits_and_odd_files(site: Site) -> None:
    csrf = await site.login(STAFF)
    limit = site.config.console.upload_max_kb * 1024
    resp = await site.client.post("/staff/imports/roster/check", data=_upload(csrf, b"a," * (limit // 2 + 10)))
    assert resp.status == 413 and "文件太大" in await resp.text()
    big = b"x" * (limit * 2)  # past the request limit: refused before it is read
    resp = await site.client.post("/staff/imports/roster/check", data=_upload(csrf, big))
    assert resp.status == 413 and "文件太大" in await resp.text()
    resp = await site.client.post("/staff/imports/roster/check", data=_upload(csrf, b""))
    assert resp.status == 400 and "空的" in await resp.text()
    resp = await site.client.post("/staff/imports/roster/check", data=_upload(csrf, "名字\n".encode("utf-16")))
    body = await resp.text()
    assert resp.status == 400 and "UTF-16" in body
    assert (await site.client.get("/staff/imports/nope")).status == 404
    tpl = await site.client.get("/staff/imports/roster/template.csv")
    assert tpl.status == 200 and (await tpl.read()).decode("utf-8-sig").startswith("队伍,姓名,手机号")


async def test_martyrs_and_jobs_upload(site: Site) -> None:
    csrf = await site.login(STAFF)
    body = await (await site.client.post("/staff/imports/martyrs/check",
                                         data=_upload(csrf, (DATA / "martyrs_wps_bom.csv").read_bytes()))).text()
    assert "检查通过" in body and "UTF-8（带BOM）" in body
    body = await (await site.client.post("/staff/imports/martyrs/apply", data=_confirm(body))).text()
    assert "已导入" in body
    async with site.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(Martyr))).scalar_one() > 0
    jobs = (DATA / "jobs_gb18030.csv").read_bytes()
    body = await (await site.client.post("/staff/imports/jobs/check",
                                         data=_upload(csrf, jobs, skip_expired="1", default_source="春季招聘会"))).text()
    assert "检查通过" in body, body
    hidden = _confirm(body)
    assert hidden.get("skip_expired") == "1" and hidden.get("default_source") == "春季招聘会"
    assert "notify" not in hidden
    body = await (await site.client.post("/staff/imports/jobs/apply", data=hidden)).text()
    assert "已导入" in body
    async with site.db.session() as s:
        assert (await s.execute(select(func.count()).select_from(JobPosting))).scalar_one() > 0


def test_upload_limit_is_checked_in_the_config() -> None:
    import pytest

    from bot.config import ConfigError, ConsoleConfig

    assert ConsoleConfig().upload_max_kb == 2048
    for bad in (0, 15, 10241):
        with pytest.raises(ConfigError, match="upload_max_kb"):
            ConsoleConfig(upload_max_kb=bad)
