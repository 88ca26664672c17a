"""`vetbot users erase / export` and `vetbot privacy tables / purge / check`, on SQLite and PostgreSQL: staff
erase a person (recorded in the audit log with who did it); a staff member's own openid in the records of
what they did becomes the erasure's pseudonym everywhere."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from flows.api import Services, load_all
from flows.callup.service import CallupSpec, create_callup
from storage.callup import CallUp, CallUpEvent
from storage.db import Database
from storage.memorial import MemorialTribute
from storage.models import Ticket, User
from storage.privacy import Erasure
from tests.conftest import ROOT, make_config
from tests.privacy.conftest import NAME, PERSON, PHONE, STAFF, T0, search_database, seed_team


def vetbot(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db_url: str,
           *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)
    with pytest.raises(SystemExit) as e:
        main([*args[:2], "-c", str(ROOT / "config.example.yaml"), *args[2:]])
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


async def _seed(db_url: str) -> None:
    load_all()
    await seed_team(db_url, T0)
    db = Database(db_url)
    try:
        async with db.session() as s:
            s.add_all([
                User(openid=PERSON, subscribed=True, first_seen=T0, last_seen=T0, kefu_sent=0, roles="", name=NAME,
                     phone=PHONE),
                User(openid=STAFF, subscribed=True, first_seen=T0, last_seen=T0, kefu_sent=0, roles="staff"),
                Ticket(openid=PERSON, text=f"{NAME}的留言", context={}, status="open", created_at=T0),
                MemorialTribute(day=date(2026, 7, 1), martyr_id=0, openid=STAFF, action="flower"),
            ])
        async with db.session() as s:
            cfg = make_config(db_url)
            await create_callup(s, Services(config=cfg, clock=None, db=db),
                                CallupSpec(kind="防汛", title="演练", place="城南", assemble_at=T0, needed=1,
                                           created_by=STAFF), T0)
    finally:
        await db.close()


def test_staff_erase_a_person_and_the_audit_log_says_who(db_url: str, capsys, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    asyncio.run(_seed(db_url))
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "users", "export", PERSON, "--out", str(tmp_path / "x.json"))
    assert code == 0
    doc = json.loads((tmp_path / "x.json").read_text(encoding="utf-8"))
    assert {i["table"] for i in doc["items"]} >= {"users", "tickets"}
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "users", "erase", PERSON, "--dry-run")
    assert code == 0 and "我的信息" in out and "人工留言" in out and PHONE not in out
    code, out, err = vetbot(capsys, monkeypatch, db_url, "users", "erase", PERSON, "--yes", "--by", "张科员", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["by"] == "staff:张科员" and report["reason"] == "staff"
    assert report["counts"]["users"] == {"deleted": 1} and report["counts"]["tickets"] == {"deleted": 1}
    code, out, err = vetbot(capsys, monkeypatch, db_url, "users", "erase", PERSON, "--yes")
    assert code == 1 and "nothing is stored" in err

    async def check() -> None:
        db = Database(db_url)
        try:
            assert await search_database(db, [PERSON]) == []
            async with db.session() as s:
                (log,) = list((await s.execute(select(Erasure))).scalars())
                assert (log.by, log.reason, log.id) == ("staff:张科员", "staff", report["log_id"])
                assert log.compacted_at is not None  # the CLI cleans the file at once
        finally:
            await db.close()

    asyncio.run(check())


def test_erasing_a_staff_member_pseudonymises_what_they_did(db_url: str, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    asyncio.run(_seed(db_url))
    code, out, err = vetbot(capsys, monkeypatch, db_url, "users", "erase", STAFF, "--yes", "--json")
    assert code == 0, err
    pseudonym = json.loads(out)["pseudonym"]

    async def check() -> None:
        db = Database(db_url)
        try:
            assert await search_database(db, [STAFF]) == []
            async with db.session() as s:
                c = (await s.execute(select(CallUp))).scalar_one()
                actors = set((await s.execute(select(CallUpEvent.actor).where(CallUpEvent.actor != ""))).scalars())
                tribute = (await s.execute(select(MemorialTribute.openid))).scalar_one()
                assert c.created_by == pseudonym and actors == {pseudonym} and tribute == pseudonym
        finally:
            await db.close()

    asyncio.run(check())


def test_privacy_commands(db_url: str, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "privacy", "tables", "--json")
    rows = {r["table"]: r for r in json.loads(out)}
    assert code == 0 and rows["users"]["on_erase"] == "删除" and rows["memorial_martyrs"]["personal_data"] is False
    assert rows["tickets"]["retention"].startswith("回复并关闭 365 天后删除")
    code, out, _ = vetbot(capsys, monkeypatch, db_url, "privacy", "purge", "--json")
    assert code == 0 and json.loads(out) == {}
    with pytest.raises(SystemExit) as e:
        main(["privacy", "check"])
    assert e.value.code == 0 and "every table is declared" in capsys.readouterr().out
