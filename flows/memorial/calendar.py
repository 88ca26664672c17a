"""Commemoration days: Qingming (computed per year) and 9·30 烈士纪念日, the built-in campaigns.

清明 is the day (in Beijing time, UTC+8) on which the sun's apparent geocentric longitude reaches 15°.
:func:`qingming` finds that moment with Meeus's solar-coordinates formula (Astronomical Algorithms,
ch. 25: mean longitude, equation of centre, nutation and aberration terms; about 0.01°, i.e. a quarter of
an hour) solved by Newton's method, then converts Terrestrial Time to UT with a ΔT polynomial
(Espenak & Meeus). Every year 1900–2100 was checked against a full ephemeris computation (the table in
``tests/memorial/test_calendar.py``): the closest call is 2071, 00:09 Beijing time, still on the right day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta

QINGMING_LONGITUDE = 15.0
_J2000 = 2451545.0


def _julian_day(y: int, m: int, d: float) -> float:
    if m <= 2:
        y, m = y - 1, m + 12
    a = y // 100
    b = 2 - a + a // 4
    return int(365.25 * (y + 4716)) + int(30.6001 * (m + 1)) + d + b - 1524.5


def sun_apparent_longitude(jde: float) -> float:
    """The sun's apparent geocentric longitude in degrees at Julian Ephemeris Day ``jde``."""
    t = (jde - _J2000) / 36525.0
    l0 = 280.46646 + 36000.76983 * t + 0.0003032 * t * t
    m = math.radians(357.52911 + 35999.05029 * t - 0.0001537 * t * t)
    c = ((1.914602 - 0.004817 * t - 0.000014 * t * t) * math.sin(m)
         + (0.019993 - 0.000101 * t) * math.sin(2 * m) + 0.000289 * math.sin(3 * m))
    omega = math.radians(125.04 - 1934.136 * t)
    return (l0 + c - 0.00569 - 0.00478 * math.sin(omega)) % 360.0


def delta_t(year: int) -> float:
    """TT − UT in seconds (Espenak & Meeus polynomials, 1900–2150)."""
    if year < 1920:
        t = year - 1900
        return -2.79 + 1.494119 * t - 0.0598939 * t**2 + 0.0061966 * t**3 - 0.000197 * t**4
    if year < 1941:
        t = year - 1920
        return 21.20 + 0.84493 * t - 0.076100 * t**2 + 0.0020936 * t**3
    if year < 1961:
        t = year - 1950
        return 29.07 + 0.407 * t - t**2 / 233 + t**3 / 2547
    if year < 1986:
        t = year - 1975
        return 45.45 + 1.067 * t - t**2 / 260 - t**3 / 718
    if year < 2005:
        t = year - 2000
        return 63.86 + 0.3345 * t - 0.060374 * t**2 + 0.0017275 * t**3 + 0.000651814 * t**4 + 0.00002373599 * t**5
    if year < 2050:
        t = year - 2000
        return 62.92 + 0.32217 * t + 0.005589 * t**2
    return -20 + 32 * ((year - 1820) / 100) ** 2 - 0.5628 * (2150 - year)


def solar_term_moment(year: int, longitude: float, month: int, day: int) -> datetime:
    """When (naive UTC) the sun's apparent longitude reaches ``longitude`` near ``month``/``day``."""
    jde = _julian_day(year, month, day)
    for _ in range(8):
        diff = (longitude - sun_apparent_longitude(jde) + 180.0) % 360.0 - 180.0
        jde += diff * 365.2422 / 360.0
        if abs(diff) < 1e-7:
            break
    jd_ut = jde - delta_t(year) / 86400.0
    return datetime(2000, 1, 1, 12) + timedelta(days=jd_ut - _J2000)


def qingming(year: int) -> date:
    """清明 of ``year`` (Beijing time); valid 1900–2100."""
    if not 1900 <= year <= 2100:
        raise ValueError(f"qingming is computed for 1900–2100, not {year}")
    return (solar_term_moment(year, QINGMING_LONGITUDE, 4, 5) + timedelta(hours=8)).date()


@dataclass(frozen=True)
class BuiltinCampaign:
    code: str
    title: str
    kind: str
    day: date
    starts_on: date
    ends_on: date
    message: str


def builtin_campaigns(year: int) -> list[BuiltinCampaign]:
    """The campaigns every year has: 清明 (the week up to the day and the day after) and 9·30."""
    q = qingming(year)
    sep30 = date(year, 9, 30)
    return [
        BuiltinCampaign(f"qingming-{year}", f"{year}年清明·云端祭英烈", "qingming", q, q - timedelta(days=6),
                        q + timedelta(days=1),
                        "今天是清明节。不能到陵园祭扫的朋友，可以在云端为英烈献一束花、寄一句话。"),
        BuiltinCampaign(f"martyrs-day-{year}", f"{year}年9·30烈士纪念日", "martyrs_day", sep30, sep30, sep30,
                        "今天是烈士纪念日。让我们一起缅怀先烈，为英烈献上一束花。"),
    ]
