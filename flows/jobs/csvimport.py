"""Reading and validating a postings CSV (``vetbot jobs import``).

Columns (header row required, any order)::

    company,title,location,salary_min,salary_max,type,requirements,contact,deadline,veteran_priority,source

Every row is checked before anything is stored; :func:`read_postings` returns all problems with
their line number and column, so staff fix the file once. Files saved by Excel in China are often
GBK: UTF-8 (with or without BOM) is tried first, then GB18030.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.clock import from_local
from bot.text import normalize
from storage.jobs import JOB_TYPES, posting_key

COLUMNS = ("company", "title", "location", "salary_min", "salary_max", "type", "requirements", "contact",
           "deadline", "veteran_priority", "source")
REQUIRED = ("company", "title", "location", "contact", "type")
LIMITS = {"company": 128, "title": 128, "location": 128, "contact": 128, "source": 128, "requirements": 2000}
NEGOTIABLE = ("面议", "议", "面谈", "待遇面议", "薪资面议", "")
TYPE_ALIASES = {"全职": "全职", "全日制": "全职", "full": "全职", "fulltime": "全职", "兼职": "兼职", "part": "兼职",
                "parttime": "兼职", "临时": "兼职", "实习": "实习", "intern": "实习", "见习": "实习"}
YES = {"是", "y", "yes", "true", "1", "优先", "√", "✓"}
NO = {"否", "n", "no", "false", "0", "", "不", "×"}
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_MONEY = re.compile(r"^(\d+(?:\.\d+)?)\s*(万|千|k|K)?\s*(元|元/月|/月)?$")


class CsvFileError(Exception):
    """The file cannot be read at all (missing, wrong columns, not CSV). One line, with a hint."""


@dataclass
class RowError:
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        return f"第 {self.line} 行 {self.column}：{self.message}"


@dataclass
class ReadResult:
    """Valid rows (ready to store) and everything wrong with the file."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first line with that posting)
    expired: list[int] = field(default_factory=list)  # lines whose deadline has passed
    encoding: str = "utf-8"


def _decode(data: bytes) -> tuple[str, str]:
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(enc), "utf-8" if enc == "utf-8-sig" else enc
        except UnicodeDecodeError:
            continue
    raise CsvFileError("the file is neither UTF-8 nor GBK text (save it as CSV UTF-8 from Excel)")


def parse_money(text: str) -> int | None:
    """``4500`` / ``4,500元`` / ``4.5千`` / ``0.6万`` → yuan; 面议 or empty → None; ValueError otherwise."""
    t = text.strip().replace(",", "").replace("，", "").replace(" ", "")
    if t in NEGOTIABLE:
        return None
    m = _MONEY.match(t)
    if not m:
        raise ValueError(f"“{text}”不是金额，请填数字（元/月）或“面议”")
    value = float(m.group(1)) * {"万": 10000, "千": 1000, "k": 1000, "K": 1000}.get(m.group(2) or "", 1)
    if not 100 <= value <= 1_000_000:
        raise ValueError(f"月薪 {text} 不在 100-1000000 元之间")
    return round(value)


def parse_date(text: str) -> date | None:
    t = text.strip()
    if t in ("", "长期", "长期有效", "不限"):
        return None
    m = _DATE.match(t)
    if not m:
        raise ValueError(f"“{text}”不是日期，请写成 2026-04-30")
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ValueError(f"日期 {text} 不存在") from None


def expires_at(deadline: date | None, tz: str) -> datetime | None:
    """The deadline day is included: the posting hides from the next local midnight (UTC)."""
    if deadline is None:
        return None
    return from_local(datetime.combine(deadline + timedelta(days=1), datetime.min.time()), tz)


def search_text(row: dict[str, Any]) -> str:
    return "\n".join(normalize(str(row[k] or "")) for k in ("title", "company", "location", "requirements"))


def read_postings(path: Path, *, now: datetime, tz: str, default_source: str = "",
                  skip_expired: bool = False) -> ReadResult:
    """Parse and validate ``path``; raises CsvFileError when the file itself is unusable."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CsvFileError(f"cannot read {path}: {e.strerror or e}") from None
    text, enc = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CsvFileError(f"{path} is empty (the first line must be the header: {','.join(COLUMNS)})") from None
    except csv.Error as e:
        raise CsvFileError(f"{path}: not a readable CSV file ({e})") from None
    names = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED if c not in names]
    unknown = [h for h in names if h and h not in COLUMNS]
    dup = sorted({h for h in names if h and names.count(h) > 1})
    if missing or unknown or dup:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown columns: {', '.join(unknown)}")
        if dup:
            parts.append(f"repeated columns: {', '.join(dup)}")
        raise CsvFileError(f"{path}: {'; '.join(parts)} (the header must be: {','.join(COLUMNS)})")
    result = ReadResult(encoding=enc)
    today = _local_date(now, tz)
    seen: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) > len(names):
                result.errors.append(RowError(line, "-", f"有 {len(record)} 列，表头只有 {len(names)} 列"
                                                         "（内容里的逗号请用引号括起来）"))
                continue
            raw = {n: (record[i].strip() if i < len(record) else "") for i, n in enumerate(names) if n}
            row, errs = _row(raw, line, default_source, tz)
            if errs:
                result.errors += errs
                continue
            if row["deadline"] is not None and row["deadline"] < today:
                if skip_expired:
                    result.expired.append(line)
                    continue
                result.errors.append(RowError(line, "deadline", f"截止日期 {row['deadline']} 已过"
                                                                "（改正日期，或加 --skip-expired 跳过过期行）"))
                continue
            key = row["natural_key"]
            if key in seen:
                result.duplicates.append((line, seen[key]))
                continue
            seen[key] = line
            result.rows.append(row)
            result.lines.append(line)
    except csv.Error as e:
        raise CsvFileError(f"{path}: line {reader.line_num}: not a readable CSV row ({e})") from None
    return result


def _local_date(now: datetime, tz: str) -> date:
    from bot.clock import to_local

    return to_local(now, tz).date()


def _row(raw: dict[str, str], line: int, default_source: str, tz: str) -> tuple[dict[str, Any], list[RowError]]:
    errs: list[RowError] = []
    for col in REQUIRED:
        if not raw.get(col):
            errs.append(RowError(line, col, "不能为空"))
    for col, limit in LIMITS.items():
        if len(raw.get(col, "")) > limit:
            errs.append(RowError(line, col, f"太长（{len(raw[col])} 字，最多 {limit} 字）"))
    salary: dict[str, int | None] = {}
    for col in ("salary_min", "salary_max"):
        try:
            salary[col] = parse_money(raw.get(col, ""))
        except ValueError as e:
            errs.append(RowError(line, col, str(e)))
    lo, hi = salary.get("salary_min"), salary.get("salary_max")
    if lo is not None and hi is not None and lo > hi:
        errs.append(RowError(line, "salary_max", f"上限 {hi} 小于下限 {lo}"))
    job_type = TYPE_ALIASES.get(normalize(raw.get("type", "")))
    if raw.get("type") and job_type is None:
        errs.append(RowError(line, "type", f"“{raw['type']}”不是 {'/'.join(JOB_TYPES)} 之一"))
    try:
        deadline = parse_date(raw.get("deadline", ""))
    except ValueError as e:
        errs.append(RowError(line, "deadline", str(e)))
        deadline = None
    vp = raw.get("veteran_priority", "").strip().lower()
    if vp not in YES and vp not in NO:
        errs.append(RowError(line, "veteran_priority", f"“{raw['veteran_priority']}”请填 是 或 否"))
    if errs:
        return {}, errs
    row: dict[str, Any] = {
        "natural_key": posting_key(raw["company"], raw["title"], raw["location"]),
        "company": raw["company"], "title": raw["title"], "location": raw["location"],
        "salary_min": lo, "salary_max": hi, "job_type": job_type, "requirements": raw.get("requirements", ""),
        "contact": raw["contact"], "deadline": deadline, "expires_at": expires_at(deadline, tz),
        "veteran_priority": vp in YES, "source": (raw.get("source") or default_source)[:128],
    }
    row["search_text"] = search_text(row)
    return row, []
