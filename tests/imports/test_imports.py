"""Imports through the one service (flows/imports.py) and the three commands, on SQLite and PostgreSQL:
a dry run's per-row preview, nothing written while any row is bad, the upload API's report, and a NUL
byte answered with its line and column (it used to be a raw PostgreSQL traceback full of names and
phones)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.cli import main
from bot.csvfile import ImportReport
from flows.imports import ImportFailed, import_csv
from storage.callup import Member, Team
from storage.db import Database
from storage.jobs import JobPosting
from storage.memorial import Martyr
from tests.conftest import ROOT, make_config

DATA = Path(__file__).parent / "data"
CONFIG = str(ROOT / "config.example.yaml")
NOW = datetime(2026, 4, 1, 2, 0)


async def _count(db: Database, model: type) -> int:
    async with db.session() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def _run(db: Database, kind: str, data: bytes, **kw: object) -> ImportReport:
    cfg = make_config(db.url)
    async with db.session() as s:
        return await import_csv(s, cfg, kind, data, now=NOW, source=f"{kind}.csv", **kw)  # type: ignore[arg-type]


async def test_roster_dry_run_previews_each_row_and_writes_nothing(db: Database) -> None:
    gbk = (DATA / "roster_excel_gbk.csv").read_bytes()
    rep = await _run(db, "roster", gbk, dry_run=True)
    assert rep.ok and rep.encoding == "GBK" and not rep.applied
    assert rep.counts == {"new": 4, "updated": 0, "unchanged": 0, "skipped": 0}
    assert rep.preview[0].summary == "刘德胜 13900001001（石河镇抢险队），队长"
    assert await _count(db, Member) == 0 and await _count(db, Team) == 0
    rep = await _run(db, "roster", gbk)
    assert rep.applied and rep.details["teams_created"] == ["石河镇抢险队", "庙坝镇民兵应急分队"]
    assert await _count(db, Member) == 4
    # Edited in Excel again: one skill added, one member moved, one new; saved as UTF-8 this time.
    text = gbk.decode("gbk").replace("13900001002,医护", "13900001002,医护|救援")
    text = text.replace("马骏,+86 13900001003,,石河镇", "马骏,+86 13900001003,,庙坝镇")
    text = text.replace("何晓东,13900001004,无人机|电工,庙坝镇,是,",
                        "何晓东,13900001004,无人机|电工,庙坝镇,是,\r\n庙坝镇民兵应急分队,杨帆,13900001005,水上,庙坝镇,,")
    rep = await _run(db, "roster", text.encode(), dry_run=True)
    assert rep.encoding == "UTF-8"
    assert [(p.line, p.action, p.changes) for p in rep.preview] == [
        (2, "unchanged", []), (3, "updated", ["skills"]), (4, "updated", ["township"]), (5, "unchanged", []),
        (6, "new", [])]
    assert rep.counts == {"new": 1, "updated": 2, "unchanged": 2, "skipped": 0}
    assert await _count(db, Member) == 4
    json.dumps(rep.as_dict(), ensure_ascii=False)  # what the console page gets


async def test_martyrs_and_jobs_previews(db: Database) -> None:
    rep = await _run(db, "martyrs", (DATA / "martyrs_wps_bom.csv").read_bytes())
    assert rep.applied and rep.counts["new"] == 2 and await _count(db, Martyr) == 2
    bom = (DATA / "martyrs_wps_bom.csv").read_bytes().decode("utf-8-sig").replace("示例渡口", "示例渡口东岸")
    rep = await _run(db, "martyrs", bom.encode("gb18030"), dry_run=True)
    assert [(p.action, p.changes) for p in rep.preview] == [("unchanged", []), ("updated", ["place_of_death"])]
    jobs = (DATA / "jobs_gb18030.csv").read_bytes().decode("gb18030")
    jobs += "示例物业（测试）,保安,竹阳街道,3300,3900,全职,,王先生,2030-06-30,是,\n"  # the same posting again
    jobs += "示例超市（测试）,理货员,竹阳街道,2500,3000,兼职,,李女士,2026-03-01,否,\n"  # deadline passed
    rep = await _run(db, "jobs", jobs.encode("gb18030"), dry_run=True, skip_expired=True)
    assert [(p.line, p.action) for p in rep.preview] == [(2, "new"), (3, "new"), (4, "skipped"), (5, "skipped")]
    assert "和第 2 行是同一岗位" in rep.preview[2].note and rep.preview[3].note == "截止日期已过"
    assert await _count(db, JobPosting) == 0


async def test_nothing_is_written_while_any_row_is_bad(db: Database) -> None:
    good = (DATA / "roster_excel_gbk.csv").read_bytes().decode("gbk")
    bad = good + "石河镇抢险队,钱某,1390000100X,驾驶,石河镇,,\r\n"
    rep = await _run(db, "roster", bad.encode("gbk"))
    assert not rep.ok and not rep.applied and rep.preview == []
    assert [str(e) for e in rep.errors] == ["line 7, column 手机号（必填）: “1390000100X”不是 11 位手机号"]
    assert rep.errors[0].zh() == "第 7 行 C 列（手机号（必填））：“1390000100X”不是 11 位手机号"
    assert await _count(db, Member) == 0 and await _count(db, Team) == 0


async def test_a_database_refusal_names_no_row_data(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import DataError

    async def refuse(*_: object, **__: object) -> None:
        raise DataError("INSERT INTO memorial_martyrs …", {"name": "周正平"}, ValueError("invalid byte sequence"))

    monkeypatch.setattr("storage.memorial.upsert_martyrs", refuse)
    with pytest.raises(ImportFailed) as e:
        await _run(db, "martyrs", (DATA / "martyrs_wps_bom.csv").read_bytes())
    assert "ValueError" in str(e.value) and "周正平" not in str(e.value) and "INSERT" not in str(e.value)


# --- the commands ------------------------------------------------------------------------------------

def _cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, db_url: str,
         *argv: str) -> tuple[int, str, str]:
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)
    with pytest.raises(SystemExit) as e:
        main([argv[0], argv[1], "-c", CONFIG, *argv[2:]])
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


NUL_FILES = {
    # command: (CSV with a NUL in a free-text cell, the line and column it is reported at, model)
    "teams": ("team,name,phone,skills,township\n石河镇抢险队,刘德胜,13900001001,驾驶,石河镇\n"
              "石河镇抢险队,欧阳秀兰,13900001002,医护,石\x00河镇\n", "line 3, column township", Member),
    "martyrs": ("name,gender,hometown,born,died,unit,place_of_death,burial,biography\n"
                "周正平,男,示例县,1933,1952,示例团,示例高地,示例陵园,担任通信员\x00，冒炮火传递命令\n",
                "line 2, column biography", Martyr),
    "jobs": ("company,title,location,type,requirements,contact\n"
             "示例物业,保安,竹阳街道,全职,身体健康\x00，能上夜班,王先生 13900002001\n", "line 2, column requirements",
             JobPosting),
}


@pytest.mark.parametrize("command", list(NUL_FILES))
def test_nul_byte_in_a_csv_gives_line_and_column_not_a_traceback_with_personal_data(
        command: str, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    text, where, model = NUL_FILES[command]
    path = tmp_path / "with_nul.csv"
    path.write_bytes(text.encode("utf-8"))
    code, out, err = _cli(capsys, monkeypatch, db_url, command, "import", str(path))
    assert code == 2 and out == "", err
    assert f"{where}: 含有看不见的空字符（NUL）" in err
    assert "Traceback" not in err and "INSERT" not in err and "parameters" not in err
    for personal in ("刘德胜", "欧阳秀兰", "13900001002", "周正平", "王先生", "13900002001"):
        assert personal not in err, personal

    async def count() -> int:
        database = Database(db_url)
        try:
            return await _count(database, model)
        finally:
            await database.close()

    assert asyncio.run(count()) == 0


def test_cli_dry_run_lists_rows_and_json_has_the_report(db_url: str, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(DATA / "roster_excel_gbk.csv")
    code, out, _ = _cli(capsys, monkeypatch, db_url, "teams", "import", path, "--dry-run")
    assert code == 0 and "line 3: 新增 欧阳秀兰 13900001002（石河镇抢险队）" in out
    assert "ok: 4 rows valid (GBK); dry run, nothing imported: 4 new, 0 updated, 0 unchanged" in out
    code, out, _ = _cli(capsys, monkeypatch, db_url, "teams", "import", path, "--json")
    data = json.loads(out)
    assert code == 0 and data["applied"] and data["counts"]["new"] == 4 and data["encoding"] == "GBK"
    code, out, _ = _cli(capsys, monkeypatch, db_url, "martyrs", "import", str(DATA / "martyrs_wps_bom.csv"),
                        "--dry-run", "--json")
    data = json.loads(out)
    assert code == 0 and not data["applied"] and [p["action"] for p in data["preview"]] == ["new", "new"]
