"""The martyr roll as a CSV file: reading, validating every row, and the natural key.

Columns (header row required, any order)::

    name,gender,hometown,born,died,unit,place_of_death,burial,biography[,photo_url][,key]

Chinese headers work too (姓名,性别,籍贯,出生,牺牲,所属部队,牺牲地点,安葬地,事迹简介,照片,编号). The file
may be UTF-8 (with or without BOM) or GB18030/GBK, which is what Excel on a Chinese Windows saves.

* ``name`` is required (无名烈士 for an unknown soldier); ``gender`` is 男, 女 or empty;
* ``born``/``died`` are partial dates: ``1951``, ``1951-03``, ``1951-03-02`` (also ``1951/3/2``,
  ``1951.3``, ``1951年3月2日``), or empty;
* ``photo_url`` (optional) is an http(s) link;
* ``key`` (optional) is a stable identifier of the record, such as an archive number.

Natural key (how a re-import finds the record it updates): ``key`` when given; otherwise the person's
identity facts name + gender + hometown + born + died (compared after removing spaces and punctuation,
traditional → simplified). Everything else — unit, place of death, burial, biography, photo — is updated
in place. Two rows of one file with the same natural key are an error (a record listed twice); two
unknown soldiers whose facts coincide need a ``key`` each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import Column, PreviewRow, RowError, Schema, Table, normalize, read_csv
from flows.memorial.names import name_keys
from storage import memorial as store

SCHEMA = Schema("英烈名录", (
    Column("name", "姓名", required=True, max_len=64, aliases=("姓名", "烈士姓名", "名字")),
    Column("gender", "性别", required=True, max_len=8, aliases=("性别",)),
    Column("hometown", "籍贯", required=True, max_len=128, aliases=("籍贯", "出生地", "家乡")),
    Column("born", "出生", required=True, max_len=20, aliases=("出生", "出生日期", "出生年月", "出生时间")),
    Column("died", "牺牲", required=True, max_len=20, aliases=("牺牲", "牺牲日期", "牺牲时间", "牺牲年月")),
    Column("unit", "所属部队", required=True, max_len=200, aliases=("部队", "所属部队", "生前部队", "单位", "生前单位")),
    Column("place_of_death", "牺牲地点", required=True, max_len=200, aliases=("牺牲地点", "牺牲地")),
    Column("burial", "安葬地", required=True, max_len=200, aliases=("安葬地", "安葬地点", "安葬", "墓地")),
    Column("biography", "事迹简介", required=True, max_len=5000, multiline=True,
           aliases=("事迹", "事迹简介", "简介", "生平事迹", "生平")),
    Column("photo_url", "照片链接", max_len=500, aliases=("照片", "照片链接", "照片地址")),
    Column("key", "编号", max_len=100, aliases=("编号", "档案号", "档案编号")),
))
COLUMNS = tuple(c.name for c in SCHEMA.columns if c.required)
OPTIONAL = tuple(c.name for c in SCHEMA.columns if not c.required)
GENDERS = {"": "", "男": "男", "女": "女", "男性": "男", "女性": "女", "m": "男", "f": "女", "male": "男",
           "female": "女", "未知": "", "不详": ""}
_DATE_RE = re.compile(r"^(\d{4})(?:[-/.年](\d{1,2})(?:[-/.月](\d{1,2})日?)?月?)?年?$")
#: Columns compared on a re-import (what "updated" means).
FIELDS = ("name", "gender", "hometown", "born", "died", "unit", "place_of_death", "burial", "biography",
          "photo_url")


@dataclass
class Roll:
    """A validated file: ``rows`` ready for :func:`storage.memorial.upsert_martyrs`, or ``errors``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    encoding: str = ""
    lines: list[int] = field(default_factory=list)


def parse_partial_date(text: str, today: date | None = None) -> str:
    """``1951``, ``1951-3``, ``1951年3月2日`` … → ``1951``, ``1951-03``, ``1951-03-02``; ValueError with a
    reason (in Chinese) otherwise. Empty stays empty."""
    t = text.strip().replace(" ", "")
    if not t:
        return ""
    m = _DATE_RE.match(t)
    if not m:
        raise ValueError(f"“{text}”不是日期（写成 1951、1951-03 或 1951-03-02）")
    y, mo, d = int(m.group(1)), m.group(2), m.group(3)
    last_year = (today or date.today()).year
    if not 1800 <= y <= last_year:
        raise ValueError(f"年份 {y} 不在 1800–{last_year} 之间")
    if mo is None:
        return f"{y:04d}"
    if not 1 <= int(mo) <= 12:
        raise ValueError(f"“{text}”里的月份 {mo} 不存在")
    if d is None:
        return f"{y:04d}-{int(mo):02d}"
    try:
        date(y, int(mo), int(d))
    except ValueError:
        raise ValueError(f"“{text}”里的日 {d} 不存在") from None
    return f"{y:04d}-{int(mo):02d}-{int(d):02d}"


def natural_key(row: dict[str, Any]) -> str:
    """See the module docstring."""
    if row.get("key"):
        return "k:" + normalize(row["key"])[:200]
    parts = [normalize(row["name"]), row["gender"], normalize(row["hometown"]), row["born"], row["died"]]
    return ("n:" + "|".join(parts))[:255]


def validate(table: Table, today: date | None = None) -> list[dict[str, Any]]:
    """The martyr rows of a read file; every problem goes to ``table.errors`` (line, column, Chinese)."""
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for rec in table.records:
        before = len(table.errors)
        row = _row(table, rec.line, rec.values, today)
        if len(table.errors) > before or not rec.ok:
            continue
        key = row["natural_key"]
        if key in seen:
            table.error(rec.line, "key" if table.has("key") and rec["key"] else "name",
                        f"和第 {seen[key]} 行是同一条记录（姓名、性别、籍贯、出生、牺牲都相同）。如果确实是两个人，"
                        "请加一列“编号”（key）分别填写")
            continue
        seen[key] = rec.line
        row["line"] = rec.line
        rows.append(row)
    if not table.errors and not rows:
        table.error(2, "-", "没有数据：第一行列名下面至少要有一行记录")
    return rows


def _row(table: Table, line: int, raw: dict[str, str], today: date | None) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: raw.get(c.name, "") for c in SCHEMA.columns}
    if not row["name"]:
        table.error(line, "name", "姓名不能为空（不知道姓名请写“无名烈士”）")
    gender = GENDERS.get(row["gender"].lower())
    if gender is None:
        table.error(line, "gender", f"“{row['gender'][:10]}”不是 男、女 或空")
    else:
        row["gender"] = gender
    bad_date = False
    for col in ("born", "died"):
        try:
            row[col] = parse_partial_date(row[col], today)
        except ValueError as e:
            table.error(line, col, str(e))
            bad_date = True
    if not bad_date and row["born"] and row["died"] and row["born"] > row["died"][: len(row["born"])]:
        table.error(line, "died", f"牺牲日期 {row['died']} 早于出生日期 {row['born']}")
    url = row["photo_url"]
    if url and not re.match(r"^https?://[^\s\"'<>]+$", url):
        table.error(line, "photo_url", "照片链接要以 http:// 或 https:// 开头（没有照片可以留空）")
    row["photo_url"] = url or None
    row["natural_key"] = natural_key(row)
    row["initials"], row["pinyin"] = name_keys(row["name"]) if row["name"] else ("", "")
    del row["key"]
    return row


def read_roll(data: bytes | Path, today: date | None = None) -> Roll:
    """Read and validate a whole file (bytes or a path); never stops at the first bad row."""
    table = read_csv(data, SCHEMA)
    rows = [] if table.fatal else validate(table, today)
    return Roll(rows=rows, errors=table.sorted_errors(), encoding=table.encoding,
                lines=[r["line"] for r in rows])


def parse_roll(text: str, today: date | None = None) -> Roll:
    """:func:`read_roll` of CSV text (tests, tools)."""
    return read_roll(text.encode("utf-8"), today)


def summary(row: dict[str, Any]) -> str:
    """张建国（示例省东山县，1951-11 牺牲）: a row named in a preview."""
    bits = [b for b in (row["hometown"], f"{row['died']} 牺牲" if row["died"] else "") if b]
    return f"{row['name']}（{'，'.join(bits)}）" if bits else row["name"]


async def plan(session: AsyncSession, rows: list[dict[str, Any]]) -> list[PreviewRow]:
    """What an import would do with each row: new, updated (with the changed columns) or unchanged."""
    existing = await store.martyrs_by_key(session, [r["natural_key"] for r in rows])
    out = []
    for r in rows:
        m = existing.get(r["natural_key"])
        if m is None:
            out.append(PreviewRow(r["line"], "new", summary(r)))
            continue
        changes = [f for f in FIELDS if (getattr(m, f) or None) != (r[f] or None)]
        out.append(PreviewRow(r["line"], "updated" if changes else "unchanged", summary(r), changes))
    return out
