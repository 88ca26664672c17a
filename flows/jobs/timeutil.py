"""Local times of day for job alerts: digest time, quiet hours, and when a push may go out.

Times of day are minutes after local midnight (``bot.timezone``); moments are naive UTC like
everywhere else in vetbot. Quiet hours may wrap midnight (22:00-07:00); start == end means none.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from flows.api import from_local, to_local

_CN = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_NUM = re.compile(r"[零一二两三四五六七八九十]+")


def _cn_number(m: re.Match[str]) -> str:
    """一 … 五十九 in Chinese numerals → digits (八点 → 8点, 十二点半 → 12点半)."""
    t = m.group(0)
    if "十" in t:
        tens, _, ones = t.partition("十")
        value = (_CN.get(tens, 0) if tens else 1) * 10 + (_CN.get(ones, 0) if ones else 0)
    else:
        value = int("".join(str(_CN[c]) for c in t))
    return str(value)


_HM = re.compile(r"^(\d{1,2})(?:[:：点时.](\d{1,2})?分?)?(?:半)?$")


def parse_hm(text: str) -> int | None:
    """A time of day typed by a user or in the config → minutes after midnight.

    Accepts ``8``, ``08:00``, ``8:30``, ``8点``, ``8点半``, ``19点30``, ``晚上7点`` / ``下午3点``
    (afternoon words add 12 h). Returns None when it is not a time.
    """
    t = text.strip().replace(" ", "").replace("：", ":")
    pm = any(w in t for w in ("下午", "晚上", "傍晚", "晚"))
    for w in ("早上", "上午", "中午", "下午", "晚上", "傍晚", "凌晨", "早", "晚"):
        t = t.replace(w, "")
    t = _CN_NUM.sub(_cn_number, t)
    half = t.endswith("半")
    m = _HM.match(t)
    if not m:
        return None
    h = int(m.group(1))
    mi = 30 if half else int(m.group(2) or 0)
    if pm and 1 <= h < 12:
        h += 12
    if not (0 <= h <= 23 and 0 <= mi <= 59):
        return None
    return h * 60 + mi


def parse_range(text: str) -> tuple[int, int] | None:
    """Quiet hours ``22:00-07:00`` / ``22-7`` / ``22点到7点`` → (start, end) minutes, or None."""
    t = text.strip().replace(" ", "").replace("～", "-").replace("~", "-").replace("—", "-").replace("至", "-")
    t = t.replace("到", "-")
    parts = [p for p in t.split("-") if p]
    if len(parts) != 2:
        return None
    a, b = parse_hm(parts[0]), parse_hm(parts[1])
    if a is None or b is None:
        return None
    return a, b


def fmt_hm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def in_quiet(minute: int, start: int, end: int) -> bool:
    """Is local time-of-day ``minute`` inside the quiet hours [start, end)?"""
    if start == end:
        return False
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def local_day(when: datetime, tz: str) -> date:
    return to_local(when, tz).date()


def _at(day: date, minute: int, tz: str) -> datetime:
    return from_local(datetime.combine(day, time(minute // 60, minute % 60)), tz)


def deliverable_at(now: datetime, start: int, end: int, tz: str) -> datetime:
    """``now``, or the end of the quiet hours when ``now`` is inside them (UTC)."""
    local = to_local(now, tz)
    minute = local.hour * 60 + local.minute
    if not in_quiet(minute, start, end):
        return now
    day = local.date()
    if start > end and minute >= start:  # evening part of a window that wraps midnight
        day += timedelta(days=1)
    return _at(day, end, tz)


def next_daily(now: datetime, minute: int, start: int, end: int, tz: str) -> datetime:
    """The next local ``minute`` of the day at or after ``now``, moved out of quiet hours (UTC)."""
    local = to_local(now, tz)
    at = _at(local.date(), minute, tz)
    if at < now:
        at = _at(local.date() + timedelta(days=1), minute, tz)
    return deliverable_at(at, start, end, tz)


def next_local_midnight(now: datetime, tz: str) -> datetime:
    """The start of the next local day (UTC)."""
    return _at(to_local(now, tz).date() + timedelta(days=1), 0, tz)
