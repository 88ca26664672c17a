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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import ahocorasick

from bot.text import normalize

_PLACE_SUFFIX = re.compile(r"(街道|县|区|市|镇|乡|村|社区)$")


def norm_place(text: str) -> str:
    """Normalised place name without its administrative suffix (kept when only one character would remain)."""
    t = normalize(text)
    stripped = _PLACE_SUFFIX.sub("", t)
    return stripped if len(stripped) >= 2 else t


def split_words(text: str) -> list[str]:
    """Words typed by a user, separated by spaces or punctuation (、，, ; / and so on)."""
    parts = re.split(r"[\s,，、;；/|]+", text.strip())
    return [p for p in (normalize(x) for x in parts) if p]


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

    @classmethod
    def of(cls, p: object) -> PostingView:
        title = normalize(p.title)  # type: ignore[attr-defined]
        work = title + "\n" + normalize(p.company) + "\n" + normalize(p.requirements or "")  # type: ignore[attr-defined]
        top = p.salary_max if p.salary_max is not None else p.salary_min  # type: ignore[attr-defined]
        return cls(p.id, normalize(p.location), work, title, top, p.job_type,  # type: ignore[attr-defined]
                   bool(p.veteran_priority))  # type: ignore[attr-defined]


def matches(c: Criteria, p: PostingView) -> bool:
    """The matching rule, one subscription against one posting (the reference the index must equal)."""
    if c.places and not any(x in p.location for x in c.places):
        return False
    if c.words and not any(w in p.work_text for w in c.words):
        return False
    if c.min_salary and p.salary_top is not None and p.salary_top < c.min_salary:
        return False
    return not (c.job_type and c.job_type != p.job_type)


def score(c: Criteria, p: PostingView) -> float:
    """Rank of a matching posting for one subscriber: title hits, 退役军人优先, pay above the wish."""
    s = 0.0
    if c.words:
        s += 3.0 if any(w in p.title for w in c.words) else 1.0
    if p.veteran_priority:
        s += 2.0
    if p.salary_top is None:
        s -= 0.5
    else:
        s += min(2.0, max(0.0, (p.salary_top - c.min_salary) / 2000.0))
    if c.places:
        s += 0.5
    return s


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
        by_salary: dict[int, int] = {}
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
            by_salary[c.min_salary] = by_salary.get(c.min_salary, 0) | bit
        # Cumulative masks: subscriptions whose lowest salary is <= threshold[k].
        self.thresholds = sorted(by_salary)
        self.salary_masks: list[int] = []
        acc = 0
        for t in self.thresholds:
            acc |= by_salary[t]
            self.salary_masks.append(acc)
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
            k = bisect.bisect_right(self.thresholds, p.salary_top)
            m &= self.salary_masks[k - 1] if k else 0
        return m

    def who(self, p: PostingView) -> list[int]:
        """Positions (in the criteria list) of the subscriptions that want posting ``p``."""
        return bits(self.mask(p))


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
