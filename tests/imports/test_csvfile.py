"""The one CSV reader (bot/csvfile.py): encodings as Excel and WPS save them, header names staff write,
every problem at once with line and column, control characters and markup in cells."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from bot.csvfile import Column, Schema, column_letter, decode, header_key, read_csv
from flows.callup import roster
from flows.jobs import csvimport
from flows.memorial import roll

DATA = Path(__file__).parent / "data"
SKILLS = ["救援", "医护", "驾驶", "水上", "无人机", "电工"]

SCHEMA = Schema("测试表", (
    Column("name", "姓名", required=True, not_empty=True, aliases=("姓名",), max_len=10),
    Column("phone", "手机号", required=True, aliases=("手机号", "电话")),
    Column("note", "备注", aliases=("备注",), multiline=True, max_len=50),
))


def test_gbk_file_saved_by_excel_is_read_and_named() -> None:
    table = read_csv(DATA / "roster_excel_gbk.csv", roster.SCHEMA)
    rows = roster.validate(table, SKILLS)
    assert table.errors == [] and table.encoding == "GBK"
    assert [(r.line, r.name, r.phone, r.leader) for r in rows] == [
        (2, "刘德胜", "13900001001", True), (3, "欧阳秀兰", "13900001002", False),
        (4, "马骏", "13900001003", False), (5, "何晓东", "13900001004", True)]
    assert table.written["phone"] == "手机号（必填）" and table.written["name"] == "姓名*"


def test_utf8_bom_file_from_wps_with_spaced_full_width_headers_and_a_two_line_cell() -> None:
    table = read_csv(DATA / "martyrs_wps_bom.csv", roll.SCHEMA)
    rows = roll.validate(table)
    assert table.errors == [] and table.encoding == "UTF-8（带BOM）"
    assert [r["line"] for r in rows] == [2, 3], "line = the row number Excel shows, not the text line"
    assert rows[0]["name"] == "周正平" and rows[0]["born"] == "1933-04" and rows[0]["died"] == "1952-10"
    assert rows[0]["biography"] == "【测试数据】虚构人物。\n担任通信员，冒炮火传递命令。"
    assert rows[0]["natural_key"] == "k:t001"


def test_gb18030_only_character_is_read_as_gb18030() -> None:
    res = csvimport.read_postings(DATA / "jobs_gb18030.csv", now=__import__("datetime").datetime(2026, 4, 1),
                                  tz="Asia/Shanghai")
    assert res.errors == [] and res.encoding == "GB18030"
    assert res.rows[0]["contact"] == "王䶮 13900002001" and res.rows[1]["salary_min"] is None


@pytest.mark.parametrize("data, encoding", [
    ("name,phone\n张三,13900000001\n".encode(), "UTF-8"),
    (codecs.BOM_UTF8 + "name,phone\n张三,13900000001\n".encode(), "UTF-8（带BOM）"),
    ("姓名,电话\r\n张三,13900000001\r\n".encode("gbk"), "GBK"),
    ("name,phone\n王䶮,13900000001\n".encode("gb18030"), "GB18030"),
])
def test_encodings_detected(data: bytes, encoding: str) -> None:
    text, used = decode(data)
    assert used == encoding and "1390000000" in text


@pytest.mark.parametrize("data, words", [
    ("姓名,電話\n張繼光,13900000001\n黃建國,13900000002\n陳志願,13900000003\n".encode("big5"), "乱码"),
    ("name,phone\n张三,13900000001\n".encode("utf-16"), "UTF-16"),
    (b"name,phone\n\x81\x20\x81\x20,1\n", "第 2 行"),
    (codecs.BOM_UTF8 + b"name,phone\n\xff\xfe,1\n", "第 2 行"),
])
def test_other_encodings_are_a_clear_error(data: bytes, words: str) -> None:
    table = read_csv(data, SCHEMA)
    (err,) = table.errors
    assert table.fatal and words in err.message and "CSV UTF-8" in err.message


def test_header_names_tolerate_spaces_width_case_bom_and_marks() -> None:
    assert header_key("\ufeff ＰＨＯＮＥ ") == header_key("phone") == header_key("Phone*")
    assert header_key("　手机号（必填）") == header_key("手机号")
    assert header_key("place of death") == header_key("place_of_death")
    assert [column_letter(i) for i in (0, 25, 26, 27, 701)] == ["A", "Z", "AA", "AB", "ZZ"]


def test_missing_unknown_and_duplicate_columns_all_reported_with_nearest_name() -> None:
    table = read_csv("姓名,name,phon,remark\n张三,张三,1,x\n".encode(), SCHEMA)
    got = {(e.line, e.column, e.letter): e.message for e in table.errors}
    assert table.fatal and table.records == []
    assert "和 A 列“姓名”是同一列" in got[(1, "name", "B")]
    assert "您是不是想写 phone" in got[(1, "phon", "C")]
    assert "不认识的列名" in got[(1, "remark", "D")] and "是不是" not in got[(1, "remark", "D")]
    assert "缺少这一列（手机号）" in got[(1, "phone", "")]


def test_every_row_error_at_once_in_line_order() -> None:
    text = ("phone,姓名,备注,\n"
            "1,张三,ok,\n"
            ",,,\n"                          # blank row (Excel): skipped, still counted
            "2,,太长了" + "很" * 60 + ",\n"     # line 4: name empty, note too long
            "3,李四,,多出来\n"                  # line 5: a value under a column without a name
            "4,王五,a,b,c\n"                    # line 6: more values than columns
            "5,赵六\n")                          # line 7: fewer values: the rest is empty (fine)
    table = read_csv(text.encode(), SCHEMA)
    assert [(e.line, e.column) for e in table.sorted_errors()] == [(4, "姓名"), (4, "备注"), (5, "-"), (6, "-")]
    msgs = [str(e) for e in table.sorted_errors()]
    assert msgs[0] == "line 4, column 姓名: 姓名不能为空"
    assert msgs[1] == "line 4, column 备注: 太长：63 个字，最多 50 个字"
    assert "D 列没有列名却填了内容" in msgs[2] and "双引号" in msgs[3]
    assert [r.line for r in table.records if r.ok] == [2, 7]


@pytest.mark.parametrize("cell, what", [("张\x00三", "NUL"), ("张\x07三", "U+0007"), ("张\x85三", "U+0085"),
                                        ("张\u202e三", "U+202E")])
def test_control_characters_refused_per_cell_without_quoting_the_value(cell: str, what: str) -> None:
    table = read_csv(f"name,phone\n李四,13900000001\n{cell},13900000002\n".encode(), SCHEMA)
    (err,) = table.errors
    assert (err.line, err.column, err.letter) == (3, "name", "A") and what in err.message
    assert "张" not in err.message and "1390000" not in str(err)


def test_markup_dropped_text_kept_entities_decoded() -> None:
    table = read_csv('name,phone,note\n'
                     '张三,1,"<a href=""http://evil.example/x"">点此领取补贴</a>&amp;咨询<br>年龄<45岁"\n'.encode(),
                     SCHEMA)
    (rec,) = table.records
    assert rec["note"] == "点此领取补贴&咨询\n年龄<45岁"


def test_line_breaks_and_spaces_in_single_line_cells_are_collapsed() -> None:
    table = read_csv('name,phone,note\n" 张\n三 ", 139 ,"a\n\n\n\nb "\n'.encode(), SCHEMA)
    (rec,) = table.records
    assert (rec["name"], rec["phone"], rec["note"]) == ("张 三", "139", "a\n\nb")


def test_empty_file_and_header_only() -> None:
    (err,) = read_csv(b"", SCHEMA).errors
    assert "文件是空的" in err.message and "name,phone,note" in err.message
    table = read_csv(b"name,phone\n", roster.SCHEMA)
    assert table.fatal  # the roster's header lacks columns
    table = read_csv(b"team,name,phone,skills,township\n", roster.SCHEMA)
    roster.validate(table, SKILLS)
    assert [str(e) for e in table.errors] == ["line 2, column -: 没有数据：第一行列名下面至少要有一行队员"]


def test_unbalanced_quote_is_reported_not_swallowed() -> None:
    text = 'name,phone\n张三,1\n"李四,2\n王五,3\n'
    table = read_csv(text.encode(), SCHEMA)
    (err,) = table.errors
    assert err.line == 3 and "双引号没有配对" in err.message  # not 李四 and 王五 merged into one silent row
    assert [r["name"] for r in table.records if r.ok] == ["张三"]
