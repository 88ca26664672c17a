"""Injected clocks: production reads the system time, tests move a fake one forward.

All times inside vetbot are naive UTC ``datetime`` values (the same on SQLite and PostgreSQL);
conversion to local time (Asia/Shanghai by default) happens only for display.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    """Anything with ``now()`` returning naive UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real time."""

    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)


class FakeClock:
    """A clock tests set and advance; never sleeps."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 4, 4, 1, 0, 0)

    def now(self) -> datetime:
        return self._now

    def advance(self, **kwargs: float) -> datetime:
        """Move forward by ``timedelta(**kwargs)`` and return the new time."""
        self._now += timedelta(**kwargs)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def to_local(when: datetime, tz: str = "Asia/Shanghai") -> datetime:
    """Naive UTC -> aware local time for display."""
    return when.replace(tzinfo=UTC).astimezone(ZoneInfo(tz))


def from_local(when: datetime, tz: str = "Asia/Shanghai") -> datetime:
    """Naive local time (as typed by staff) -> naive UTC."""
    return when.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC).replace(tzinfo=None)


#: Patterns for users: 5月20日 14:00 and 5月20日 — no leading zeros ("05月20日" reads like a form, not like
#: speech). ``{month}`` and ``{day}`` are filled before strftime; every user-facing date goes through these.
USER_DATETIME = "{month}月{day}日 %H:%M"
USER_DATE = "{month}月{day}日"


def fmt_local(when: datetime | None, tz: str = "Asia/Shanghai", pattern: str = USER_DATETIME) -> str:
    """Format a naive UTC time in local time: strftime ``pattern`` plus ``{month}``/``{day}`` without
    leading zeros (default :data:`USER_DATETIME`: 5月20日 14:00)."""
    if when is None:
        return ""
    local = to_local(when, tz)
    return local.strftime(pattern.replace("{month}", str(local.month)).replace("{day}", str(local.day)))
