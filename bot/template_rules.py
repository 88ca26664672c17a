"""WeChat's rules for the keyword fields of template messages and 订阅通知, in one place.

Template messages (模板消息) since 2023-05-04: ``first`` and ``remark`` are no longer shown, no custom
colours, no emoji, line breaks dropped, and every keyword's value is shown to at most 20 characters
(longer ones cut with "…", no error). Templates added today are 类目模板 (category templates) whose
fields are named by type and number (``thing1``, ``time2``…); the old 历史模板 with ``keyword1`` can no
longer be added. 订阅通知 (``/cgi-bin/message/subscribe/bizsend``) uses the same types and refuses a
value that breaks its type's rule with 47003 (``argument invalid! data.thing1.value invalid``).

The types, from the official 订阅通知 page (developers.weixin.qq.com, "发送订阅通知", Body.data):

=================  =======================================================================
``thing``          20 characters: Chinese, digits, letters, symbols
``number``         32 digits, may carry a decimal point
``letter``         32 letters
``symbol``         5 symbols
``character_string``  32 digits, letters or symbols
``time``           24-hour time, optionally with a date (15:01, 2019年10月1日 15:01); a range joins two with ~
``date``           a date, optionally with a time (2019年10月1日, 2019年10月1日 15:01); ranges with ~
``amount``         one currency sign + up to 10 digits, may carry decimals, may end with 元
``phone_number``   17 digits and symbols (+86-0766-66888866)
``car_number``     8: first and last may be Chinese, the rest letters or digits
``name``           10 Chinese characters or 20 letters
``phrase``         5 Chinese characters (配送中)
=================  =======================================================================

Everything here is a pure function used by the outbox (we shorten a value before WeChat would), by
``vetbot templates preview`` (what the person will see) and by the fake WeChat API (the same rules
applied to what it records, 47003 for what the platform refuses). The numbers are configurable
(``template_rules:``) in case WeChat changes them; a month-day time without a year ("12月5日 14:30",
``time_style: short``) is not among the documented examples: ``time_style: full`` sends the documented
"2026年12月5日 14:30" form should WeChat ever refuse the short one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

#: Keyword types and their documented length limits (characters).
DEFAULT_MAX_CHARS: dict[str, int] = {
    "thing": 20, "number": 32, "letter": 32, "symbol": 5, "character_string": 32, "amount": 10,
    "phone_number": 17, "car_number": 8, "name": 10, "phrase": 5,
}
KINDS = (*DEFAULT_MAX_CHARS, "time", "date")
#: What WeChat shows of any template-message keyword value.
DISPLAY_CHARS = 20
ELLIPSIS = "…"
#: Field names WeChat accepts in category templates: a type and a number (thing1, time12 …).
FIELD_RE = re.compile(r"^(?P<kind>" + "|".join(sorted(KINDS, key=len, reverse=True)) + r")(?P<n>\d{1,2})$")
#: Fields of the historical templates that WeChat no longer shows (first, remark) or that only exist in
#: templates that can no longer be added (keyword1 …).
RETIRED = re.compile(r"^(first|remark|keyword\d+)$")


@dataclass(frozen=True)
class Rules:
    """The numbers the rules depend on (config ``template_rules:``)."""

    max_chars: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_CHARS))
    #: "short": 12月5日 14:30 ; "full": 2026年12月5日 14:30 (the documented example form).
    time_style: str = "short"

    def limit(self, kind: str) -> int:
        return int(self.max_chars.get(kind, DEFAULT_MAX_CHARS.get(kind, DISPLAY_CHARS)))


DEFAULT_RULES = Rules()


def field_kind(name: str) -> str | None:
    """The keyword type of a field name (``thing1`` -> ``thing``), or None when it is not one."""
    m = FIELD_RE.match(name)
    return m.group("kind") if m else None


def retired_hint(name: str) -> str | None:
    """Why a field name from the old template format is refused, with what to do instead; None if fine."""
    if name in ("first", "remark"):
        return (f"WeChat no longer shows '{name}' in template messages (since 2023-05-04): put what a person "
                "must read into keyword fields such as thing1 (at most 20 characters each) and the rest on "
                "the linked page (url)")
    if RETIRED.match(name):
        return (f"'{name}' belongs to WeChat's old templates (历史模板), which can no longer be added: pick a "
                "类目模板 and copy its field names (thing1, time2, phrase3 …) from the template's detail page")
    return None


# ---------------------------------------------------------------------------------------------------
# Cleaning: what WeChat drops (line breaks, emoji) we drop ourselves, so what we send is what is shown.


#: Emoji (pictographs, dingbats, arrows and stars, variation selectors, joiners, keycaps, tags), private-use
#: characters and invisible format/control characters: WeChat drops or mangles them, so we drop them.
_DROP = re.compile(
    "[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE00-\uFE0F\u200B-\u200F\u202A-\u202E"
    "\u2060-\u2064\u20E3\u3030\u303D\u3297\u3299\U000E0000-\U000E007F\uE000-\uF8FF\uFEFF\u00AD"
    "\x00-\x08\x0E-\x1F\x7F-\x9F]")
_BREAKS = re.compile("[\r\n\t\u2028\u2029\v\f]")
_SPACES = re.compile(" {2,}")


def clean(value: object) -> str:
    """The value as one line: line breaks and tabs become spaces, emoji and control characters go, runs of
    spaces shrink to one."""
    text = _DROP.sub("", _BREAKS.sub(" ", str(value)))
    return _SPACES.sub(" ", text).strip()


def _cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FA1F or 0xF900 <= o <= 0xFAFF


def cut(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending with … when something was cut (keeps its start)."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + ELLIPSIS


# ---------------------------------------------------------------------------------------------------
# Times and dates


_DATE_TIME = re.compile(
    r"^(?:(?P<y>\d{4})\s*[年/.-]\s*)?(?:(?P<mo>\d{1,2})\s*[月/.-]\s*(?P<d>\d{1,2})\s*[日号]?)?"
    r"\s*(?:T|\s)?\s*(?:(?P<h>\d{1,2})\s*[:：点時时]\s*(?P<mi>\d{1,2})?\s*分?(?::(?P<s>\d{1,2}))?)?$")


@dataclass(frozen=True)
class _Moment:
    year: int | None
    month: int | None
    day: int | None
    hour: int | None
    minute: int | None

    @property
    def has_date(self) -> bool:
        return self.month is not None

    @property
    def has_time(self) -> bool:
        return self.hour is not None


def _parse_one(text: str) -> _Moment | None:
    m = _DATE_TIME.match(text.strip())
    if not m or not text.strip():
        return None
    g = m.groupdict()
    y, mo, d = (int(g[k]) if g[k] else None for k in ("y", "mo", "d"))
    h = int(g["h"]) if g["h"] else None
    mi = int(g["mi"]) if g["mi"] else (0 if h is not None else None)
    if y is not None and mo is None:
        return None
    if mo is not None and not (1 <= mo <= 12 and d is not None and 1 <= d <= 31):
        return None
    if h is not None and not (0 <= h <= 23 and mi is not None and 0 <= mi <= 59):
        return None
    if mo is None and h is None:
        return None
    return _Moment(y, mo, d, h, mi)


def _moments(value: object) -> list[_Moment] | None:
    if isinstance(value, datetime):
        return [_Moment(value.year, value.month, value.day, value.hour, value.minute)]
    if isinstance(value, date):
        return [_Moment(value.year, value.month, value.day, None, None)]
    text = clean(value)
    parts = [p for p in re.split(r"\s*[~～至]\s*", text)] if text else []
    if not parts or len(parts) > 2:
        return None
    out = [_parse_one(p) for p in parts]
    return None if any(m is None for m in out) else out  # type: ignore[return-value]


def _fmt(m: _Moment, kind: str, style: str, year: int) -> str:
    parts = []
    if m.has_date:
        y = m.year or year
        show_year = kind == "date" or style == "full"
        parts.append((f"{y}年" if show_year else "") + f"{m.month}月{m.day}日")
    if m.has_time:
        parts.append(f"{m.hour:02d}:{m.minute:02d}")
    return " ".join(parts)


def format_moment(value: object, kind: str, rules: Rules = DEFAULT_RULES, *, year: int | None = None) -> str | None:
    """A ``time``/``date`` value in a form WeChat accepts, or None when ``value`` is not a time.

    ``time``: "12月5日 14:30" (short) or "2026年12月5日 14:30" (full), or "14:30"; a date alone is not a
    time. ``date``: "2026年12月5日" (with " 14:30" when the value had a time). ``year`` fills a missing
    year (the push's local year)."""
    ms = _moments(value)
    if ms is None:
        return None
    if kind == "time" and not all(m.has_time for m in ms):
        return None
    if kind == "date" and not all(m.has_date for m in ms):
        return None
    y = year or datetime.now().year
    return "~".join(_fmt(m, kind, rules.time_style, y) for m in ms)


# ---------------------------------------------------------------------------------------------------
# Shortening (ours, before sending) and checking (the platform's, in the fake)


@dataclass
class Shortened:
    """A value made to fit its field. ``note`` says what changed (None: nothing did); ``cut`` is True when
    characters were lost (a cut, a dropped value), False for a mere reformat (a time written short)."""

    value: str | None
    note: str | None = None
    cut: bool = False


def _keep(text: str, ok: str) -> str:
    return "".join(ch for ch in text if re.match(ok, ch))


_SYMBOLS = r"[!-/:-@\[-`{-~¥￥·—…、。，：；？！（）【】《》“”‘’]"


def shorten(kind: str, value: object, rules: Rules = DEFAULT_RULES, *, year: int | None = None,
            subscribe: bool = False) -> Shortened:
    """Make ``value`` fit a ``kind`` field by its type, before WeChat would cut (or refuse) it.

    A ``thing`` (a title, a place) keeps its start and ends with …; a time is reformatted short; a
    ``phrase`` keeps its first Chinese characters; digits-only types keep their digits. ``value`` None
    in the result: nothing usable is left (the caller leaves the field out and warns)."""
    raw = clean(value)
    limit = rules.limit(kind)
    if kind in ("time", "date"):
        out = format_moment(value, kind, rules, year=year)
        if out is None:
            return Shortened(None, f"{raw!r} is not a {kind}; left out", cut=True)
        return Shortened(out, None if out == raw else f"{raw!r} written as {out!r}")
    if kind == "thing":
        # A leading 【tag】 (【应急集结】…) repeats what the template's title says: it goes first when the
        # value is too long, so the words that differ survive the cut.
        tagless = re.sub(r"^【[^】]{1,8}】\s*", "", raw) if len(raw) > limit else raw
        out = cut(tagless or raw, limit)
    elif kind == "phrase":
        out = _keep(raw, r"[\u3400-\u9fff\uf900-\ufaff]")[:limit]
    elif kind == "name":
        out = raw[:limit] if any(_cjk(c) for c in raw) else raw[: limit * 2]
    elif kind == "number":
        m = re.search(r"-?\d+(?:\.\d+)?", raw)
        out = m.group(0)[:limit] if m else ""
    elif kind == "amount":
        m = re.search(r"\d+(?:\.\d{1,2})?", raw.replace(",", ""))
        out = f"¥{m.group(0)}" if m and len(m.group(0).split(".")[0]) <= limit else ""
    elif kind == "letter":
        out = _keep(raw, r"[A-Za-z]")[:limit]
    elif kind == "symbol":
        out = _keep(raw, _SYMBOLS)[:limit]
    elif kind == "character_string":
        out = _keep(raw, r"[0-9A-Za-z!-/:-@\[-`{-~]")[:limit]
    elif kind == "phone_number":
        out = _keep(raw, r"[0-9+\-() ]").strip()[:limit]
    elif kind == "car_number":
        out = raw.replace(" ", "")[:limit]
    else:
        out = cut(raw, DISPLAY_CHARS)
    if not out:
        return Shortened(None, f"nothing of {raw!r} fits a {kind} field; left out", cut=True)
    if out == str(value):
        return Shortened(out)
    if out == raw:
        return Shortened(out, "line breaks / emoji removed", cut=True)
    return Shortened(out, f"{raw!r} ({len(raw)} characters) shortened to {out!r}", cut=True)


def check(kind: str, value: object, rules: Rules = DEFAULT_RULES, *, subscribe: bool = True) -> str | None:
    """Why WeChat refuses ``value`` in a ``kind`` field (47003), or None when it is accepted.

    For template messages (``subscribe=False``) a ``thing`` longer than 20 is shown cut, not refused;
    订阅通知 refuses it."""
    if not isinstance(value, str):
        return "value must be text"
    text = value
    if not text.strip():
        return "is empty"
    if any(ch in text for ch in "\r\n"):
        if subscribe:
            return "line breaks are not allowed"
        text = clean(text)  # a template message shows it on one line; the type's rule still applies
    limit = rules.limit(kind)
    if kind == "thing":
        return f"more than {limit} characters" if subscribe and len(text) > limit else None
    if kind in ("time", "date"):
        ms = _moments(text)
        if ms is None:
            return f"not a {kind}"
        if kind == "time" and not all(m.has_time for m in ms):
            return "a time needs hours and minutes"
        if kind == "date" and not all(m.has_date for m in ms):
            return "a date needs month and day"
        return None
    if kind == "phrase":
        if len(text) > limit or not all(_cjk(c) for c in text):
            return f"only up to {limit} Chinese characters"
        return None
    if kind == "name":
        cjk = any(_cjk(c) for c in text)
        return f"more than {limit if cjk else limit * 2} characters" if len(text) > (limit if cjk else limit * 2) else None
    if len(text) > limit:
        return f"more than {limit} characters"
    pattern = {"number": r"^-?\d+(\.\d+)?$", "letter": r"^[A-Za-z]+$",
               "character_string": r"^[0-9A-Za-z!-/:-@\[-`{-~]+$", "phone_number": r"^[0-9+\-() ]+$",
               "amount": r"^[¥￥$€£]?\d{1,10}(\.\d+)?元?$"}.get(kind)
    if pattern and not re.match(pattern, text):
        return f"not a valid {kind}"
    return None


def display(name: str, value: object) -> str | None:
    """What WeChat shows of a template-message field today: None for ``first``/``remark``, else the value
    without line breaks and emoji, cut to 20 characters with …"""
    if name in ("first", "remark"):
        return None
    return cut(clean(value), DISPLAY_CHARS)


def card(title: str, rows: list[tuple[str, str]], link: str | None, width: int = 34) -> str:
    """A text drawing of WeChat's template card (for ``vetbot templates preview``)."""
    def w(s: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)

    label_w = max((w(lbl) for lbl, _ in rows), default=0)
    body = [label + " " * (label_w - w(label)) + "  " + value for label, value in rows]
    width = max([width, w(title), *(w(b) for b in body)])

    def pad(s: str) -> str:
        return s + " " * max(width - w(s), 0)

    lines = ["┌" + "─" * (width + 2) + "┐", f"│ {pad(title)} │", "│ " + pad("") + " │"]
    lines += [f"│ {pad(b)} │" for b in body]
    if link:
        lines.append("│ " + pad("") + " │")
        lines.append(f"│ {pad('查看详情 >')} │")
    lines.append("└" + "─" * (width + 2) + "┘")
    return "\n".join(lines)
