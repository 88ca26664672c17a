"""Issue 18, "done when": a person who registered, bound to a team, subscribed to jobs, paid tribute with a
寄语, answered a call-up and opened a ticket sees all of it in 我的数据 (chat, page, JSON), sends 注销,
confirms — and afterwards no column of any table (SQLite and PostgreSQL) and no byte of the SQLite file
holds their openid, name or phone, except the roster entry staff entered (unbound, kept, staff told),
while tribute and call-up counts are unchanged. Everything through real signed, encrypted XML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select

from storage import callup as callup_store
from storage import memorial as memorial_store
from storage.callup import CallUpAnswer, Member
from storage.models import OutboxMessage, Ticket, User
from storage.privacy import Erasure, collect
from tests.conftest import make_config
from tests.helpers import chat_session
from tests.memorial.conftest import seed_roll
from tests.privacy.conftest import (
    NAME,
    OTHER,
    PERSON,
    PHONE,
    STAFF,
    T0,
    copy_without_row,
    raw_hits,
    say,
    search_database,
    seed_team,
    sqlite_path,
    tick,
    use_everything,
)


async def _counts(chat: Any, callup_id: int) -> dict[str, Any]:
    async with chat.runtime.db.session() as s:
        day = memorial_store.activity_range
        lo, hi = await day(s)
        stats, people = await memorial_store.day_stats(s, lo, hi) if lo and hi else ([], 0)
        return {"totals": await memorial_store.totals(s), "counts_3": await memorial_store.counts(s, 3),
                "people": people, "daily": [(d.day, d.participants, d.actions) for d in stats],
                "callup": await callup_store.status_counts(s, callup_id),
                "answers": (await s.execute(select(func.count()).select_from(CallUpAnswer))).scalar_one()}


async def _check_my_data(chat: Any, base: str) -> None:
    """我的数据 lists every kind of data the person has; its page and JSON have all of it."""
    async with chat.runtime.db.session() as s:
        kinds = [f for f in await collect(s, PERSON) if f.relation in ("subject", "via")]
    tables = {f.decl.table for f in kinds}
    assert {"users", "privacy_consents", "callup_members", "callup_targets", "callup_answers", "jobs_subscriptions",
            "memorial_tributes", "memorial_participants", "memorial_messages", "memorial_reminders", "tickets",
            "outbox", "conversations"} <= tables, tables
    reply = await say(chat, "我的数据")
    for f in kinds:
        assert f"· {f.decl.label}：" in reply, (f.decl.table, reply)
    assert "139" not in reply and PHONE not in reply and "136****4321" in reply
    link = re.search(r"https?://\S+/privacy/mine\?t=[\w-]+", reply)
    assert link, reply
    url = base + link.group(0).split("8080", 1)[1]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(url) as resp:
            page = await resp.text()
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert NAME in page and PHONE not in page and "136****4321" in page  # masked on the page
        for f in kinds:
            assert f.decl.label in page
        async with http.get(url.replace("/privacy/mine?", "/privacy/mine.json?")) as resp:
            assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
            assert "attachment" in resp.headers["Content-Disposition"]
            doc = await resp.json()
    assert doc["openid"] == PERSON
    got = {(i["table"], i["relation"]): i["rows"] for i in doc["items"]}
    for f in kinds:
        rows = got[(f.decl.table, f.relation)]
        if f.decl.table == "link_tokens":  # opening the page itself added the viewer's page session
            assert len(rows) >= len(f.rows) and {r["kind"] for r in f.rows} <= {r["kind"] for r in rows}
            continue
        assert len(rows) == len(f.rows), f.decl.table
    users = got[("users", "subject")][0]
    assert users["name"] == NAME and users["phone"] == PHONE  # the download is the person's own full copy
    assert any(NAME in r["text"] for r in got[("memorial_messages", "subject")])
    # another phone with the same link sees nothing
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        async with other.get(url) as resp:
            assert resp.status == 403 and NAME not in await resp.text()


async def test_scripted_person_is_erased_from_every_table_and_the_file(db_url: str, tmp_path: Path) -> None:
    await seed_team(db_url, T0)
    await seed_roll(db_url)
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        base = chat.url.rsplit("/", 1)[0]
        callup_id = await use_everything(chat)
        before = await _counts(chat, callup_id)
        assert before["totals"]["flower"] == 1 and before["totals"]["message"] == 1 and before["totals"]["people"] == 1
        assert before["answers"] == 2
        await _check_my_data(chat, base)

        # 注销: what goes, what stays, then 确认
        r = await say(chat, "注销")
        for words in ("我的信息", "人工留言", "寄语", "岗位订阅", "同意记录", "只以匿名数字保留", "祭扫记录",
                      "应急队伍名册", "确认"):
            assert words in r, (words, r)
        assert "已删除" in await say(chat, "确认")
        await tick(chat, "privacy_compact")

        db = chat.runtime.db
        hits = await search_database(db, [PERSON, NAME, PHONE])
        # The only place left: the roster entry staff entered (name and phone), no longer bound.
        assert {(h.table, h.column) for h in hits} <= {("callup_members", "name"), ("callup_members", "phone")}, \
            [(h.table, h.column, h.needle) for h in hits]
        assert not [h for h in hits if h.needle == PERSON]
        async with db.session() as s:
            m = (await s.execute(select(Member).where(Member.phone == PHONE))).scalar_one()
            assert m.openid is None and m.bound_at is None and m.name == NAME
            other = (await s.execute(select(Member).where(Member.openid == OTHER))).scalar_one()
            assert other.bound_at is not None
            told = list((await s.execute(select(OutboxMessage).where(OutboxMessage.openid == STAFF,
                                                                     OutboxMessage.purpose == "notice"))).scalars())
            notice = [o for o in told if "解除绑定" in o.payload["text"]]
            assert len(notice) == 1 and "尾号 4321" in notice[0].payload["text"] and f"第 {m.id} 号" in notice[0].payload["text"]
            mention = next(o for o in told if o.idempotency_key.endswith("t:mention"))
            assert mention.payload["text"] == "请联系〔已注销〕（〔已注销〕），openid 〔已注销〕"
            assert mention.payload["data"] == {"phone": "〔已注销〕"}
            log = list((await s.execute(select(Erasure))).scalars())
            assert len(log) == 1 and log[0].by == "self" and log[0].compacted_at is not None
            assert log[0].counts["users"] == {"deleted": 1} and log[0].counts["callup_members"] == {"unbound": 1}
            assert log[0].counts["memorial_tributes"]["pseudonymised"] == 2  # 献花 + 寄语
            assert (await s.get(User, OTHER)) is not None
            assert (await s.execute(select(func.count()).select_from(Ticket))).scalar_one() == 0
        after = await _counts(chat, callup_id)
        assert after == before, (before, after)

        path = sqlite_path(db_url)
        if path is not None:
            # The raw file (and its WAL) after the erasure's VACUUM + checkpoint: not even deleted rows or old
            # versions of rewritten rows (every turn rewrites the conversation row) hold the openid.
            assert raw_hits(path, [PERSON]) == {}
            # Name and phone live on in the roster row only: without it, the file holds none of the three.
            copy = copy_without_row(path, tmp_path / "copy.db", "callup_members", m.id)
            assert raw_hits(copy, [PERSON, NAME, PHONE]) == {}


async def test_the_file_holds_the_person_until_the_compaction_runs(db_url: str) -> None:
    """Why the compaction exists: right after the erasure's commit, old versions of rewritten rows (the
    conversation row is rewritten on every turn) still sit in the SQLite file or its WAL."""
    path = sqlite_path(db_url)
    if path is None:
        return  # a SQLite file property
    cfg = make_config(db_url, bot__fallback_flow="help")
    async with chat_session(cfg) as chat:
        chat.clock.set(T0)
        for text in ("我的信息", "1", NAME, PHONE, "城关镇", "1", "人工", f"请{NAME}回电 {PHONE}", "结束人工"):
            await say(chat, text)
        await say(chat, "注销")
        assert "已删除" in await say(chat, "确认")
        hits = await search_database(chat.runtime.db, [PERSON, NAME, PHONE])
        assert hits == [], hits  # logically gone at once
        before = raw_hits(path, [PERSON, NAME, PHONE])
        await tick(chat, "privacy_compact")
        assert raw_hits(path, [PERSON, NAME, PHONE]) == {}
    assert before, "expected remnants before compaction (otherwise this test proves nothing)"
