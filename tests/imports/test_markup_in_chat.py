"""Issue 14 item 4: a job's requirements or a martyr's biography holding ``<a href=…>`` was sent verbatim
and WeChat showed it as a live link — phishing in an official account. Imports keep the text and drop
the tags; every chat reply puts stored text through bot.text.plain_text whatever the database holds; the
pages escape it. Checked through real XML on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from sqlalchemy import select

from bot.cli import main
from flows.imports import import_csv
from flows.jobs.alerts import posting_path
from storage.jobs import JobPosting
from storage.memorial import Martyr
from storage.models import OutboxMessage, Ticket
from tests.conftest import ROOT, make_config
from tests.helpers import app_client, chat_session

EVIL = '<a href="http://evil.example/claim">点此领取抚恤补贴</a>'
ROLL = ("name,gender,hometown,born,died,unit,place_of_death,burial,biography\n"
        f'周正平,男,示例县,1933,1952,示例团,示例高地,示例陵园,"【测试数据】担任通信员。{EVIL.replace(chr(34), chr(34) * 2)}"\n')
JOBS = ("company,title,location,type,requirements,contact\n"
        f'示例物业（测试）,保安,竹阳街道,全职,"身体健康。{EVIL.replace(chr(34), chr(34) * 2)}",王先生\n')


def live_links(reply: str) -> list[str]:
    """The targets of every link WeChat would render in a text reply."""
    return re.findall(r"<\s*a\b[^>]*href\s*=\s*[\"']?([^\"'\s>]+)", reply, flags=re.I)


def assert_no_foreign_link(reply: str | None, public_url: str) -> None:
    assert reply is not None
    assert "evil.example" not in reply
    for href in live_links(reply):
        assert href.startswith(public_url), (href, reply)


async def _browse(chat, openid: str, cfg) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    card_martyr = await chat.send(openid, "查找英烈 周正平")
    await chat.send(openid, "取消")
    await chat.send(openid, "找工作 保安")
    card_job = await chat.send(openid, "1")
    return card_martyr, card_job


async def test_markup_in_an_imported_csv_never_becomes_a_live_link_in_chat(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        async with chat.runtime.db.session() as s:
            for kind, data in (("martyrs", ROLL), ("jobs", JOBS)):
                rep = await import_csv(s, cfg, kind, data.encode(), now=chat.clock.now())
                assert rep.ok and rep.applied, rep.errors
        async with chat.runtime.db.session() as s:
            bio = (await s.execute(select(Martyr.biography))).scalar_one()
            req = (await s.execute(select(JobPosting.requirements))).scalar_one()
        assert bio == "【测试数据】担任通信员。点此领取抚恤补贴" and req == "身体健康。点此领取抚恤补贴"
        card_martyr, card_job = await _browse(chat, "u_reader", cfg)
        assert "点此领取抚恤补贴" in card_martyr and "点此领取抚恤补贴" in card_job
        for reply in (card_martyr, card_job):
            assert_no_foreign_link(reply, cfg.server.public_url)


async def test_markup_already_stored_is_plain_in_every_chat_reply(db_url: str) -> None:
    """Rows written before this release (or by any other path) still hold tags: replies neutralise them."""
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        now = chat.clock.now()
        async with chat.runtime.db.session() as s:
            s.add(Martyr(natural_key="k:evil", name="周正平", gender="男", hometown=f"示例县{EVIL}", born="1933",
                         died="1952", unit=EVIL, place_of_death="", burial="", biography=f"事迹{EVIL}",
                         photo_url=None, initials=" zzp ", pinyin="zhouzhengping", created_at=now, updated_at=now))
            s.add(JobPosting(natural_key="evil", company=f"示例物业{EVIL}", title="保安", location="竹阳街道",
                             salary_min=None, salary_max=None, job_type="全职", requirements=EVIL,
                             contact="&lt;a href=&quot;http://evil.example&quot;&gt;电话&lt;/a&gt;", deadline=None,
                             expires_at=None, veteran_priority=False, source="", search_text="保安", created_at=now,
                             updated_at=now))
        card_martyr, card_job = await _browse(chat, "u_reader", cfg)
        for reply in (card_martyr, card_job):
            assert_no_foreign_link(reply, cfg.server.public_url)
        assert "事迹点此领取抚恤补贴" in card_martyr and "部队：点此领取抚恤补贴" in card_martyr
        assert "要求：点此领取抚恤补贴" in card_job and "联系：电话" in card_job
        # The memorial's own link (to this server) is still there.
        assert any(h.startswith(cfg.server.public_url) for h in live_links(card_martyr))


async def test_pages_escape_stored_markup(db_url: str) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with app_client(cfg) as (client, runtime):
        now = runtime.clock.now()
        async with runtime.db.session() as s:
            m = Martyr(natural_key="k:evil", name="周正平", gender="男", hometown="", born="", died="", unit="",
                       place_of_death="", burial="", biography=f"事迹{EVIL}", photo_url=None, initials="", pinyin="",
                       created_at=now, updated_at=now)
            p = JobPosting(natural_key="evil", company="示例物业", title="保安", location="竹阳街道", salary_min=None,
                           salary_max=None, job_type="全职", requirements=EVIL, contact="王先生", deadline=None,
                           expires_at=None, veteran_priority=False, source="", search_text="保安", created_at=now,
                           updated_at=now)
            s.add_all([m, p])
            await s.flush()
            mid, pid = m.id, p.id
            job = await posting_path(s, cfg, "u_reader", pid, now)
        for url in (f"/m/{mid}", job):
            html = await (await client.get(url)).text()
            # escaped as text (html.escape writes &quot;, Jinja2's autoescape &#34;), never a live link
            assert re.search(r"&lt;a href=(&quot;|&#34;)http://evil\.example/claim(&quot;|&#34;)&gt;", html), url
            assert '<a href="http://evil' not in html, url


def test_ticket_reply_with_markup_is_plain(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from storage.db import Database

    async def seed() -> int:
        db = Database(db_url)
        try:
            async with db.session() as s:
                t = Ticket(openid="u_asker", text="怎么办优待证", context={}, status="open",
                           created_at=datetime(2026, 4, 1))
                s.add(t)
                await s.flush()
                return t.id
        finally:
            await db.close()

    async def pushed() -> str:
        db = Database(db_url)
        try:
            async with db.session() as s:
                return (await s.execute(select(OutboxMessage.payload))).scalar_one()["text"]
        finally:
            await db.close()

    tid = asyncio.run(seed())
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)
    with pytest.raises(SystemExit):
        main(["tickets", "reply", "-c", str(ROOT / "config.example.yaml"), str(tid), f"请看{EVIL}"])
    capsys.readouterr()
    text = asyncio.run(pushed())
    assert "请看点此领取抚恤补贴" in text and "<a" not in text
