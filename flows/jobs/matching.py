"""Matching postings against subscriptions.

The rules (one function, :func:`matches`, states them; the index below must agree with it):

* place: the subscription names no place, or one of its places occurs in the posting's location
  (places are normalised and lose a trailing 县/区/市/镇/乡/街道/村, so 庙坝镇 matches 大竹县庙坝镇);
* work: no keywords and no categories, or one of the keywords / one word of a chosen category occurs
  in the posting's title, company or requirements;
* pay: no lowest salary, or the best pay on offer reaches it — 面议 (negotiable) postings pass,
  ranked lower;
* type: no type chosen, or the same 全职/兼职/实习.

:class:`SubscriptionIndex` answers "who wants this posting?" for thousands of subscriptions at once:
every criterion is a bitset over the subscriptions (Python ints), place and work words are found
in a posting with one Aho-Corasick pass each, and the answer is the AND of four bitsets — so one
posting costs a few big-int operations instead of a loop over every subscription.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import ahocorasick

from flows.api import normalize

_PLACE_SUFFIX = re.compile(r"(街道|县|区|市|镇|乡|村|社区)$")


@lru_cache(maxsize=65536)
def norm_place(text: str) -> str:
    """Normalised place name without its administrative suffix (kept when only one character would remain)."""
    t = normalize(text)
    stripped = _PLACE_SUFFIX.sub("", t)
    return stripped if len(stripped) >= 2 else t


def split_words(text: str) -> list[str]:
    """Words typed by a user, separated by spaces or punctuation (、，, ; / and so on)."""
    parts = re.split(r"[\s,，、;；/|]+", text.strip())
    return [p for p in (normalize(x) for x in parts) if p]


#: Kinds of work in the words people say and the words postings use: a search for one word of a group
#: also finds postings that use another (开车 finds 货车司机 and 驾驶教练). Plain Chinese, no county names.
JOB_WORD_GROUPS: tuple[tuple[str, ...], ...] = (
    ("司机", "开车", "驾驶", "驾驶员", "开货车", "货车", "跑运输", "运输", "跑车", "配送", "送货", "车队", "拉货"),
    ("保安", "门卫", "看大门", "看门", "安保", "巡逻", "值守", "护卫"),
    ("厨师", "做饭", "炊事", "炊事员", "厨房", "帮厨", "烧饭", "大厨"),
    ("电工", "水电", "电气", "电焊", "维修电工"),
    ("仓库", "仓管", "库管", "保管员", "仓储", "理货"),
    ("教官", "军训", "教练", "国防教育"),
    ("保洁", "清洁", "打扫", "环卫"),
    ("农机", "拖拉机", "收割机", "农机手"),
    ("物业", "小区", "管理员"),
)
_JOB_WORDS = {w: g for g in JOB_WORD_GROUPS for w in g}


@lru_cache(maxsize=4096)
def related_job_words(word: str) -> tuple[str, ...]:
    """Words postings use for the kind of work ``word`` names (normalised, the word itself not included):
    开车 → 司机, 驾驶 …; a longer word containing one (开车的, 会开车) counts too. Empty when unknown."""
    w = normalize(word)
    found: list[str] = []
    for key, group in _JOB_WORDS.items():
        if key == w or (len(key) >= 2 and key in w):
            found += [x for x in group if x != w and x not in found]
    return tuple(found)


@dataclass(frozen=True)
class Criteria:
    """A subscription reduced to what matching needs."""

    places: tuple[str, ...] = ()
    words: tuple[str, ...] = ()  # keywords plus the words of chosen categories, normalised
    min_salary: int = 0
    job_type: str = ""

    @classmethod
    def of(cls, places: Iterable[str], keywords: Iterable[str], categories: Iterable[str],
           category_words: Mapping[str, Sequence[str]], min_salary: int = 0, job_type: str = "") -> Criteria:
        words = [normalize(k) for k in keywords]
        for c in categories:
            words += [normalize(w) for w in category_words.get(c, [c])]
        return cls(tuple(dict.fromkeys(p for p in (norm_place(x) for x in places) if p)),
                   tuple(dict.fromkeys(w for w in words if w)), int(min_salary or 0), job_type or "")


@dataclass(frozen=True)
class PostingView:
    """The parts of a posting matching reads (normalised once per posting)."""

    id: int
    location: str
    work_text: str  # title + company + requirements, normalised
    title: str
    salary_top: int | None
    job_type: str
    veteran_priority: bool
    expires_at: datetime | None = None

    @classmethod
    def of(cls, p: Any) -> PostingView:
        title = normalize(p.title)
        work = title + "\n" + normalize(p.company) + "\n" + normalize(p.requirements or "")
        top = p.salary_max if p.salary_max is not None else p.salary_min
        return cls(p.id, normalize(p.location), work, title, top, p.job_type, bool(p.veteran_priority),
                   getattr(p, "expires_at", None))


def matches(c: Criteria, p: PostingView) -> bool:
    """The matching rule, one subscription against one posting (the reference the index must equal)."""
    if c.places and not any(x in p.location for x in c.places):
        return False
    if c.words and not any(w in p.work_text for w in c.words):
        return False
    if c.min_salary and p.salary_top is not None and p.salary_top < c.min_salary:
        return False
    return not (c.job_type and c.job_type != p.job_type)


def global_rank(p: PostingView) -> tuple[bool, bool, int, int]:
    """Order of postings for everybody (higher first): 退役军人优先, pay stated (面议 last), higher pay, newer."""
    return (p.veteran_priority, p.salary_top is not None, p.salary_top or 0, p.id)


def title_hit(c: Criteria, p: PostingView) -> bool:
    """One of the subscriber's words is in the title (not only in the company or requirements)."""
    return any(w in p.title for w in c.words)


def rank(c: Criteria, p: PostingView) -> tuple[bool, bool, bool, int, int]:
    """Best first for one subscriber: a title that names what they look for, then :func:`global_rank`."""
    return (title_hit(c, p), *global_rank(p))


class _Words:
    """Aho-Corasick over a vocabulary: which vocabulary words occur in a text."""

    def __init__(self, words: Iterable[str]) -> None:
        self.auto: ahocorasick.Automaton | None = None
        vocab = sorted(set(words))
        if vocab:
            self.auto = ahocorasick.Automaton()
            for w in vocab:
                self.auto.add_word(w, w)
            self.auto.make_automaton()

    def found(self, text: str) -> set[str]:
        if self.auto is None or not text:
            return set()
        return {w for _, w in self.auto.iter(text)}


class Thresholds:
    """Bitsets of "whose value is below x" for one comparable value per subscription (salary wishes,
    digest cursors, due times): one bisect and one lookup per question."""

    def __init__(self, values: Sequence[Any]) -> None:
        by_value: dict[Any, int] = {}
        for i, v in enumerate(values):
            by_value[v] = by_value.get(v, 0) | (1 << i)
        self.keys = sorted(by_value)
        self.masks: list[int] = []
        acc = 0
        for k in self.keys:
            acc |= by_value[k]
            self.masks.append(acc)

    def below(self, x: Any) -> int:
        """Subscriptions whose value is < x."""
        k = bisect.bisect_left(self.keys, x)
        return self.masks[k - 1] if k else 0

    def at_most(self, x: Any) -> int:
        """Subscriptions whose value is <= x."""
        k = bisect.bisect_right(self.keys, x)
        return self.masks[k - 1] if k else 0


class SubscriptionIndex:
    """Bitset index over a list of criteria; :meth:`who` gives the positions matching a posting."""

    def __init__(self, criteria: Sequence[Criteria]) -> None:
        self.criteria = list(criteria)
        n = len(self.criteria)
        self.all = (1 << n) - 1
        self.no_place = self.no_words = self.any_type = 0
        self.by_place: dict[str, int] = {}
        self.by_word: dict[str, int] = {}
        self.by_type: dict[str, int] = {}
        for i, c in enumerate(self.criteria):
            bit = 1 << i
            if c.places:
                for x in c.places:
                    self.by_place[x] = self.by_place.get(x, 0) | bit
            else:
                self.no_place |= bit
            if c.words:
                for w in c.words:
                    self.by_word[w] = self.by_word.get(w, 0) | bit
            else:
                self.no_words |= bit
            if c.job_type:
                self.by_type[c.job_type] = self.by_type.get(c.job_type, 0) | bit
            else:
                self.any_type |= bit
        self.salary = Thresholds([c.min_salary for c in self.criteria])
        self.places = _Words(self.by_place)
        self.words = _Words(self.by_word)

    def __len__(self) -> int:
        return len(self.criteria)

    def mask(self, p: PostingView) -> int:
        """Bitset of the subscriptions that want posting ``p``."""
        m = self.no_place
        for x in self.places.found(p.location):
            m |= self.by_place[x]
        if not m:
            return 0
        w = self.no_words
        for x in self.words.found(p.work_text):
            w |= self.by_word[x]
        m &= w
        if not m:
            return 0
        m &= self.any_type | self.by_type.get(p.job_type, 0)
        if m and p.salary_top is not None:
            m &= self.salary.at_most(p.salary_top)
        return m

    def title_mask(self, p: PostingView) -> int:
        """Subscriptions with words of which one is in the posting's title."""
        m = 0
        for x in self.words.found(p.title):
            m |= self.by_word[x]
        return m

    def who(self, p: PostingView) -> list[int]:
        """Positions (in the criteria list) of the subscriptions that want posting ``p``."""
        return bits(self.mask(p))


class BitCounter:
    """Per-subscription counts of many bitsets, added as bit-sliced binary counters (a handful of
    big-int operations per bitset, whatever the number of subscriptions)."""

    def __init__(self) -> None:
        self.planes: list[int] = []

    def add(self, m: int) -> None:
        carry = m
        for j, plane in enumerate(self.planes):
            self.planes[j] = plane ^ carry
            carry &= plane
            if not carry:
                return
        if carry:
            self.planes.append(carry)

    def counts(self, n: int) -> list[int]:
        out = [0] * n
        for j, plane in enumerate(self.planes):
            w = 1 << j
            for i in bits(plane):
                out[i] += w
        return out


@dataclass
class Plan:
    """What each subscription gets from a batch of postings: ``picked`` (posting ids, best first, at most
    its room) and ``counts`` (how many postings matched it, skipped pairs excluded)."""

    picked: dict[int, list[int]] = field(default_factory=dict)
    counts: list[int] = field(default_factory=list)


def plan(index: SubscriptionIndex, postings: Sequence[PostingView], rooms: Sequence[int], *,
         allowed: Callable[[PostingView], int] | None = None,
         skip: Iterable[tuple[int, int]] = ()) -> Plan:
    """For every subscription: how many postings match, and its best ``rooms[i]`` of them in
    :func:`rank` order — without scoring every (subscription, posting) pair.

    Postings are walked in :func:`global_rank` order twice: first only title hits (for subscriptions with
    words), then all; a subscription drops out of the walk once its room is full, so the work grows with
    the number of postings handed out, not with the number of matching pairs. ``allowed(p)`` narrows a
    posting's audience (e.g. subscriptions whose digest cursor is below its id); ``skip`` holds
    (position, posting id) pairs never to hand out or count (already sent).
    """
    order = sorted(postings, key=global_rank, reverse=True)
    masks = []
    counter = BitCounter()
    for p in order:
        m = index.mask(p)
        if m and allowed is not None:
            m &= allowed(p)
        masks.append(m)
        if m:
            counter.add(m)
    counts = counter.counts(len(index))
    skipped: dict[int, set[int]] = {}
    by_id = {p.id: k for k, p in enumerate(order)}
    for i, pid in skip:
        k = by_id.get(pid)
        if k is not None and masks[k] >> i & 1:
            counts[i] -= 1
            skipped.setdefault(i, set()).add(pid)
    room = list(rooms)
    open_ = 0
    for i, r in enumerate(room):
        if r > 0:
            open_ |= 1 << i
    picked: dict[int, list[int]] = {}
    for tier in (1, 2):
        for p, m in zip(order, masks, strict=True):
            if not open_:
                break
            m &= open_
            if tier == 1 and m:
                m &= index.title_mask(p)
            if not m:
                continue
            for i in bits(m):
                got = picked.setdefault(i, [])
                if p.id in got or p.id in skipped.get(i, ()):
                    continue
                got.append(p.id)
                room[i] -= 1
                if room[i] <= 0:
                    open_ &= ~(1 << i)
    return Plan(picked, counts)


def bits(m: int) -> list[int]:
    """Positions of the set bits of ``m``, lowest first."""
    if not m:
        return []
    s = bin(m)[:1:-1]  # reversed binary digits: s[i] is bit i
    out = []
    i = s.find("1")
    while i >= 0:
        out.append(i)
        i = s.find("1", i + 1)
    return out
