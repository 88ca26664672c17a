"""Qingming per year (sun's apparent longitude 15°, Beijing time) and the built-in campaigns."""

from __future__ import annotations

from datetime import date

import pytest

from flows.memorial.calendar import builtin_campaigns, qingming

# Every year 1900-2100 from a full ephemeris computation (PyEphem: apparent geocentric longitude of
# date, UTC+8): years not listed fall on April 5.
APRIL_4 = {1976, 1980, 1984, 1988, 1992, 1996, 2000, 2004, 2008, 2009, 2012, 2013, 2016, 2017, 2020, 2021, 2024,
           2025, 2028, 2029, 2032, 2033, 2036, 2037, 2040, 2041, 2042, 2044, 2045, 2046, 2048, 2049, 2050, 2052,
           2053, 2054, 2056, 2057, 2058, 2060, 2061, 2062, 2064, 2065, 2066, 2068, 2069, 2070, 2072, 2073, 2074,
           2075, 2076, 2077, 2078, 2079, 2080, 2081, 2082, 2083, 2084, 2085, 2086, 2087, 2088, 2089, 2090, 2091,
           2092, 2093, 2094, 2095, 2096, 2097, 2098, 2099}
APRIL_6 = {1902, 1903, 1906, 1907, 1910, 1911, 1915, 1919, 1923, 1927, 1931, 1935, 1939, 1943}


@pytest.mark.parametrize(("year", "day"), [(2024, 4), (2025, 4), (2026, 5), (2008, 4), (2000, 4), (1943, 6),
                                           (2071, 5), (2100, 5)])
def test_known_years(year: int, day: int) -> None:
    assert qingming(year) == date(year, 4, day)


def test_every_year_1900_to_2100_matches_the_ephemeris() -> None:
    wrong = []
    for year in range(1900, 2101):
        want = 4 if year in APRIL_4 else 6 if year in APRIL_6 else 5
        if qingming(year) != date(year, 4, want):
            wrong.append((year, qingming(year), want))
    assert wrong == []


def test_outside_the_checked_range_is_refused() -> None:
    with pytest.raises(ValueError):
        qingming(1899)


def test_builtin_campaigns() -> None:
    q, sep30 = builtin_campaigns(2026)
    assert (q.code, q.day, q.starts_on, q.ends_on) == ("qingming-2026", date(2026, 4, 5), date(2026, 3, 30),
                                                      date(2026, 4, 6))
    assert (sep30.code, sep30.day, sep30.kind) == ("martyrs-day-2026", date(2026, 9, 30), "martyrs_day")
