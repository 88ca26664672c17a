"""Matching rules, and the bitset index agrees with the one-by-one rule on random data."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from flows.jobs.matching import (
    BitCounter,
    Criteria,
    PostingView,
    SubscriptionIndex,
    Thresholds,
    bits,
    matches,
    norm_place,
    plan,
    rank,
)
from flows.jobs.timeutil import deliverable_at, in_quiet, next_daily, parse_hm, parse_range
from storage.jobs import JobPosting

CATS = {"保安": ["保安", "安保", "门卫"], "司机": ["司机", "驾驶员"]}


def post(pid: int = 1, title: str = "保安", location: str = "大竹县城关镇", lo: int | None = 3000,
         hi: int | None = 4000, job_type: str = "全职", company: str = "甲公司", req: str = "",
         vp: bool = False) -> PostingView:
    return PostingView.of(JobPosting(id=pid, title=title, location=location, salary_min=lo, salary_max=hi,
                                     job_type=job_type, company=company, requirements=req, veteran_priority=vp))


def crit(places: list[str] = (), keywords: list[str] = (), categories: list[str] = (), min_salary: int = 0,
         job_type: str = "") -> Criteria:  # type: ignore[assignment]
    return Criteria.of(places, keywords, categories, CATS, min_salary, job_type)


def test_empty_subscription_matches_everything() -> None:
    assert matches(crit(), post())


@pytest.mark.parametrize("places, location, ok", [
    (["大竹"], "大竹县城关镇", True),
    (["庙坝镇"], "大竹县庙坝镇", True),
    (["庙坝镇"], "大竹县庙坝", True),  # suffix dropped on both sides of the comparison
    (["城关镇"], "大竹县庙坝镇", False),
    (["渠县", "城关"], "大竹县城关镇", True),
    (["渠县"], "大竹县城关镇", False),
])
def test_place(places: list[str], location: str, ok: bool) -> None:
    assert matches(crit(places=places), post(location=location)) is ok


def test_words_and_categories() -> None:
    assert matches(crit(categories=["保安"]), post(title="小区门卫"))
    assert matches(crit(categories=["保安"]), post(title="景区安保实习生"))
    assert not matches(crit(categories=["保安"]), post(title="厨师"))
    assert matches(crit(keywords=["电工"]), post(title="维修工", req="持电工证"))
    assert matches(crit(keywords=["示例物流"]), post(title="司机", company="示例物流公司"))
    assert matches(crit(keywords=["厨师"], categories=["司机"]), post(title="货运驾驶员"))


def test_salary_and_negotiable() -> None:
    assert matches(crit(min_salary=4000), post(lo=3000, hi=4000))
    assert not matches(crit(min_salary=4500), post(lo=3000, hi=4000))
    assert matches(crit(min_salary=4500), post(lo=5000, hi=None))  # "5000元起"
    assert matches(crit(min_salary=9000), post(lo=None, hi=None))  # 面议 passes …
    assert rank(crit(min_salary=9000), post(lo=None, hi=None)) < rank(crit(), post(lo=1000, hi=1000))  # … ranked lower


def test_type() -> None:
    assert matches(crit(job_type="兼职"), post(job_type="兼职"))
    assert not matches(crit(job_type="兼职"), post(job_type="全职"))


def test_rank_prefers_title_hits_then_veteran_priority_then_pay() -> None:
    c = crit(keywords=["保安"])
    assert rank(c, post(title="保安队长", hi=2000)) > rank(c, post(title="物业", req="兼做保安", vp=True, hi=9000))
    assert rank(c, post(vp=True, hi=2000)) > rank(c, post(vp=False, hi=9000))
    assert rank(c, post(hi=5000)) > rank(c, post(hi=4000))
    assert rank(c, post(pid=2)) > rank(c, post(pid=1))  # newer


def test_norm_place_keeps_one_character_names() -> None:
    assert norm_place("庙坝镇") == "庙坝" and norm_place("渠县") == "渠县" and norm_place("大竹县") == "大竹"


def test_thresholds_and_counter() -> None:
    th = Thresholds([3000, 0, 5000, 3000])
    assert bits(th.at_most(3000)) == [0, 1, 3] and bits(th.below(3000)) == [1] and th.below(0) == 0
    counter = BitCounter()
    for m in (0b0111, 0b0101, 0b0001, 0b1000):
        counter.add(m)
    assert counter.counts(5) == [3, 1, 2, 1, 0]


def test_bits() -> None:
    assert bits(0) == [] and bits(0b1011) == [0, 1, 3] and bits(1 << 20000) == [20000]


def test_index_agrees_with_the_rule_on_random_data() -> None:
    rng = random.Random(7)
    towns = ["城关镇", "庙坝镇", "石河镇", "月华镇", "清河镇"]
    titles = ["保安队长", "门卫", "货车司机", "电工", "厨师", "文员", "普工", "安保员", "驾驶员", "保洁"]
    subs = [crit(places=rng.sample([*towns, "大竹"], rng.choice([0, 0, 1, 2])),
                 keywords=rng.sample(["电工", "厨师", "文员", "门卫"], rng.choice([0, 0, 1])),
                 categories=rng.sample(list(CATS), rng.choice([0, 1, 1, 2])),
                 min_salary=rng.choice([0, 0, 2000, 3000, 4000, 5000, 3500]),
                 job_type=rng.choice(["", "", "全职", "兼职", "实习"]))
            for _ in range(400)]
    index = SubscriptionIndex(subs)
    for pid in range(300):
        lo = rng.choice([None, 2000, 3000, 4000, 5000])
        hi = rng.choice([None, (lo or 2000) + 1000])
        p = post(pid, rng.choice(titles), "大竹县" + rng.choice(towns), lo, hi, rng.choice(["全职", "兼职", "实习"]))
        assert index.who(p) == [i for i, c in enumerate(subs) if matches(c, p)]


@pytest.mark.parametrize("text, minutes", [("8", 480), ("08:00", 480), ("8点半", 510), ("19:30", 1170),
                                           ("晚上7点", 1140), ("下午3点", 900), ("7点30分", 450), ("25", None),
                                           ("八点", 480), ("晚上七点半", 1170), ("十二点", 720), ("abc", None)])
def test_parse_hm(text: str, minutes: int | None) -> None:
    assert parse_hm(text) == minutes


def test_parse_range() -> None:
    assert parse_range("22:00-07:00") == (1320, 420)
    assert parse_range("22-7") == (1320, 420)
    assert parse_range("晚上10点到早上7点") == (1320, 420)
    assert parse_range("22") is None


def test_quiet_hours_wrap_midnight() -> None:
    assert in_quiet(23 * 60, 1320, 420) and in_quiet(60, 1320, 420) and not in_quiet(12 * 60, 1320, 420)
    assert not in_quiet(0, 0, 0)
    tz = "Asia/Shanghai"
    # 23:30 local (15:30 UTC) -> 07:00 local the next morning (23:00 UTC).
    assert deliverable_at(datetime(2026, 4, 4, 15, 30), 1320, 420, tz) == datetime(2026, 4, 4, 23, 0)
    # 01:00 local (17:00 UTC the day before) -> 07:00 local the same day.
    assert deliverable_at(datetime(2026, 4, 4, 17, 0), 1320, 420, tz) == datetime(2026, 4, 4, 23, 0)
    noon = datetime(2026, 4, 4, 4, 0)
    assert deliverable_at(noon, 1320, 420, tz) == noon


def test_next_daily() -> None:
    tz = "Asia/Shanghai"
    # 10:00 local; digest at 08:00 -> tomorrow 08:00 local = 00:00 UTC next day.
    assert next_daily(datetime(2026, 4, 4, 2, 0), 480, 1320, 420, tz) == datetime(2026, 4, 5, 0, 0)
    # digest at 19:00 -> today 11:00 UTC.
    assert next_daily(datetime(2026, 4, 4, 2, 0), 1140, 1320, 420, tz) == datetime(2026, 4, 4, 11, 0)
    # digest at 23:00 inside quiet hours -> moved to 07:00 next morning.
    assert next_daily(datetime(2026, 4, 4, 2, 0), 1380, 1320, 420, tz) == datetime(2026, 4, 4, 23, 0)


def test_plan_hands_out_the_best_and_counts_like_the_nested_loop() -> None:
    rng = random.Random(11)
    towns = ["城关镇", "庙坝镇", "石河镇"]
    titles = ["保安队长", "门卫", "货车司机", "电工", "厨师", "物业"]
    subs = [crit(places=rng.sample(towns, rng.choice([0, 1])), keywords=rng.sample(["门卫", "电工"], rng.choice([0, 1])),
                 categories=rng.sample(list(CATS), rng.choice([0, 1])), min_salary=rng.choice([0, 3000]))
            for _ in range(150)]
    posts = [post(pid, rng.choice(titles), "大竹县" + rng.choice(towns), rng.choice([None, 2000, 4000]), None,
                  vp=rng.random() < 0.3, req=rng.choice(["", "门卫经验", "电工证"])) for pid in range(1, 121)]
    rooms = [rng.choice([0, 1, 3, 5]) for _ in subs]
    skip = {(i, p.id) for i in range(0, 150, 7) for p in posts[:20]}
    cut = Thresholds([rng.choice([0, 40, 80]) for _ in subs])  # like digest cursors: only postings above

    result = plan(SubscriptionIndex(subs), posts, rooms, allowed=lambda p: cut.below(p.id), skip=skip)
    for i, c in enumerate(subs):
        want = [p for p in posts if matches(c, p) and cut.below(p.id) >> i & 1 and (i, p.id) not in skip]
        want.sort(key=lambda p: rank(c, p), reverse=True)
        assert result.counts[i] == len(want)
        assert result.picked.get(i, []) == [p.id for p in want[: rooms[i]]]
