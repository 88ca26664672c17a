"""Postings CSV: every bad row reported with its line and column, wrong headers named, GBK files read."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from flows.jobs.csvimport import COLUMNS, parse_money, read_postings
from tests.jobs.util import SAMPLE

NOW = datetime(2026, 4, 4, 2, 0)  # 10:00 in Shanghai
TZ = "Asia/Shanghai"
HEADER = ",".join(COLUMNS)


def write(tmp_path: Path, *lines: str, encoding: str = "utf-8") -> Path:
    p = tmp_path / "jobs.csv"
    p.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return p


def test_sample_file_is_valid() -> None:
    res = read_postings(SAMPLE, now=NOW, tz=TZ)
    assert res.errors == [] and res.duplicates == []
    assert len(res.rows) >= 15
    assert all("虚构" in r["company"] for r in res.rows), "sample postings must be plainly fake"
    chef = next(r for r in res.rows if r["title"] == "厨师")
    assert chef["salary_min"] is None and chef["salary_max"] is None  # 面议


def test_all_bad_rows_reported_with_line_and_column(tmp_path: Path) -> None:
    p = write(
        tmp_path, HEADER,
        "甲公司,保安,大竹县城关镇,3000,4000,全职,,13800000000,2026-05-01,是,春招",  # line 2: fine
        ",保安,大竹县,abc,4000,全职,,13800000000,2026-05-01,是,",  # 3: company empty, salary_min bad
        "乙公司,司机,大竹县,5000,4000,临工,,13800000000,2026-13-01,也许,",  # 4: max<min, type, date, priority
        "丙公司,厨师,大竹县,面议,面议,全职,,,2026-05-01,否,",  # 5: contact empty
        "丁公司,文员,大竹县,3000,3500,全职,,13800000000,2026-04-01,否,",  # 6: deadline passed
    )
    res = read_postings(p, now=NOW, tz=TZ)
    got = {(e.line, e.column) for e in res.errors}
    assert got == {(3, "company"), (3, "salary_min"), (4, "salary_max"), (4, "type"), (4, "deadline"),
                   (4, "veteran_priority"), (5, "contact"), (6, "deadline")}
    assert [r["company"] for r in res.rows] == ["甲公司"]
    text = "\n".join(map(str, res.errors))
    assert "line 4, column type: “临工”不是 全职/兼职/实习 之一" in text and "line 3, column company: 单位不能为空" in text


def test_expired_rows_can_be_skipped(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER, "丁公司,文员,大竹县,3000,3500,全职,,13800000000,2026-04-01,否,",
              "戊公司,文员,大竹县,3000,3500,全职,,13800000000,2026-04-04,否,")
    res = read_postings(p, now=NOW, tz=TZ, skip_expired=True)
    assert res.errors == [] and res.expired == [2]
    # The deadline day itself is still open; it closes at the next local midnight (16:00 UTC).
    assert res.rows[0]["expires_at"] == datetime(2026, 4, 4, 16, 0)


@pytest.mark.parametrize("header, words", [
    ("company,title,location,salary_min,salary_max,type,requirements,deadline", ["line 1, column contact: 缺少这一列"]),
    (HEADER + ",wage", ["line 1, column wage: 不认识的列名"]),
    ("company,title,title,location,contact,type", ["line 1, column title: 和 B 列“title”是同一列"]),
])
def test_wrong_columns_named(tmp_path: Path, header: str, words: list[str]) -> None:
    res = read_postings(write(tmp_path, header), now=NOW, tz=TZ)
    assert res.rows == []
    for w in words:
        assert w in "\n".join(map(str, res.errors))


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (err,) = read_postings(write(tmp_path, ""), now=NOW, tz=TZ).errors
    assert "文件是空的" in err.message
    with pytest.raises(FileNotFoundError):
        read_postings(tmp_path / "nope.csv", now=NOW, tz=TZ)


def test_gbk_file_from_excel_is_read(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER, "甲公司,保安,大竹县城关镇,3000,4000,全职,,13800000000,,是,春招", encoding="gbk")
    res = read_postings(p, now=NOW, tz=TZ)
    assert res.errors == [] and res.encoding == "GBK"
    assert res.rows[0]["company"] == "甲公司" and res.rows[0]["deadline"] is None


def test_duplicates_in_file_keep_the_first(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER,
              "甲公司,保安,大竹县城关镇,3000,4000,全职,,138,2026-05-01,是,",
              "甲 公司,保安,大竹县 城关镇,3500,4500,全职,,138,2026-05-01,是,")
    res = read_postings(p, now=NOW, tz=TZ)
    assert res.duplicates == [(3, 2)] and len(res.rows) == 1 and res.rows[0]["salary_min"] == 3000


def test_columns_in_any_order_and_optional_ones_missing(tmp_path: Path) -> None:
    p = write(tmp_path, "title,company,location,contact,type,deadline", "保安,甲公司,大竹县,138,兼职,2026年5月1日")
    (row,) = read_postings(p, now=NOW, tz=TZ, default_source="春季招聘会").rows
    assert (row["title"], row["job_type"], row["deadline"], row["source"]) == ("保安", "兼职", date(2026, 5, 1), "春季招聘会")
    assert row["salary_min"] is None and row["veteran_priority"] is False


def test_ragged_row_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path, HEADER, "甲公司,保安,大竹县,3000,4000,全职,要求,有,逗号,138,2026-05-01,是,")
    (err,) = read_postings(p, now=NOW, tz=TZ).errors
    assert err.line == 2 and "双引号" in err.message


@pytest.mark.parametrize("text, value", [("4500", 4500), ("4,500元", 4500), ("4.5千", 4500), ("0.6万", 6000),
                                         ("5k", 5000), ("面议", None), ("", None)])
def test_money(text: str, value: int | None) -> None:
    assert parse_money(text) == value


@pytest.mark.parametrize("text", ["三千", "-5", "50", "2000000"])
def test_money_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_money(text)
