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

import csv
import difflib
import io
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bot.text import normalize
from flows.memorial.names import name_keys

COLUMNS = ("name", "gender", "hometown", "born", "died", "unit", "place_of_death", "burial", "biography")
OPTIONAL = ("photo_url", "key")
ALIASES = {
    "姓名": "name", "性别": "gender", "籍贯": "hometown", "出生": "born", "出生日期": "born", "出生年月": "born",
    "牺牲": "died", "牺牲日期": "died", "牺牲时间": "died", "部队": "unit", "所属部队": "unit",
    "牺牲地点": "place_of_death", "安葬地": "burial", "安葬地点": "burial", "事迹": "biography",
    "事迹简介": "biography", "简介": "biography", "照片": "photo_url", "照片链接": "photo_url", "编号": "key",
}
LIMITS = {"name": 64, "hometown": 128, "unit": 200, "place_of_death": 200, "burial": 200, "biography": 5000,
          "photo_url": 500, "key": 100}
GENDERS = {"": "", "男": "男", "女": "女", "男性": "男", "女性": "女", "m": "男", "f": "女", "male": "男",
           "female": "女", "未知": "", "不详": ""}
_DATE_RE = re.compile(r"^(\d{4})(?:[-/.年](\d{1,2})(?:[-/.月](\d{1,2})日?)?月?)?年?$")


class RollError(Exception):
    """The file as a whole cannot be read (encoding, header); one line for the operator."""


@dataclass
class RowError:
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


@dataclass
class Roll:
    """A validated file: ``rows`` ready for :func:`storage.memorial.upsert_martyrs`, or ``errors``."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    encoding: str = "utf-8"


def parse_partial_date(text: str, today: date | None = None) -> str:
    """``1951``, ``1951-3``, ``1951年3月2日`` … → ``1951``, ``1951-03``, ``1951-03-02``; ValueError with a
    reason otherwise. Empty stays empty."""
    t = text.strip().replace(" ", "")
    if not t:
        return ""
    m = _DATE_RE.match(t)
    if not m:
        raise ValueError(f"'{text}' is not a date (write 1951, 1951-03 or 1951-03-02)")
    y, mo, d = int(m.group(1)), m.group(2), m.group(3)
    last_year = (today or date.today()).year
    if not 1800 <= y <= last_year:
        raise ValueError(f"year {y} is out of range (1800–{last_year})")
    if mo is None:
        return f"{y:04d}"
    if not 1 <= int(mo) <= 12:
        raise ValueError(f"month {mo} in '{text}' does not exist")
    if d is None:
        return f"{y:04d}-{int(mo):02d}"
    try:
        date(y, int(mo), int(d))
    except ValueError:
        raise ValueError(f"day {d} in '{text}' does not exist") from None
    return f"{y:04d}-{int(mo):02d}-{int(d):02d}"


def natural_key(row: dict[str, Any]) -> str:
    """See the module docstring."""
    if row.get("key"):
        return "k:" + normalize(row["key"])[:200]
    parts = [normalize(row["name"]), row["gender"], normalize(row["hometown"]), row["born"], row["died"]]
    return ("n:" + "|".join(parts))[:255]


def _decode(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "gb18030"
    except UnicodeDecodeError:
        raise RollError("the file is neither UTF-8 nor GBK/GB18030 text (save it as “CSV UTF-8”)") from None


def _header(names: list[str]) -> list[str]:
    known = (*COLUMNS, *OPTIONAL)
    cols = []
    for raw in names:
        n = (raw or "").strip().lstrip("\ufeff")
        cols.append(ALIASES.get(n, n.lower()))
    missing = [c for c in COLUMNS if c not in cols]
    unknown = [c for c in cols if c not in known]
    dupes = sorted({c for c in cols if cols.count(c) > 1 and c in known})
    problems = []
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    if unknown:
        hints = []
        for u in unknown:
            near = difflib.get_close_matches(u, known, n=1, cutoff=0.6)
            hints.append(f"{u or '(empty)'}" + (f" (did you mean {near[0]}?)" if near else ""))
        problems.append(f"unknown columns: {', '.join(hints)}")
    if dupes:
        problems.append(f"columns given twice: {', '.join(dupes)}")
    if problems:
        raise RollError("line 1 (header): " + "; ".join(problems)
                        + f". Expected: {','.join(COLUMNS)} (optional: {','.join(OPTIONAL)})")
    return cols


def read_roll(path: Path, today: date | None = None) -> Roll:
    """Read and validate the whole file; never stops at the first bad row."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RollError(f"{path}: file not found") from None
    except OSError as e:
        raise RollError(f"{path}: cannot read ({e.strerror})") from None
    text, encoding = _decode(data)
    return parse_roll(text, today, encoding)


def parse_roll(text: str, today: date | None = None, encoding: str = "utf-8") -> Roll:
    """Validate CSV text (see the module docstring)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise RollError("the file is empty (line 1 must be the header: " + ",".join(COLUMNS) + ")") from None
    except csv.Error as e:
        raise RollError(f"line 1: not CSV ({e})") from None
    cols = _header(header)
    roll = Roll(encoding=encoding)
    seen: dict[str, int] = {}
    line = reader.line_num
    while True:
        start = line + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            roll.errors.append(RowError(start, "-", f"not CSV ({e})"))
            break
        line = reader.line_num
        if not any(v.strip() for v in values):
            continue  # blank lines (Excel leaves some at the end)
        if len(values) != len(cols):
            roll.errors.append(RowError(start, "-", f"{len(values)} fields, the header has {len(cols)} "
                                                     "(a comma inside a value needs \"quotes\")"))
            continue
        row, errors = _row(dict(zip(cols, values, strict=True)), start, today)
        if errors:
            roll.errors.extend(errors)
            continue
        key = row["natural_key"]
        if key in seen:
            roll.errors.append(RowError(start, "key" if row.get("key") else "name",
                                        f"the same record as line {seen[key]} (same name, gender, hometown and "
                                        "dates; give each a different value in a 'key' column if they are "
                                        "different people)"))
            continue
        seen[key] = start
        roll.rows.append(row)
    return roll


def _row(raw: dict[str, str], line: int, today: date | None) -> tuple[dict[str, Any], list[RowError]]:
    errors: list[RowError] = []
    row: dict[str, Any] = {}
    for col in (*COLUMNS, *OPTIONAL):
        value = " ".join((raw.get(col) or "").split()) if col != "biography" else (raw.get(col) or "").strip()
        limit = LIMITS.get(col)
        if limit and len(value) > limit:
            errors.append(RowError(line, col, f"{len(value)} characters, at most {limit}"))
        row[col] = value
    if not row["name"]:
        errors.append(RowError(line, "name", "empty (write 无名烈士 for an unknown soldier)"))
    gender = GENDERS.get(row["gender"].lower())
    if gender is None:
        errors.append(RowError(line, "gender", f"'{row['gender']}' is not 男, 女 or empty"))
    else:
        row["gender"] = gender
    for col in ("born", "died"):
        try:
            row[col] = parse_partial_date(row[col], today)
        except ValueError as e:
            errors.append(RowError(line, col, str(e)))
    if not any(e.column in ("born", "died") for e in errors) and row["born"] and row["died"]:
        if row["born"] > row["died"][: len(row["born"])]:
            errors.append(RowError(line, "died", f"{row['died']} is before born {row['born']}"))
    url = row["photo_url"]
    if url and not re.match(r"^https?://[^\s\"'<>]+$", url):
        errors.append(RowError(line, "photo_url", "must be an http:// or https:// link"))
    if errors:
        return row, errors
    row["photo_url"] = url or None
    row["natural_key"] = natural_key(row)
    row["initials"], row["pinyin"] = name_keys(row["name"])
    del row["key"]
    return row, errors
