"""`vetbot jobs import|list|expire|stats` on SQLite and PostgreSQL: bad files import nothing and say why."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.cli import main
from bot.clock import SystemClock
from flows.jobs.csvimport import COLUMNS
from storage.db import Database
from storage.jobs import JobPosting
from storage.models import OutboxMessage
from tests.conftest import ROOT
from tests.jobs.util import SAMPLE, add_sub

CONFIG = str(ROOT / "config.example.yaml")


@pytest.fixture(autouse=True)
def _db_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETBOT_DATABASE__URL", db_url)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def count(db_url: str, model: type) -> int:
    async def go() -> int:
        db = Database(db_url)
        try:
            async with db.session() as s:
                return int((await s.execute(select(func.count()).select_from(model))).scalar_one())
        finally:
            await db.close()

    return asyncio.run(go())


def test_import_sample_then_reimport(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "jobs", "import", "-c", CONFIG, str(SAMPLE))
    assert code == 0, err
    n = count(db_url, JobPosting)
    assert f"{n} new, 0 updated" in out and n >= 15
    code, out, _ = cli(capsys, "jobs", "import", "-c", CONFIG, str(SAMPLE), "--json")
    data = json.loads(out)
    assert (data["new"], data["unchanged"]) == (0, n)
    assert count(db_url, JobPosting) == n


def test_bad_rows_are_all_listed_and_nothing_is_imported(db_url: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    good = SAMPLE.read_text(encoding="utf-8").splitlines()
    bad = [*good[:4], "示例公司,保安,大竹县,三千,4000,全职,,138,2030-01-01,是,",
           *good[4:8], "示例公司,司机,大竹县,3000,4000,全天,,,2030-01-01,是,"]
    p = tmp_path / "bad.csv"
    p.write_text("\n".join(bad) + "\n", encoding="utf-8")
    code, out, err = cli(capsys, "jobs", "import", "-c", CONFIG, str(p))
    assert code == 2 and out == ""
    assert "3 problem(s) in 2 line(s), nothing imported" in err
    assert "line 5, column salary_min: “三千”不是金额" in err and "line 10, column type" in err
    assert "line 10, column contact: 联系方式不能为空" in err
    assert "Traceback" not in err
    assert count(db_url, JobPosting) == 0


def test_wrong_header_and_missing_file_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.csv"
    p.write_text("company,title,place\n甲,乙,丙\n", encoding="utf-8")
    code, out, err = cli(capsys, "jobs", "import", "-c", CONFIG, str(p))
    assert code == 2 and out == ""
    assert "line 1, column place: 不认识的列名" in err and "line 1, column location: 缺少这一列（工作地点）" in err
    assert "line 1, column contact: 缺少这一列" in err and "line 1, column type: 缺少这一列" in err
    code, _, err = cli(capsys, "jobs", "import", "-c", CONFIG, str(tmp_path / "nope.csv"))
    assert code == 2 and "file not found" in err


def test_dry_run_stores_nothing(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "jobs", "import", "-c", CONFIG, str(SAMPLE), "--dry-run")
    assert code == 0 and "dry run" in out
    assert count(db_url, JobPosting) == 0


def test_import_queues_alerts_list_expire_stats(db_url: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    async def subscribe() -> None:
        db = Database(db_url)
        try:
            await add_sub(db, "guard", SystemClock().now(), categories=["保安"], quiet_start=0, quiet_end=0)
        finally:
            await db.close()

    asyncio.run(subscribe())
    code, out, err = cli(capsys, "jobs", "import", "-c", CONFIG, str(SAMPLE), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["subscribers"] == 1 and data["instant_pushes"] == 3  # the daily cap
    assert count(db_url, OutboxMessage) == 3

    code, out, _ = cli(capsys, "jobs", "list", "-c", CONFIG, "--search", "保安", "--json")
    rows = json.loads(out)
    assert rows and all("保安" in r["title"] or "保安" in r["company"] for r in rows)

    extra = tmp_path / "fair2.csv"
    extra.write_text(",".join(COLUMNS) + "\n示例公司（虚构）,保安,大竹县,3000,4000,全职,,138,2030-01-01,是,秋季招聘会\n",
                     encoding="utf-8")
    assert cli(capsys, "jobs", "import", "-c", CONFIG, str(extra))[0] == 0
    code, out, _ = cli(capsys, "jobs", "expire", "-c", CONFIG, "--source", "秋季招聘会")
    assert code == 0 and "ended 1 posting(s)" in out
    code, out, _ = cli(capsys, "jobs", "list", "-c", CONFIG, "--all", "--source", "秋季招聘会")
    assert "[expired]" in out
    code, out, _ = cli(capsys, "jobs", "stats", "-c", CONFIG, "--json")
    stats = json.loads(out)
    assert stats["postings"]["total"] == stats["postings"]["active"] + 1 and stats["subscriptions"] == {"active": 1}


def test_bad_jobs_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VETBOT_JOBS__DEFAULT_QUIET_HOURS", "all night")
    code, _, err = cli(capsys, "jobs", "import", "-c", CONFIG, str(SAMPLE))
    assert code == 2 and "jobs.default_quiet_hours" in err
