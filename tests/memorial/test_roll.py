"""The martyr roll CSV: every row validated, all problems reported with line and column, natural key."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from flows.memorial.roll import natural_key, parse_partial_date, parse_roll, read_roll
from tests.memorial.conftest import SAMPLE

HEAD = "name,gender,hometown,born,died,unit,place_of_death,burial,biography\n"
TODAY = date(2026, 4, 4)


def test_sample_file_is_valid_and_plainly_marked() -> None:
    roll = read_roll(SAMPLE, TODAY)
    assert roll.errors == [] and len(roll.rows) == 12
    assert all("示例" in r["biography"] for r in roll.rows)
    assert len({r["natural_key"] for r in roll.rows}) == 12


@pytest.mark.parametrize(("text", "want"), [
    ("1951", "1951"), ("1951-3", "1951-03"), ("1951-03-02", "1951-03-02"), ("1951/3/2", "1951-03-02"),
    ("1951.03", "1951-03"), ("1951年", "1951"), ("1951年3月", "1951-03"), ("1951年3月2日", "1951-03-02"), ("", ""),
])
def test_partial_dates(text: str, want: str) -> None:
    assert parse_partial_date(text, TODAY) == want


@pytest.mark.parametrize("text", ["51", "1951-13", "1951-02-30", "1799", "2030", "三月", "1951-03-02-01"])
def test_bad_dates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_partial_date(text, TODAY)


def test_every_bad_row_is_reported_with_line_and_column() -> None:
    text = HEAD + "\n".join([
        "张三,男,某县,1930,1951,部队,地点,陵园,事迹",           # line 2: fine
        ",男,某县,1930,1951,部队,地点,陵园,事迹",               # line 3: no name
        "李四,男性,某县,1930-13,1951,部队,地点,陵园,事迹",       # line 4: bad month (gender 男性 is fine)
        "王五,X,某县,1950,1940,部队,地点,陵园,事迹",             # line 5: bad gender, died before born
        "赵六,男,某县,1930,1951,部队,地点,陵园,事迹,多出来的值",    # line 6: a value too many
        '"钱七",女,"某县,某乡",1930,1951,部队,地点,陵园,"事迹，有逗号"',  # line 7: fine (quoted commas)
        "张三,男,某县,1930,1951,另一部队,地点,陵园,事迹",        # line 8: same person as line 2
        "孙八,男,某县,1930,1951,部队,地点,陵园",                 # line 9: biography left out: empty, fine
    ]) + "\n"
    roll = parse_roll(text, TODAY)
    got = [(e.line, e.column) for e in roll.errors]
    assert got == [(3, "name"), (4, "born"), (5, "gender"), (5, "died"), (6, "-"), (8, "name")], roll.errors
    assert "第 2 行" in roll.errors[-1].message and "双引号" in roll.errors[4].message
    assert str(roll.errors[1]) == "line 4, column born: “1930-13”里的月份 13 不存在"
    assert [r["name"] for r in roll.rows] == ["张三", "钱七", "孙八"]


def test_header_problems_name_the_columns() -> None:
    roll = parse_roll("name,gender,hometown,born,died,unit,place_of_death,burrial,notes\n张三,男,,,,,,,\n")
    text = "\n".join(map(str, roll.errors))
    assert roll.rows == [] and all(e.line == 1 for e in roll.errors)
    assert "line 1, column burrial: 不认识的列名（您是不是想写 burial？）" in text
    assert "line 1, column notes: 不认识的列名。" in text
    assert "line 1, column burial: 缺少这一列（安葬地）" in text and "line 1, column biography: 缺少这一列" in text


def test_chinese_headers_and_optional_columns() -> None:
    text = "姓名,性别,籍贯,出生,牺牲,所属部队,牺牲地点,安葬地,事迹简介,照片,编号\n" \
           "无名烈士,,,,1951,某部,某高地,某陵园,示例,https://example.org/a.jpg,A-1\n" \
           "无名烈士,,,,1951,某部,某高地,某陵园,示例,ftp://x,A-2\n"
    roll = parse_roll(text, TODAY)
    assert [(e.line, e.column, e.key) for e in roll.errors] == [(3, "照片", "photo_url")]
    assert roll.rows[0]["photo_url"] == "https://example.org/a.jpg"
    assert roll.rows[0]["natural_key"] == "k:a1"


def test_natural_key_ignores_spacing_and_script_but_not_identity() -> None:
    base = {"name": "张三", "gender": "男", "hometown": "某县", "born": "1930", "died": "1951", "key": ""}
    assert natural_key(base) == natural_key({**base, "name": "张 三", "hometown": "某縣"})
    assert natural_key(base) != natural_key({**base, "died": "1952"})


def test_gbk_file_from_excel(tmp_path: Path) -> None:
    path = tmp_path / "roll.csv"
    path.write_bytes((HEAD + "张三,男,某县,1930,1951,部队,地点,陵园,事迹\n").encode("gbk"))
    roll = read_roll(path, TODAY)
    assert roll.encoding == "GBK" and roll.rows[0]["name"] == "张三"


def test_empty_and_binary_files(tmp_path: Path) -> None:
    (err,) = parse_roll("").errors
    assert err.line == 1 and "文件是空的" in err.message
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x30\x81")
    (err,) = read_roll(path).errors
    assert "UTF-16" in err.message


def test_longest_record_card_fits_a_passive_reply() -> None:
    """Every field at its limit: the chat card plus its numbered options stay under WeChat's 2,048 bytes."""
    from types import SimpleNamespace

    from flows.memorial.texts import card, summary

    m = SimpleNamespace(name="名" * 64, gender="男", hometown="乡" * 128, born="1930-01-01", died="1951-12-31",
                        unit="部" * 200, place_of_death="地" * 200, burial="陵" * 200, biography="事" * 5000)
    options = "\n".join(f"{i}. 选项文字六个字" for i in range(1, 7)) + "\n" + "<a href=\"" + "x" * 200 + "\">打开纪念页</a>"
    text = card(m, dict.fromkeys(("flower", "salute", "candle", "silence"), 10**9), 10**6, 120) + "\n\n" + options
    assert len(text.encode("utf-8")) < 2000
    assert len(("\n".join(summary(m) for _ in range(5))).encode("utf-8")) < 1500
