"""Reading what people type: assembly times, head counts with skills, leave dates, ETAs, team lists.

Everything returns None (or raises :class:`ParseError` with a short Chinese hint) instead of guessing:
a call-up with a wrong time is worse than a re-asked question.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta

from flows.api import fmt_day, from_local, parse_end_date, parse_minutes, to_local

_CN = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


class ParseError(ValueError):
    """Input that cannot be read; ``str(e)`` is a short Chinese hint for the user."""


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip()


def cn_int(text: str) -> int | None:
    """'12', '十二', '二十', '二十五', '两' -> int (0..999); None otherwise."""
    t = _nfkc(text)
    if t.isdigit():
        return int(t) if len(t) <= 3 else None
    if not t or any(ch not in _CN and ch != "十" for ch in t):
        return None
    if "十" in t:
        tens, _, ones = t.partition("十")
        if "十" in ones:
            return None
        n_tens = _CN.get(tens, -1) if tens else 1
        n_ones = _CN.get(ones, -1) if ones else 0
        return None if n_tens < 0 or n_ones < 0 else n_tens * 10 + n_ones
    return _CN[t] if len(t) == 1 else None


# --- times --------------------------------------------------------------------------------------------
_NUM = r"(\d{1,3}|[零〇一二两三四五六七八九十]{1,3})"
_REL = re.compile(rf"^{_NUM}\s*(分钟|分|个?小时|个?钟头)\s*(后|以后|之后)$")
_HALF_HOUR = re.compile(r"^半\s*(个)?\s*(小时|钟头)\s*(后|以后|之后)$")
_DAY_WORDS = {"今天": 0, "今日": 0, "今晚": 0, "今早": 0, "明天": 1, "明日": 1, "明早": 1, "明晚": 1, "后天": 2}
_PERIOD_PM = ("下午", "晚上", "今晚", "明晚", "傍晚")
_CLOCK = re.compile(rf"^(?P<h>{_NUM})\s*(?:[:：]\s*(?P<m>\d{{1,2}})|点\s*(?:(?P<half>半)|(?P<m2>{_NUM})\s*分?)?|时)?$")
_DATE = re.compile(r"^(?:(?P<y>\d{4})[-/.年])?(?P<mo>\d{1,2})[-/.月](?P<d>\d{1,2})[日号]?")


def _clock(text: str) -> tuple[int, int] | None:
    m = _CLOCK.match(text)
    if not m:
        return None
    h = cn_int(m.group("h"))
    if m.group("m") is not None:
        mi = int(m.group("m"))
    elif m.group("half"):
        mi = 30
    elif m.group("m2"):
        mi = cn_int(m.group("m2")) or 0
    else:
        mi = 0
    if h is None or not 0 <= h <= 24 or not 0 <= mi <= 59 or (h == 24 and mi):
        return None
    return h % 24, mi


def parse_when(text: str, now: datetime, tz: str) -> datetime | None:
    """A local time as staff type it -> naive UTC; None when unreadable.

    立即/马上 · 30分钟后 · 2小时后 · 20:30 · 今晚8点 · 明天7点半 · 5月3日 14:00 · 2026-05-03 14:00.
    A bare clock time already past today means tomorrow."""
    t = _nfkc(text).replace(" ", "").replace("\u3000", "")
    if t in ("立即", "马上", "现在", "尽快", "立刻", "马上集合", "立即集合"):
        return now
    m = _REL.match(t)
    if m:
        n = cn_int(m.group(1))
        if n is None:
            return None
        return now + (timedelta(minutes=n) if m.group(2) in ("分钟", "分") else timedelta(hours=n))
    if _HALF_HOUR.match(t):
        return now + timedelta(minutes=30)
    local_now = to_local(now, tz).replace(tzinfo=None)
    day = local_now.date()
    explicit_day = False
    pm = False
    md = _DATE.match(t)
    if md:
        try:
            day = day.replace(year=int(md.group("y") or day.year), month=int(md.group("mo")), day=int(md.group("d")))
        except ValueError:
            return None
        explicit_day = True
        t = t[md.end():]
    for word, plus in _DAY_WORDS.items():
        if t.startswith(word):
            day = day + timedelta(days=plus)
            explicit_day = True
            pm = word in _PERIOD_PM
            t = t[len(word):]
            break
    for word in ("凌晨", "早上", "上午", "中午", "下午", "晚上", "傍晚"):
        if t.startswith(word):
            pm = pm or word in _PERIOD_PM or word == "中午"
            t = t[len(word):]
            break
    hm = _clock(t)
    if hm is None:
        return None
    h, mi = hm
    if pm and 1 <= h < 12:
        h += 12
    local = datetime(day.year, day.month, day.day, h, mi)
    if not explicit_day and local < local_now - timedelta(minutes=5):
        local += timedelta(days=1)
    return from_local(local, tz)


def parse_cli_time(text: str, tz: str) -> datetime:
    """``YYYY-MM-DD HH:MM`` local -> naive UTC; ParseError otherwise."""
    try:
        local = datetime.strptime(_nfkc(text), "%Y-%m-%d %H:%M")
    except ValueError:
        raise ParseError(f"time {text!r} is not YYYY-MM-DD HH:MM (local time), e.g. 2026-07-01 20:30") from None
    return from_local(local, tz)


# --- head counts ----------------------------------------------------------------------------------------
_SKILL_PART = re.compile(r"([^\d\s=:：,，、;；]+?)\s*[=:：]?\s*(\d{1,3}|[一二两三四五六七八九十]{1,3})\s*[人名个位]?")


def parse_need(text: str, skills: list[str]) -> tuple[int, dict[str, int]]:
    """'20' · '20人' · '20 驾驶2 医护1' · '20人，驾驶=2，医护1' -> (20, {'驾驶': 2, '医护': 1}).

    Raises ParseError naming what is wrong (unknown skill, skill count above the total…)."""
    t = _nfkc(text)
    m = re.match(r"^\s*(?:共|总共|需要)?\s*(\d{1,5}|[一二两三四五六七八九十]{1,3})\s*[人名个位]?", t)
    if not m:
        raise ParseError("请先写总人数，例如：20 或 20 驾驶2 医护1")
    total = cn_int(m.group(1)) if not m.group(1).isdigit() else int(m.group(1))
    if not total or total < 1:
        raise ParseError("总人数至少 1 人，例如：20")
    if total > 100000:
        raise ParseError("总人数太大了，请核对")
    rest = t[m.end():].strip(" ,，、;；")
    need: dict[str, int] = {}
    pos = 0
    seps = " ,，、;；"
    while rest[pos:].strip(seps):
        while rest[pos] in seps:
            pos += 1
        sm = _SKILL_PART.match(rest, pos)
        if not sm:
            raise ParseError(f"看不懂“{rest[pos:].strip()}”。技能人数请写成：驾驶2 医护1")
        name, num = sm.group(1).strip(), sm.group(2)
        if name not in skills:
            raise ParseError(f"没有“{name}”这个技能。可选：{'、'.join(skills)}")
        k = int(num) if num.isdigit() else cn_int(num)
        if not k:
            raise ParseError(f"“{name}”的人数请写大于 0 的数字")
        if k > total:
            raise ParseError(f"“{name}”需要 {k} 人，超过了总人数 {total}")
        need[name] = need.get(name, 0) + k
        pos = sm.end()
    return total, need


def parse_skill_option(text: str, skills: list[str]) -> tuple[str, int]:
    """CLI ``--skill 驾驶=2`` -> ('驾驶', 2)."""
    name, sep, num = _nfkc(text).partition("=")
    name = name.strip()
    if not sep or not num.strip().isdigit() or int(num) < 1:
        raise ParseError(f"--skill {text!r}: write SKILL=N, e.g. 驾驶=2")
    if name not in skills:
        raise ParseError(f"--skill {text!r}: unknown skill {name!r}; known: {', '.join(skills)} "
                         "(callup.skills in the config)")
    return name, int(num)


# --- leave (请假) ---------------------------------------------------------------------------------------
#: The furthest a leave may reach (a year and a day: 请假一年 on 29 February still fits).
MAX_LEAVE_DAYS = 366


def parse_until(text: str, now: datetime, tz: str) -> datetime | None:
    """When a leave ends -> naive UTC of the local midnight after the last day away; None if unreadable,
    in the past or more than a year ahead.

    The words are read by :func:`bot.answers.parse_end_date` (三天, 一周, 半个月, 下周三, 周五, 五一以后, 国庆后,
    月底, 后天, 到5月20日, 5.20, 十号 …), whose one rule is that the date named is the last day away,
    inclusive. Show it with :func:`leave_last_day`, never by formatting the stored instant."""
    local_today = to_local(now, tz).date()
    last = parse_end_date(text, local_today)
    if last is None or last < local_today or last > local_today + timedelta(days=MAX_LEAVE_DAYS):
        return None
    nxt = last + timedelta(days=1)
    return from_local(datetime(nxt.year, nxt.month, nxt.day), tz)


def leave_last_day(away_until: datetime, tz: str) -> str:
    """The last day away of a leave stored as :func:`parse_until` stores it: 5月20日 (inclusive).

    ``away_until`` is the instant the member is available again (local midnight after the last day),
    so the last day is the local date of the instant just before it."""
    return fmt_day(to_local(away_until - timedelta(microseconds=1), tz).date())


# --- ETA (晚到) -----------------------------------------------------------------------------------------
def parse_eta(text: str) -> int | None:
    """Minutes late (1..1440) in the member's words, None otherwise: 30 · 30分钟 · 半小时 · 晚半个钟头 ·
    二十分钟后到 · 一个小时左右 · 一个半小时 · 个把小时 (see :func:`bot.answers.parse_minutes`)."""
    return parse_minutes(text)


def split_names(text: str) -> list[str]:
    """'城关镇、河东救援队, 西山' -> ['城关镇', '河东救援队', '西山']."""
    return [p for p in re.split(r"[\s,，、;；/|]+", _nfkc(text)) if p]
