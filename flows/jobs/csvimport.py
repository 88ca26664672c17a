"""Reading and validating a postings CSV (``vetbot jobs import``, the console's upload).

Columns (header row required, any order; Chinese names work too)::

    company,title,location,salary_min,salary_max,type,requirements,contact,deadline,veteran_priority,source

Reading, encodings (UTF-8, UTF-8 with BOM, GBK/GB18030), the header check and markup removal are
:mod:`bot.csvfile`'s; the rules of a posting row are here. Every row is checked before anything is stored;
all problems come back with their line and column, so staff fix the file once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from flows.api import Column, PreviewRow, RowError, Schema, Table, from_local, normalize, read_csv
from storage.jobs import JOB_TYPES, POSTING_FIELDS, existing_keys, posting_key

SCHEMA = Schema("岗位表", (
    Column("company", "单位", required=True, not_empty=True, max_len=128,
           aliases=("单位", "公司", "企业", "招聘单位", "用人单位", "单位名称", "企业名称")),
    Column("title", "岗位", required=True, not_empty=True, max_len=128,
           aliases=("岗位", "职位", "岗位名称", "职位名称", "招聘岗位")),
    Column("location", "工作地点", required=True, not_empty=True, max_len=128,
           aliases=("地点", "工作地点", "工作地址", "地址")),
    Column("salary_min", "最低月薪", max_len=20, aliases=("最低月薪", "月薪下限", "薪资下限", "最低工资", "工资下限")),
    Column("salary_max", "最高月薪", max_len=20, aliases=("最高月薪", "月薪上限", "薪资上限", "最高工资", "工资上限")),
    Column("type", "类型", required=True, not_empty=True, max_len=20,
           aliases=("类型", "用工类型", "岗位类型", "工作类型", "job_type")),
    Column("requirements", "要求", max_len=2000, multiline=True,
           aliases=("要求", "岗位要求", "任职要求", "招聘要求", "职位要求")),
    Column("contact", "联系方式", required=True, not_empty=True, max_len=128,
           aliases=("联系方式", "联系人", "联系电话", "联系")),
    Column("deadline", "截止日期", max_len=20, aliases=("截止日期", "截止", "截止时间", "报名截止")),
    Column("veteran_priority", "退役军人优先", max_len=10,
           aliases=("退役军人优先", "优先", "是否退役军人优先", "军人优先")),
    Column("source", "来源", max_len=128, aliases=("来源", "招聘会", "信息来源")),
))
COLUMNS = tuple(c.name for c in SCHEMA.columns)
REQUIRED = tuple(c.name for c in SCHEMA.columns if c.required)
NEGOTIABLE = ("面议", "议", "面谈", "待遇面议", "薪资面议", "")
TYPE_ALIASES = {"全职": "全职", "全日制": "全职", "full": "全职", "fulltime": "全职", "兼职": "兼职", "part": "兼职",
                "parttime": "兼职", "临时": "兼职", "实习": "实习", "intern": "实习", "见习": "实习"}
YES = {"是", "y", "yes", "true", "1", "优先", "√", "✓"}
NO = {"否", "n", "no", "false", "0", "", "不", "×"}
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_MONEY = re.compile(r"^(\d+(?:\.\d+)?)\s*(万|千|k|K)?\s*(元|元/月|/月)?$")


@dataclass
class ReadResult:
    """Valid rows (ready to store) and everything wrong with the file."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    duplicates: list[tuple[int, int]] = field(default_factory=list)  # (line, first line with that posting)
    expired: list[int] = field(default_factory=list)  # lines whose deadline has passed
    encoding: str = ""


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


def read_postings(data: bytes | Path, *, now: datetime, tz: str, default_source: str = "",
                  skip_expired: bool = False) -> ReadResult:
    """Parse and validate a postings file (bytes or a path); every problem is in ``errors``."""
    table = read_csv(data, SCHEMA)
    result = ReadResult(encoding=table.encoding)
    if not table.fatal:
        validate(table, result, now=now, tz=tz, default_source=default_source, skip_expired=skip_expired)
    result.errors = table.sorted_errors()
    return result


def validate(table: Table, result: ReadResult, *, now: datetime, tz: str, default_source: str = "",
             skip_expired: bool = False) -> None:
    """Fill ``result`` with the valid postings of ``table``; problems go to ``table.errors``."""
    today = _local_date(now, tz)
    seen: dict[str, int] = {}
    for rec in table.records:
        line = rec.line
        before = len(table.errors)
        row = _row(table, rec.values, line, default_source, tz)
        if len(table.errors) > before or not rec.ok or row is None:
            continue
        if row["deadline"] is not None and row["deadline"] < today:
            if skip_expired:
                result.expired.append(line)
                continue
            table.error(line, "deadline", f"截止日期 {row['deadline']} 已过（改正日期，或加 --skip-expired 跳过过期行）")
            continue
        key = row["natural_key"]
        if key in seen:
            result.duplicates.append((line, seen[key]))
            continue
        seen[key] = line
        result.rows.append(row)
        result.lines.append(line)
    if not table.errors and not result.rows and not result.expired and not result.duplicates:
        table.error(2, "-", "没有数据：第一行列名下面至少要有一行岗位")


def _local_date(now: datetime, tz: str) -> date:
    from flows.api import to_local

    return to_local(now, tz).date()


def _row(table: Table, raw: dict[str, str], line: int, default_source: str, tz: str) -> dict[str, Any] | None:
    ok = True
    salary: dict[str, int | None] = {}
    for col in ("salary_min", "salary_max"):
        try:
            salary[col] = parse_money(raw.get(col, ""))
        except ValueError as e:
            table.error(line, col, str(e))
            ok = False
    lo, hi = salary.get("salary_min"), salary.get("salary_max")
    if lo is not None and hi is not None and lo > hi:
        table.error(line, "salary_max", f"最高月薪 {hi} 小于最低月薪 {lo}")
        ok = False
    job_type = TYPE_ALIASES.get(normalize(raw.get("type", "")))
    if raw.get("type") and job_type is None:
        table.error(line, "type", f"“{raw['type'][:10]}”不是 {'/'.join(JOB_TYPES)} 之一")
        ok = False
    try:
        deadline = parse_date(raw.get("deadline", ""))
    except ValueError as e:
        table.error(line, "deadline", str(e))
        deadline, ok = None, False
    vp = raw.get("veteran_priority", "").strip().lower()
    if vp not in YES and vp not in NO:
        table.error(line, "veteran_priority", f"“{raw['veteran_priority'][:10]}”：请填 是 或 否")
        ok = False
    if not ok or not all(raw.get(c) for c in REQUIRED):
        return None
    row: dict[str, Any] = {
        "natural_key": posting_key(raw["company"], raw["title"], raw["location"]),
        "company": raw["company"], "title": raw["title"], "location": raw["location"],
        "salary_min": lo, "salary_max": hi, "job_type": job_type, "requirements": raw.get("requirements", ""),
        "contact": raw["contact"], "deadline": deadline, "expires_at": expires_at(deadline, tz),
        "veteran_priority": vp in YES, "source": (raw.get("source") or default_source)[:128],
    }
    row["search_text"] = search_text(row)
    return row


def summary(row: dict[str, Any]) -> str:
    """保安队长｜示例安保服务有限公司｜大竹县城关镇: a posting named in a preview."""
    return f"{row['title']}｜{row['company']}｜{row['location']}"


async def plan(session: AsyncSession, rows: list[dict[str, Any]], lines: list[int]) -> list[PreviewRow]:
    """What storing ``rows`` would do with each: new, updated (with the changed columns) or unchanged —
    the same comparison :func:`flows.jobs.alerts.store_postings` makes."""
    existing = await existing_keys(session, [r["natural_key"] for r in rows])
    out = []
    for r, line in zip(rows, lines, strict=True):
        old = existing.get(r["natural_key"])
        if old is None:
            out.append(PreviewRow(line, "new", summary(r)))
            continue
        changes = [f for f in POSTING_FIELDS if getattr(old, f) != r[f]]
        out.append(PreviewRow(line, "updated" if changes else "unchanged", summary(r), changes))
    return out
