"""The Qingming fast path: on a batched SQLite turn a tribute's statements run inline on the batch's
connection instead of through an ORM session. Both paths must write the very same rows — tribute rows,
counters, participants and the 默哀 push in the outbox, byte for byte as stored — and a push queued
inline must wake the outbox sender after the commit, as one queued through the ORM session does."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from bot.clock import FakeClock
from bot.outbox import build_sender
from flows.memorial import service
from storage.db import Database
from storage.memorial import (
    MEMORIAL,
    MemorialCounter,
    MemorialParticipant,
    MemorialTribute,
    is_opted_in,
    martyrs_named,
    opt_in,
)
from storage.models import OutboxMessage
from storage.turnio import inline_sql
from tests.conftest import database_url, make_config
from tests.memorial.conftest import seed_roll

T0 = datetime(2026, 4, 4, 2, 0)  # 10:00 on Qingming in Asia/Shanghai
#: (openid, martyr id, action, minutes after T0): counted tributes, repeats, a second participant, the
#: memorial as a whole, and two 默哀 (each queues its "minute is over" push).
SCRIPT = [
    ("qm_a", 1, "flower", 0), ("qm_a", 1, "flower", 1), ("qm_a", 1, "salute", 2), ("qm_b", 1, "flower", 3),
    ("qm_b", MEMORIAL, "candle", 4), ("qm_a", 2, "silence", 5), ("qm_b", MEMORIAL, "silence", 6),
    ("qm_b", MEMORIAL, "silence", 7),
]
TABLES = {"memorial_tributes": "day, martyr_id, openid, action", "memorial_counters": "martyr_id, action",
          "memorial_participants": "openid", "outbox": "id"}


async def _tribute(db: Database, cfg: Any, openid: str, mid: int, action: str, now: datetime, *, orm: bool) -> Any:
    async def fn(s: Any) -> Any:
        if orm:
            # Opening the turn's ORM session first sends everything through it (as on PostgreSQL).
            await s.execute(text("SELECT 1"))
            assert inline_sql(s) is None
        elif db.is_sqlite:
            assert inline_sql(s) is not None, "a fresh batched turn must offer the inline path"
        name = None if mid == MEMORIAL else (await martyrs_named(s, "张建国" if mid == 1 else "李秀英"))[0][1]
        return await service.pay_tribute(s, cfg, openid=openid, martyr_id=mid, name=name, action=action, now=now)

    return await db.transaction(fn)


async def _run(url: str, *, orm: bool) -> list[Any]:
    cfg = make_config(url)
    db = Database(url)
    try:
        outs = []
        for openid, mid, action, minute in SCRIPT:
            now = T0.replace(minute=minute)
            outs.append(await _tribute(db, cfg, openid, mid, action, now, orm=orm))
        return outs
    finally:
        await db.close()


def _dump_sqlite(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row as SQLite stores it (text of dates and JSON included)."""
    con = sqlite3.connect(url.split("///", 1)[1])
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {order}").fetchall() for t, order in TABLES.items()}
    finally:
        con.close()


async def _check_rows(url: str) -> None:
    """What the script must have written, checked through SQLAlchemy (on either database)."""
    db = Database(url)
    try:
        async with db.session() as s:
            counters = {(m, a): n for m, a, n in await s.execute(
                select(MemorialCounter.martyr_id, MemorialCounter.action, MemorialCounter.n))}
            assert counters == {(1, "flower"): 2, (1, "salute"): 1, (MEMORIAL, "candle"): 1, (2, "silence"): 1,
                                (MEMORIAL, "silence"): 1}
            assert (await s.execute(select(func.count()).select_from(MemorialTribute))).scalar() == 6
            assert set((await s.execute(select(MemorialParticipant.openid))).scalars()) == {"qm_a", "qm_b"}
            pushes = list((await s.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars())
            # Three 默哀, three pushes (one per minute key), due a minute later, emergency-free priority.
            assert [p.idempotency_key for p in pushes] == [
                "qm_a:memorial:silence:2:202604040205", "qm_b:memorial:silence:0:202604040206",
                "qm_b:memorial:silence:0:202604040207"]
            p = pushes[0]
            assert (p.purpose, p.status, p.attempts, p.skipped_channels) == ("memorial_reminder", "pending", 0, [])
            assert p.due_at == T0.replace(minute=6) and p.created_at == T0.replace(minute=5)
            assert p.payload["data"]["title"] == "默哀结束" and "李秀英" in p.payload["data"]["martyr"]
            assert (p.ref_type, p.ref_id) == ("memorial_martyr", 2)
    finally:
        await db.close()


async def test_fast_and_orm_paths_write_identical_rows(db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        # No batched turns on PostgreSQL: the ORM path is the only one; it must write the same rows.
        await seed_roll(db_url)
        await _run(db_url, orm=False)
        await _check_rows(db_url)
        return
    outs, dumps = {}, {}
    for path in ("inline", "orm"):
        (tmp_path / path).mkdir()
        url = database_url("sqlite", tmp_path / path)[0]
        await seed_roll(url)
        outs[path] = await _run(url, orm=path == "orm")
        await _check_rows(url)
        dumps[path] = _dump_sqlite(url)
    assert [(o.counted, o.n, o.text) for o in outs["inline"]] == [(o.counted, o.n, o.text) for o in outs["orm"]]
    assert [o.counted for o in outs["inline"]] == [True, False, True, True, True, True, True, False]
    for table in TABLES:
        assert dumps["inline"][table] == dumps["orm"][table], f"{table} differs between the two paths"


async def test_inline_reads_agree_with_the_orm(tmp_path: Path) -> None:
    url = database_url("sqlite", tmp_path)[0]
    await seed_roll(url)
    db = Database(url)
    try:
        async with db.session() as s:
            await opt_in(s, "qm_r", T0)

        async def read(s: Any) -> Any:
            if read.orm:  # type: ignore[attr-defined]
                await s.execute(text("SELECT 1"))
            return (await martyrs_named(s, "无名烈士"), await martyrs_named(s, "没有这个人"),
                    await is_opted_in(s, "qm_r"), await is_opted_in(s, "qm_x"))

        read.orm = False  # type: ignore[attr-defined]
        fast = await db.transaction(read)
        read.orm = True  # type: ignore[attr-defined]
        assert fast == await db.transaction(read)
        assert fast == ([(11, "无名烈士"), (12, "无名烈士")], [], True, False)
    finally:
        await db.close()


@pytest.mark.parametrize("orm", [False, True], ids=["inline", "orm"])
async def test_a_queued_push_wakes_the_sender_after_the_commit_only(db_url: str, orm: bool) -> None:
    if orm and not db_url.startswith("sqlite"):
        pytest.skip("on PostgreSQL every path is the ORM path (the inline case covers it)")
    await seed_roll(db_url)
    cfg = make_config(db_url)
    db = Database(db_url)
    sender = build_sender(cfg, db, FakeClock(T0), worker="test-sender")
    try:
        seen_inside: list[bool] = []

        async def silence(s: Any, minute: int, fail: bool = False) -> None:
            if orm:
                await s.execute(text("SELECT 1"))
            await service.pay_tribute(s, cfg, openid="qm_w", martyr_id=MEMORIAL, name=None, action="silence",
                                      now=T0.replace(minute=minute))
            seen_inside.append(sender._wake.is_set())
            if fail:
                raise RuntimeError("the turn failed after queueing")

        sender._wake.clear()
        with pytest.raises(RuntimeError):
            await db.transaction(lambda s: silence(s, 1, fail=True))
        assert not sender._wake.is_set(), "a rolled-back push must not wake the sender"
        await db.transaction(lambda s: silence(s, 2))
        assert sender._wake.is_set(), "a committed push must wake the sender"
        if not orm:
            # Inline: woken after the COMMIT itself (the ORM session's hook fires at its SAVEPOINT release).
            assert seen_inside == [False, False]
        async with db.session() as s:
            keys = list((await s.execute(select(OutboxMessage.idempotency_key))).scalars())
        assert keys == ["qm_w:memorial:silence:0:202604040202"]
    finally:
        await sender.close()
        await db.close()
