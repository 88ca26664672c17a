"""Pinyin keys of martyrs' names, for search by initials (hjg → 黄继光) or by full pinyin.

Surnames and given names have several readings (单 dan/shan, 曾 ceng/zeng, 解 jie/xie), and an elderly
user types the initials they hear. So the initials keep every plausible reading: pypinyin's in-context
reading first, then the heteronym variants, capped so a long name cannot explode the key.
"""

from __future__ import annotations

import itertools
import re

from pypinyin import Style, lazy_pinyin, pinyin

from flows.api import normalize

#: At most this many initials variants per name.
MAX_VARIANTS = 8
_HAN = re.compile(r"[\u3400-\u9fff]")
_TITLE = re.compile(r"(烈士|英烈|同志)$")


def name_keys(name: str) -> tuple[str, str]:
    """(initials, full pinyin) of a name.

    ``initials`` is space-separated with spaces at both ends (`` dxx sxx ``) so ``LIKE '% dx%'`` finds
    a prefix of any variant; ``pinyin`` is the in-context reading without tones (``huangjiguang``).
    Letters in the name (a romanised name) are kept as they are, lower-cased.
    """
    chars = [c for c in normalize(name) if _HAN.match(c) or c.isalnum()]
    if not chars:
        return "", ""
    text = "".join(chars)
    default = "".join(p[0] for p in lazy_pinyin(text) if p)
    full = "".join(lazy_pinyin(text))
    per_char = []
    for c in chars:
        if _HAN.match(c):
            options = [p[0] for p in pinyin(c, style=Style.FIRST_LETTER, heteronym=True)[0] if p]
            per_char.append(list(dict.fromkeys(o.lower() for o in options)) or [c])
        else:
            per_char.append([c.lower()])
    variants = [default.lower()]
    for combo in itertools.product(*per_char):
        v = "".join(combo)
        if v not in variants:
            variants.append(v)
        if len(variants) >= MAX_VARIANTS:
            break
    out = " " + " ".join(variants) + " "
    while len(out) > 200 and len(variants) > 1:
        variants.pop()
        out = " " + " ".join(variants) + " "
    return out[:200], full.lower()[:300]


def is_letters(query: str) -> bool:
    """True for an initials / pinyin query such as ``hjg`` or ``huangjiguang``."""
    return bool(re.fullmatch(r"[a-z]{1,40}", query))


def clean_query(q: str) -> str:
    """A search as typed → what is searched: normalised (spaces, punctuation, full-width, traditional),
    a trailing 烈士/英烈/同志 dropped (黄继光烈士 → 黄继光)."""
    t = normalize(q)
    return _TITLE.sub("", t) or t
