"""Answers in people's own words: numbers, yes/no, call-up answers, end dates and townships.

Many users are over sixty and type as they speak: 两, 半个钟头, 十五六个, 要得, 俺去不了，腰扭了, 五一以后,
俺是城关的. Every flow that asks something reads the answer through this module, so that the same words
work everywhere and the rules live in one place. Pure functions on text: no database, no aiohttp, no
clock (the caller passes today's date in the user's time zone).

Readers return ``None`` when the text is not an answer of that kind; the flow then re-asks once (or lets
the message go to routing). Readers that can be unsure return a confidence in 0..1 so that a flow records
only what it understood (:data:`RECORD`) and asks back where it is unsure (:data:`CONFIRM`).

The end-date rule (one rule, used by 请假 and 我的队伍 alike, see :func:`parse_end_date`): **a leave's end
date is the last day away, inclusive**. 请假 三天 on 12月5日 is away 5, 6 and 7 December and available again
at 00:00 on 12月8日 (local time); the bot says 请假至 12月7日（含）.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

from bot.text import to_simplified

#: Readings at or above this confidence are recorded as the user's answer.
RECORD = 0.75
#: Readings between this and :data:`RECORD` are confirmed with the user ("您是说 … 吗？").
CONFIRM = 0.5


# Cantonese function words (relatives in Guangdong and Hong Kong write as they speak): 唔 = 不, 係 = 是 …
_YUE = [("唔使", "不用"), ("唔洗", "不用"), ("唔该", "谢谢"), ("唔該", "谢谢"), ("多谢晒", "谢谢"), ("唔", "不"),
        ("係", "是"), ("系唔系", "是不是"), ("冇", "没"), ("咗", "了"), ("嘅", "的"), ("喺", "在"), ("啲", "些"),
        ("佢", "他"), ("嚟", "来"), ("乜嘢", "什么"), ("边度", "哪里"), ("點解", "为什么"), ("点解", "为什么"), ("得唔得", "行不行")]


def _clean(text: str) -> str:
    """NFKC (full-width digits and letters), traditional → simplified, Cantonese function words made
    Mandarin, lower case, no whitespace. Punctuation stays: it separates clauses."""
    t = unicodedata.normalize("NFKC", text or "")
    if any(ch in t for ch in "唔係冇咗嘅喺啲佢嚟乜點"):
        for a, b in _YUE:
            t = t.replace(a, b)
    t = to_simplified(t).lower()
    return "".join(t.split())


_PUNCT = re.compile(r"[，,。.!！?？;；:：、~～…—\-\"'“”‘’()（）【】\[\]<>《》/|]+")
# Particles and interjections people add without changing the meaning.
_TAIL = re.compile(r"(?:啊|呀|吖|哈|哦|喔|噢|嘛|呗|咯|啦|喇|嘅|哟|嘞|滴|哇|撒|噻|额|的嘞|了哈|哈哈|嘿嘿|呵呵)+$")
_HEAD = re.compile(r"^(?:嗯+|恩+|哦+|噢+|额+|呃+|啊+|那个|那就|那|就|这个|报告|队长|领导|同志|老师)(?=.)")


def _clauses(text: str) -> list[str]:
    return [c for c in _PUNCT.split(_clean(text)) if c]


_REPEAT = re.compile(r"^(.{1,3}?)\1{1,3}$")


def _bare(clause: str) -> str:
    """A clause without leading interjections, trailing particles and repetition (要得嘛 → 要得, 好的好的 →
    好的, 中中中 → 中)."""
    m = _REPEAT.match(clause)
    c = m.group(1) if m and m.group(1) not in ("嗯", "恩", "哈", "呵", "嘿") else clause
    for _ in range(3):
        c2 = _TAIL.sub("", _HEAD.sub("", c)) or c
        if c2 == c:
            break
        c = c2
    return c


# =====================================================================================================
# Numbers
_DIGITS = {"零": 0, "〇": 0, "洞": 0, "一": 1, "幺": 1, "壹": 1, "二": 2, "两": 2, "俩": 2, "贰": 2, "三": 3,
           "仨": 3, "叁": 3, "四": 4, "肆": 4, "五": 5, "伍": 5, "六": 6, "陆": 6, "七": 7, "柒": 7, "八": 8,
           "捌": 8, "九": 9, "玖": 9}
_UNITS = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000, "万": 10000}
_CN_CHARS = "".join(_DIGITS) + "".join(_UNITS)
#: A number as people write it inside a sentence: 20, 1.5, 二十, 两, 十五六, 二三十, 三十来, 十几, 一百二.
NUMBER_RE = rf"(?:\d+(?:\.\d+)?|[{_CN_CHARS}]+(?:点[{_CN_CHARS}]+)?)(?:来|多|几|余)?"


@dataclass(frozen=True)
class Number:
    """A number read from text. ``value`` is the single best reading: for a range (十五六, 两三) its upper
    end — an ETA or a leave planned on the later end is the one that does not disappoint — and for an
    approximate number (三十来, 一个多) the number plus half a step (一个多小时 = 1.5 h, 二十多 = 25)."""

    value: float
    low: float
    high: float
    approx: bool = False


def _cn_int(s: str) -> int | None:
    """Plain Chinese numerals → int: 十五, 二十, 一百零五, 一百二 (=120), 三千五 (=3500), 两万."""
    if not s:
        return None
    if all(ch in _DIGITS for ch in s):
        if len(s) == 1:
            return _DIGITS[s]
        if len(s) >= 3 or any(ch in "零〇洞" for ch in s):  # 二零二六, 一〇: read digit by digit
            return int("".join(str(_DIGITS[ch]) for ch in s))
        return None  # 两三, 一两: a range (parse_number)
    total, section, digit = 0, 0, None
    last_unit = 10**9
    for ch in s:
        if ch in _DIGITS:
            if digit is not None and _DIGITS[ch] != 0 and digit != 0:
                return None  # two digits in a row: a range, not one number
            digit = _DIGITS[ch]
        elif ch in _UNITS:
            unit = _UNITS[ch]
            if unit == 10000:
                section = (section + (digit or 0)) * unit
                total, section, digit = total + section, 0, None
                last_unit = unit
                continue
            if unit >= last_unit and last_unit < 10000:
                return None
            section += (1 if digit is None else digit) * unit
            digit, last_unit = None, unit
        else:
            return None
    if digit is not None:
        # 一百二 = 120, 三千五 = 3500: a trailing digit right after a unit takes the next lower unit.
        section += digit * (last_unit // 10 if last_unit < 10**9 and last_unit >= 100 and s[-2] in _UNITS else 1)
    return total + section


def parse_number(text: str) -> Number | None:
    """The whole text as a number, or None.

    Arabic or full-width digits (20, ２０, 1.5), Chinese numerals (二十, 两, 一百二, 一点五), ranges (十五六 →
    15–16, 二三十 → 20–30, 一两 → 1–2), approximations (三十来, 二十多, 十几, 三十左右), 半 (0.5) and
    一个半 (1.5). A trailing 个/位/人 is ignored.
    """
    t = _bare(_clean(text))
    t = re.sub(r"(?:左右|上下|大概|差不多|大约|约)$", "", re.sub(r"^(?:大概|差不多|大约|约|估计)", "", t))
    approx = False
    if not t or len(t) > 20:
        return None
    m = re.fullmatch(r"(.*?)个?半", t)
    if m:
        if not m.group(1):
            return Number(0.5, 0.5, 0.5)
        base = parse_number(m.group(1))
        return None if base is None else Number(base.value + 0.5, base.low + 0.5, base.high + 0.5, base.approx)
    t = re.sub(r"[个位人名]$", "", t)
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        if len(t) > 12:  # no answer here needs more; float('9' * 400) is infinity
            return None
        v = float(t)
        return Number(v, v, v)
    m = re.fullmatch(rf"([{_CN_CHARS}]+)点([{''.join(_DIGITS)}]+)", t)
    if m:
        whole, frac = _cn_int(m.group(1)), "".join(str(_DIGITS[c]) for c in m.group(2))
        if whole is None:
            return None
        v = float(f"{whole}.{frac}")
        return Number(v, v, v)
    for suffix, step in (("来", 0.0), ("把", 0.0), ("多", 0.5), ("余", 0.5)):
        if t.endswith(suffix) and len(t) > 1:
            base = parse_number(t[:-1])
            if base is None:
                return None
            unit = 10 if base.value >= 10 and base.value % 10 == 0 else 1
            bump = step * unit if suffix in ("多", "余") else 0.0
            return Number(base.value + bump, base.value, base.value + unit - (1 if unit > 1 else 0.01), True)
    if t.endswith("几"):
        head = t[:-1]
        if head in ("十", "一十"):
            return Number(15, 11, 19, True)
        base = _cn_int(head) if head else 0
        if base is None or (head and base % 10):
            return None
        return Number(base + 5 if head else 5, base + 1 if head else 2, base + 9 if head else 9, True)
    v = _cn_int(t)
    if v is not None:
        return Number(v, v, v, approx)
    # Ranges: 两三 / 一两 / 十五六 / 二三十 / 七八百
    m = re.fullmatch(rf"(十|[{''.join(_DIGITS)}]十)?([{''.join(_DIGITS)}])([{''.join(_DIGITS)}])([十百千万]?)", t)
    if m:
        tens = _cn_int(m.group(1)) if m.group(1) else 0
        a, b = _DIGITS[m.group(2)], _DIGITS[m.group(3)]
        if b != a + 1 and not (a == 1 and b == 2 and m.group(2) == "一"):
            return None
        mult = _UNITS.get(m.group(4), 1) if m.group(4) else 1
        if tens and mult != 1:
            return None
        lo, hi = tens + a * mult, tens + b * mult
        return Number(hi, lo, hi, True)
    return None


# =====================================================================================================
# Yes / no
_YES = frozenset({
    "1", "是", "是的", "是滴", "是啊", "对", "对的", "对头", "对滴", "没错", "不错", "正确", "好", "好的", "好滴", "好嘞",
    "好吧", "好呀", "行", "行的", "行吧", "可以", "可以的", "中", "中中", "管", "要得", "要的", "得", "得嘞", "成",
    "妥", "妥了", "确认", "确定", "同意", "没问题", "没得问题", "没有问题", "ok", "okay", "okk", "y", "yes", "嗯",
    "嗯嗯", "嗯呐", "嗯哪", "恩", "恩恩", "要", "需要", "就这样", "就这么办", "照办", "办吧", "来吧", "整", "安排",
    "麻烦了", "那好", "那行", "好的呢", "好哒", "好滴呢", "中嘞", "中啊", "阔以", "可", "👌", "👍", "这么办", "这样",
    "这样吧", "就这样吧", "收到", "明白",
})
_NO = frozenset({
    "2", "不", "不是", "不对", "否", "不用", "不用了", "不要", "不要了", "不了", "别", "别了", "算了", "算了吧", "不行",
    "不中", "不成", "不好", "不必", "不必了", "不需要", "不需要了", "没", "没有", "不同意", "不确认", "拉倒", "罢了",
    "甭", "甭了", "不得", "要不得", "使不得", "no", "n", "nope", "先不", "先不了", "先不用", "暂时不", "暂时不用",
    "还是不了", "还是算了", "再说吧", "以后再说", "改天吧", "改天", "不弄了", "不搞了", "不整了", "不发了", "不去了",
    "不办了", "不想", "不想要", "不愿意", "免了", "省省", "不麻烦了", "不用麻烦了", "不着急", "错了",
    "以后再说吧", "再说", "下次吧", "下次再说", "下回吧", "没必要", "不必要", "用不着", "犯不着", "没这个必要",
})
# Words that only acknowledge: they lose to any other answer in the same message (嗯，不用了 = no).
_WEAK_YES = frozenset({"嗯", "嗯嗯", "恩", "恩恩", "嗯呐", "嗯哪", "好吧", "那好", "那行", "麻烦了"})
_COURTESY = re.compile(r"^(?:谢谢|谢谢你|谢谢您|谢谢啦|谢了|多谢|感谢|辛苦了|辛苦|麻烦你了|麻烦您了|麻烦你们了|"
                       r"你好|您好|同志|领导|好人|好人一生平安)$")
# A-not-A questions (去不去, 要不要) and question words: the user is asking back, not answering.
_QUESTION = re.compile(r"[?？]|吗$|(.)不\1|可不可以|能不能|要不要|行不行|是不是|对不对|有没有|哪里|哪儿|在哪|"
                       r"几点|什么时候|啥时候|为什么|为啥|咋回事|怎么回事|干什么|干啥|做什么")


def _is_question(text: str) -> bool:
    """True when any clause asks something (a ？, a trailing 吗, 去不去, 几点 …); 不见不散 is no question."""
    raw = (text or "").replace("不见不散", "")
    if "?" in raw or "？" in raw:
        return True
    return any(_QUESTION.search(_TAIL.sub("", c) if not c.endswith("吗") else c) for c in _clauses(raw))


_NO_HEAD = re.compile(r"^(?:不用|不要|不必|不需要|别|甭|不想|先不|暂时不|还是不|算了|不了)")


def _yes_no_clause(c: str) -> bool | None:
    c = _bare(c)
    if c[-1:] in ("吧", "了") and c[:-1] in _NO:  # 拉倒吧, 用不着了: the particle softens a no, it does not ask
        c = c[:-1]
    if c in _YES:
        return True
    if c in _NO:
        return False
    if _NO_HEAD.match(c) and len(c) <= 8:
        return False
    if re.fullmatch(r"(?:好|行|可以|中|没问题|确认|确定|同意|对|ok|okay)(?:的|了|啦|吧|滴|哈|呀|啊)*", c):
        return True
    return None


def parse_yes_no(text: str, *, digits: bool = True) -> bool | None:
    """True for yes, False for no, None when the text is neither (or both, or a question back).

    Yes: 好的, 行, 中, 要得, 可以, 嗯, 对, 是的, 没问题, 确认, 👍 …; no: 不用了, 算了, 不要, 不了, 别, 不行 …
    Courtesy words around the answer do not count (好的，谢谢 = yes; 不用了，麻烦了 = no); an acknowledgement
    loses to a real answer in the same message (嗯，不用了 = no); a question back (可以吗？ 要不要钱) is no
    answer. With ``digits`` (the default, for questions offered as "1 是 2 不是"), 1 is yes and 2 is no.
    """
    raw = text or ""
    cl = _clauses(raw)
    if not cl:
        return True if any(e in raw for e in ("👌", "👍")) else None
    if _is_question(raw) and not all(_bare(c) in _YES | _NO for c in cl):
        return None
    strong: set[bool] = set()
    weak: set[bool] = set()
    for c in cl:
        if _COURTESY.match(c) or _COURTESY.match(_bare(c)):
            continue
        v = _yes_no_clause(c)
        if v is None:
            return None  # a clause we do not understand: do not guess from the rest
        if not digits and _bare(c) in ("1", "2"):
            return None
        (weak if _bare(c) in _WEAK_YES else strong).add(v)
    decided = strong or weak
    return next(iter(decided)) if len(decided) == 1 else None


# =====================================================================================================
# Durations in minutes (ETA)
_DUR = re.compile(
    rf"(?P<num>{NUMBER_RE})?(?P<ge>个|个把)?(?P<half>半)?(?P<more>多)?"
    r"(?P<unit>分钟|分|min|mins|minutes|刻钟|刻|个钟头|钟头|个钟|钟|小时|个小时|h|hr|hrs|hour|hours)")


def parse_minutes(text: str) -> int | None:
    """The first length of time in ``text`` in minutes (1..1440), or None.

    30 · 30分钟 · 半小时 · 半个钟头 · 一个半小时 · 二十来分钟 · 一个小时左右 · 个把小时 (60) · 一刻钟 (15) ·
    两三个小时 (the upper end: 180) · 1.5h. A bare number counts as minutes.
    """
    t = _clean(text)
    n = parse_number(t)
    if n is not None:  # a bare number: minutes
        v = round(n.value)
        return v if 1 <= v <= 1440 else None
    for m in _DUR.finditer(t):
        unit = m.group("unit")
        raw = m.group("num")
        if raw is None and not m.group("half") and m.group("ge") != "个把":
            continue
        if raw is not None and raw.endswith("点"):
            continue
        if raw is None:
            num = 1.0 if m.group("ge") == "个把" else 0.0
        else:
            parsed = parse_number(raw)
            if parsed is None:
                continue
            num = parsed.value
        if m.group("half"):
            num += 0.5
        if m.group("more") and not m.group("half"):
            num += 0.5
        if unit in ("刻钟", "刻"):
            minutes = num * 15
        elif unit in ("分钟", "分", "min", "mins", "minutes"):
            minutes = num
        else:
            # 钟 alone is an hour only as 个钟 / 钟头 (三点钟 is a clock time, handled by parse_clock)
            if unit == "钟" and not m.group("ge"):
                continue
            minutes = num * 60
        v = round(minutes)
        if 1 <= v <= 1440:
            return v
    return None


_CLOCK_RE = re.compile(rf"(?P<pre>上午|早上|下午|晚上|傍晚|中午)?(?P<h>{NUMBER_RE})(?:点|时|:)(?P<m>半|一刻|三刻|"
                       rf"\d{{1,2}}|[{_CN_CHARS}]+)?(?:分)?(?:钟)?")


def parse_clock(text: str) -> tuple[int, int] | None:
    """A clock time inside ``text`` (九点到, 8:30, 下午三点半) → (hour 0-23, minute); None when there is none."""
    t = _clean(text)
    m = _CLOCK_RE.search(t)
    if not m:
        return None
    h_num = parse_number(m.group("h"))
    if h_num is None or h_num.value != int(h_num.value):
        return None
    h = int(h_num.value)
    mm = m.group("m")
    if mm is None:
        mi = 0
    elif mm == "半":
        mi = 30
    elif mm == "一刻":
        mi = 15
    elif mm == "三刻":
        mi = 45
    else:
        mn = parse_number(mm)
        if mn is None:
            return None
        mi = int(mn.value)
    if m.group("pre") in ("下午", "晚上", "傍晚") and 1 <= h < 12:
        h += 12
    if not (0 <= h <= 24 and 0 <= mi < 60):
        return None
    return h % 24, mi


# =====================================================================================================
# Call-up answers: 到 / 晚到 / 不能到
YES, LATE, NO = "yes", "late", "no"


@dataclass(frozen=True)
class CallupReading:
    """What a member's reply to a call-up says.

    ``answer`` is yes (到), late (晚到) or no (不能到); ``eta_min`` the minutes late when said
    (晚半个钟头 → 30); ``at_clock`` a stated arrival time (九点到 → (9, 0)) for the flow to turn into
    minutes against the assembly time; ``confidence`` in 0..1: record at :data:`RECORD` or above, ask
    back between :data:`CONFIRM` and :data:`RECORD`, ignore below.
    """

    answer: str
    confidence: float
    eta_min: int | None = None
    at_clock: tuple[int, int] | None = None
    why: str = ""

    @property
    def recordable(self) -> bool:
        return self.confidence >= RECORD


_NEG = "不没未别甭"
# (pattern, answer, strength) per clause, first hit wins; checked in this order.
_CALLUP_RULES: list[tuple[re.Pattern[str], str, float, str]] = [(re.compile(p), a, s, w) for p, a, s, w in [
    # late, although it has a 不 in it: 不能准时到 is 晚到, not 不能到
    (r"(?:不能|没法|没办法|不太能|可能不能|赶不)(?:准时|按时|及时)|赶不上(?:集合)?(?:时间)?|来不及(?:准时)?|"
     r"不能马上|没法马上|不能立刻|晚(?:不了)?多少", LATE, 0.9, "not on time"),
    # no
    (r"(?:去|来|到|赶|参加|出|走|脱|过|动|起)不(?:了|成|到|过来|过去|开|开身|来|去)|"
     r"不(?:能|行|方便|可以|得|大方便)(?:去|来|到|参加|出来|过去|过来|出门|出发|集合)?(?:了|啦)?$|"
     r"^(?:我|俺|咱)?不(?:能|行|方便)|不(?:去|来|到|参加|过去|过来|出来)(?:了|啦)?$|没(?:法|办法|空|时间|工夫)|"
     r"^不能到|^(?:3|三|不能|不到|去不了|来不了)$", NO, 0.95, "cannot come"),
    (r"有(?:点|些)?(?:急)?事|走不开|脱不开|请假|出差|在外地|外地|不在家|不在本地|不在县里|不在(?:城里|镇上|家里)|"
     r"住院|生病|病了|病着|受伤|扭了|伤了|骨折|发烧|感冒|在医院|喝了?(?:点)?酒|值班|夜班|带孩子|看孩子|在外面打工|"
     r"打工|回老家|腿脚不好|身体不好|动不了|起不来", NO, 0.8, "a reason not to come"),
    # late
    (r"^(?:2|二|晚到|迟到)$|晚(?:点|一点|些|一些|一会儿?|会儿|半|个|一|两|几|十|二|三|\d)|迟(?:点|一点|些|一会儿?)|"
     r"会晚|要晚|得晚|可能晚|稍晚|稍后|晚些|迟到|堵车|路上堵|等(?:我|等)|(?:一会儿?|等会儿?|待会儿?|过会儿?)(?:就)?(?:到|来|去|过去|过来)",
     LATE, 0.9, "late"),
    # yes
    (r"^(?:1|一|到|有|在|我在|是|我到|报到|到到)$|(?:已经|已)到(?:了|达|位|现场|地方|集合点|那|这)|"
     r"^到(?:了|现场了|位了|达)$|马上|立刻|立即|即刻|这就|现在就|随时|准时|按时|一定|保证|肯定|"
     r"出发|动身|上路|在路上|路上了|赶来|赶过去|赶去|在赶|往那边|算我一个|带上我|随叫随到|我去|我来|俺去|俺来|"
     r"能(?:去|来|到|参加)|可以(?:去|来|到|参加)|会(?:去|来|到)|^(?:去|来|参加|报名)(?:了|的|吧)?$", YES, 0.95, "coming"),
    # acknowledgements: 收到 is "roger" (see module docs: it counts as 到 in a call-up, confirmed in the reply)
    (r"^(?:收到|明白|知道了|好的|好|行|中|要得|可以|没问题|遵命|是的|对|ok|okay|得嘞|好嘞|妥)$", YES, 0.8, "acknowledged"),
    (r"^(?:嗯|嗯嗯|恩|哦|噢)$", YES, 0.55, "only an interjection"),
    (r"^(?:抱歉|对不起|不好意思|sorry|实在抱歉|实在不好意思)$", NO, 0.55, "only an apology"),
]]
_SUBJECT = re.compile(r"^(?:我们|我|俺们|俺|咱们|咱|额|偶|本人|这边|我这边|俺这边)(?=.)")


def _callup_clause(c: str) -> tuple[str, float, str] | None:
    c = _SUBJECT.sub("", _bare(c))
    c = _bare(c)
    for rx, answer, strength, why in _CALLUP_RULES:
        if rx.search(c):
            if answer == YES and strength > 0.9 and any(ch in c for ch in _NEG) and not re.fullmatch(r"不见不散", c):
                continue  # 还没出发 is not 出发
            return answer, strength, why
    return None


def parse_callup_answer(text: str) -> CallupReading | None:
    """Read a reply to a call-up notice ("请回复：1 到 / 2 晚到 / 3 不能到"), or None when it is not one.

    到: 1, 到, 马上到, 这就出发, 在路上, 能去, 收到 …; 晚到: 2, 晚到, 晚点到, 晚半个钟头 (eta 30), 二十分钟后到 (20),
    一个小时左右 (60), 九点到 (at_clock); 不能到: 3, 不能到, 去不了, 来不了, 有事, 在外地, 俺去不了，腰扭了 ….

    **收到**: in a call-up, 收到 is the team's "roger" — an order received and carried out — so it reads as
    到, with confidence 0.8 (recorded; the reply says what was recorded and how to change it). With any
    other answer in the same message the other answer wins (收到，去不了 = 不能到; 收到，晚点到 = 晚到).
    A question back (几点集合？) is no answer; clauses that say opposite things (能去，去不了) are unsure.
    """
    raw = text or ""
    t = _clean(raw)
    if not t:
        return None
    clauses = _clauses(raw)
    readings = [r for r in (_callup_clause(c) for c in clauses) if r is not None]
    eta = parse_minutes(t) if not re.fullmatch(r"[123一二三]", _bare(t)) else None
    clock = parse_clock(t) if eta is None else None
    if eta is not None and not any(a == NO for a, s, _ in readings if s >= 0.9):
        readings.append((LATE, 0.9, "a time given"))
    if clock is not None and not any(a == NO for a, s, _ in readings if s >= 0.9):
        readings.append((LATE, 0.85, "an arrival time given"))
    if not readings:
        return None
    kinds = {a for a, _, _ in readings}
    best = max(s for _, s, _ in readings)
    strong = {a for a, s, _ in readings if s >= 0.9}
    if {NO, YES} <= strong or {NO, LATE} <= strong:
        answer, conf, why = NO if NO in strong else LATE, CONFIRM, "says opposite things"
    elif NO in kinds and (NO in strong or not strong):
        answer = NO
        conf = max(s for a, s, _ in readings if a == NO)
        why = next(w for a, s, w in readings if a == NO and s == conf)
        if YES in kinds and conf < 0.9 and max(s for a, s, _ in readings if a == YES) >= 0.9:
            conf, why = CONFIRM, "says opposite things"
    elif LATE in kinds:
        answer, conf = LATE, max(s for a, s, _ in readings if a == LATE)
        why = next(w for a, s, w in readings if a == LATE and s == conf)
    else:
        answer, conf = YES, best
        why = next(w for a, s, w in readings if s == best)
    if _is_question(raw):
        conf, why = min(conf, 0.45), "a question back"
    if len(t) > 40:  # a long message is rarely just an answer (a story, a question about something else)
        conf *= 0.8
    return CallupReading(answer, round(conf, 2), eta if answer == LATE else None,
                         clock if answer == LATE and eta is None else None, why)


# =====================================================================================================
# End dates (请假 …)
_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6, "末": 6, "七": 6,
             "1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "6": 5, "7": 6}
def _qingming(year: int) -> date:
    try:
        from flows.memorial.calendar import qingming

        return qingming(year)
    except (ImportError, ValueError):  # pragma: no cover - the memorial ships with the bot
        return date(year, 4, 5 if year % 4 in (2, 3) else 4)


def _lunar(year: int, month: int, day: int) -> date | None:
    """A lunar-calendar day of ``year`` as a solar date (lunardate covers 1900-2099)."""
    from lunardate import LunarDate

    try:
        return LunarDate(year, month, day).to_solar_date()
    except ValueError:
        return None


def _festival(name: str, year: int) -> tuple[date, date] | None:
    """(the day, the last day of its public holiday) of a festival in ``year``."""
    if name in ("元旦",):
        return date(year, 1, 1), date(year, 1, 1)
    if name in ("五一", "劳动节", "五一节"):
        return date(year, 5, 1), date(year, 5, 5)
    if name in ("国庆", "国庆节", "十一", "十一长假"):
        return date(year, 10, 1), date(year, 10, 7)
    if name in ("清明", "清明节"):
        q = _qingming(year)
        return q, q
    if name in ("八一", "建军节"):
        return date(year, 8, 1), date(year, 8, 1)
    lunar = {"春节": (1, 1, 6), "过年": (1, 1, 6), "大年初一": (1, 1, 6), "元宵": (1, 15, 0), "元宵节": (1, 15, 0),
             "端午": (5, 5, 2), "端午节": (5, 5, 2), "中秋": (8, 15, 2), "中秋节": (8, 15, 2)}.get(name)
    if lunar is not None:
        d = _lunar(year, lunar[0], lunar[1])
        return None if d is None else (d, d + timedelta(days=lunar[2]))
    return None


_FESTIVALS = ("元旦|五一节|五一|劳动节|国庆节|国庆|十一长假|十一|清明节|清明|春节|过年|大年初一|元宵节|元宵|端午节|端午|"
              "中秋节|中秋|八一|建军节")
_AFTER = r"(?:以后|之后|过后|后|完)"


def _add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    y, m = d.year + y, m + 1
    return date(y, m, min(d.day, calendar.monthrange(y, m)[1]))


def _month_end(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def _num(s: str) -> int | None:
    n = parse_number(s)
    return None if n is None else round(n.value)


FOR, THROUGH, AFTER, BEFORE = "for", "through", "after", "before"


@dataclass(frozen=True)
class DatePhrase:
    """What a date phrase names, before the end-date rule is applied.

    ``day`` is the day the words name: 5月20日 for 到5月20日, 5月20日以后 and 5月20日之前; for a duration of N
    days (三天) the day N days after today (the first day back). ``relation`` says how the leave relates to
    it: ``for`` (a duration), ``through`` (到X, or X alone), ``after`` (X以后 · 过完X) or ``before`` (X之前).
    ``days`` is the number of days said (durations only); ``holiday_end`` the last day of a festival's
    public holiday (五一 → 5月5日)."""

    day: date
    relation: str
    days: int | None = None
    holiday_end: date | None = None

    @property
    def last_day(self) -> date:
        """THE end-date rule, the only place it is written: the last day away, inclusive.

        A duration counts today as day 1 (三天 from 12月5日 → 12月7日); 到X and X are X; X以后 is X, or the
        last day of X's holiday for a festival (五一以后 → 5月5日); X之前 is the day before X."""
        if self.relation in (FOR, BEFORE):
            return self.day - timedelta(days=1)
        if self.relation == AFTER and self.holiday_end is not None:
            return self.holiday_end
        return self.day


def parse_date_phrase(text: str, today: date) -> DatePhrase | None:
    """Read 三天 / 下周三 / 五一以后 / 到5月20日 … against ``today`` (the user's local date); None when
    unreadable. See :func:`parse_end_date` for the words understood."""
    t = re.sub(r"(?<=\d)[.\-/](?=\d)", "#", _clean(text))  # 5.20, 2026-05-20: keep the separators
    t = _PUNCT.sub("", t).replace("#", "-")
    t = re.sub(r"^(?:我要|我想|俺要|俺想|想|要|先|大概|可能|差不多|估计|准备)*", "", t)
    t = re.sub(r"^(?:请假|请|休假|休息|歇|休|不在|出门|外出)?(?:到|至|直到|一直到|等到)?", "", t)
    t = re.sub(r"(?:的)?假$", "", t)
    t = re.sub(r"(?:左右|吧|啊|呀|为止|那天|再回来|回来|就回来|才回来|回|再说)+$", "", t)
    # 后天下午 · 周五上午十点: the day is what counts for a leave
    t = re.sub(rf"(?<=.)(?:凌晨|早上|上午|中午|下午|傍晚|晚上|夜里|白天)(?:{NUMBER_RE}(?:点|时)(?:半|\d+分?)?)?$", "", t)
    if not t:
        return None
    m = re.fullmatch(r"(.+?)(?:之前|以前|前)", t)
    if m and not re.fullmatch(r".*(?:天|周|星期|礼拜|月|年)", m.group(1)):
        p = _end_date_core(m.group(1), today)
        return None if p is None else DatePhrase(p.day, BEFORE)
    return _end_date_core(t, today)


def parse_end_date(text: str, today: date) -> date | None:
    """The last day (inclusive) a text like 三天 / 下周三 / 到5月20日 names, counted from ``today`` (the user's
    local date); None when unreadable. The caller checks the range (not in the past, not too far).

    The one rule (:attr:`DatePhrase.last_day`): the answer is **the last day included**.

    * a duration counts today as day 1: 三天 → today + 2, 一周 → today + 6, 半个月 → today + 14, 一个月 →
      the day before the same date next month; 三天后 and 过两天 are read the same way (三天, 两天);
    * a date is that day: 5月20日, 5.20, 5-20, 2026-05-20, 五月二十号, 十号 (this month's 10th, or next
      month's when it has passed), 下个月10号; a month-day already past means next year;
    * weekdays: 周五 is the next Friday from today on (today counts); 下周三 is the Wednesday of next week
      (weeks start on Monday); 这周三 this week's (which may have passed); 周末 is Sunday;
    * 今天, 明天, 后天, 大后天; 月底 / 下月底 (the month's last day), 月中 (15th), 下月初 (the 1st), 年底;
    * festivals: 到五一 is 5月1日; 五一以后 / 国庆后 / 过完年 mean "back after the holiday", so the holiday's last
      day (五一 5月5日, 国庆 10月7日, 春节 正月初七, 端午 and 中秋 two days after); 元旦, 清明, 元宵 and 八一 are
      single days; lunar festivals through the lunardate package;
    * X之前 / X以前 is the day before X.
    """
    p = parse_date_phrase(text, today)
    return None if p is None else p.last_day


def _end_date_core(t: str, today: date) -> DatePhrase | None:
    rel = {"今天": 0, "今儿": 0, "今日": 0, "明天": 1, "明儿": 1, "明日": 1, "明个": 1, "明儿个": 1, "后天": 2,
           "后儿": 2, "后儿个": 2, "大后天": 3}
    if t in rel:
        return DatePhrase(today + timedelta(days=rel[t]), THROUGH)
    # durations: 三天, 3日, 两周, 一个星期, 半个月, 两个月, 一年, 三天后, 过两天, 请三天
    m = re.fullmatch(rf"(?:过|再过|请|休)?(?P<n>{NUMBER_RE}|半)?(?P<ge>个)?(?P<half>半)?"
                     r"(?P<u>天|日|晚|宿|周|星期|礼拜|月|年)(?:后|以后|之后)?", t)
    if m and (m.group("n") or m.group("half")):
        n_raw = m.group("n")
        unit = m.group("u")
        if n_raw == "半":
            n = 0.5
        else:
            parsed = parse_number(n_raw) if n_raw else None
            if n_raw and parsed is None:
                return None
            n = (parsed.value if parsed else 0) + (0.5 if m.group("half") else 0)
        if unit in ("天", "日", "晚", "宿"):
            days = round(n)
            return DatePhrase(today + timedelta(days=days), FOR, days) if days >= 1 else None
        if unit in ("周", "星期", "礼拜") and (m.group("ge") or unit != "周" or True):
            if unit in ("星期", "礼拜", "周") and n_raw is None and not m.group("half"):
                return None
            days = round(n * 7)
            return DatePhrase(today + timedelta(days=days), FOR, days) if days >= 1 else None
        if unit == "月":
            if n == 0.5:
                return DatePhrase(today + timedelta(days=15), FOR, 15)
            whole, half = int(n), n - int(n)
            end = _add_months(today, whole) + timedelta(days=15 if half else 0)
            return DatePhrase(end, FOR, (end - today).days) if whole or half else None
        if unit == "年":
            end = _add_months(today, 6 if n == 0.5 else 12 * round(n))
            return DatePhrase(end, FOR, (end - today).days) if n >= 0.5 else None
    m = re.fullmatch(r"个把(?:月)", t)
    if m:
        end = _add_months(today, 1)
        return DatePhrase(end, FOR, (end - today).days)
    # weekdays
    m = re.fullmatch(r"(?P<rel>下下|下个|下|这个|这|本|今)?(?:周|星期|礼拜|礼拜天|礼拜日)(?P<d>[一二三四五六日天末1-7])?", t)
    if m and (m.group("d") or t.endswith(("礼拜天", "礼拜日"))):
        wd = _WEEKDAYS[m.group("d")] if m.group("d") else 6
        rel = m.group("rel")
        monday = today - timedelta(days=today.weekday())
        if rel in ("下", "下个"):
            return DatePhrase(monday + timedelta(days=7 + wd), THROUGH)
        if rel == "下下":
            return DatePhrase(monday + timedelta(days=14 + wd), THROUGH)
        if rel in ("这", "这个", "本", "今"):
            return DatePhrase(monday + timedelta(days=wd), THROUGH)
        return DatePhrase(today + timedelta(days=(wd - today.weekday()) % 7), THROUGH)
    # month parts
    parts = {"月底": ("this", "end"), "月末": ("this", "end"), "这个月底": ("this", "end"),
             "本月底": ("this", "end"), "下月底": ("next", "end"), "下个月底": ("next", "end"),
             "下月末": ("next", "end"), "月中": ("this", "mid"), "下月中": ("next", "mid"),
             "下个月中": ("next", "mid"), "下月初": ("next", "start"), "下个月初": ("next", "start"),
             "月初": ("next", "start"), "年底": ("year", "end"), "年末": ("year", "end")}
    if t in parts:
        which, part = parts[t]
        if which == "year":
            return DatePhrase(date(today.year, 12, 31), THROUGH)
        base = today if which == "this" else _add_months(today.replace(day=1), 1)
        if part == "end":
            return DatePhrase(_month_end(base), THROUGH)
        if part == "mid":
            d = base.replace(day=15)
            return DatePhrase(d if d >= today else _add_months(d, 1), THROUGH)
        return DatePhrase(base.replace(day=1), THROUGH)
    # festivals
    if re.fullmatch(r"(?:等)?(?:过完年|过了年|年后|过年后|过年以后|年以后)", t):
        t = "春节后"
    m = re.fullmatch(rf"(?:过了|过完|等过了|等过完)?(?P<f>{_FESTIVALS})(?:节|假期|长假|假)?(?P<after>{_AFTER})?", t)
    if m:
        after = bool(m.group("after")) or t.startswith(("过了", "过完", "等过"))
        for year in (today.year, today.year + 1):
            span = _festival(m.group("f"), year)
            if span is None:
                continue
            if (span[1] if after else span[0]) >= today:
                return DatePhrase(span[0], AFTER if after else THROUGH, holiday_end=span[1])
        return None
    # dates: 2026-05-20, 5月20日, 5.20, 5/20, 五月二十号, 20号, 下个月10号
    m = re.fullmatch(rf"(?:(?P<y>\d{{4}})[-/.年])?(?P<mo>\d{{1,2}}|[{_CN_CHARS}]{{1,3}})(?:[-/.]|月份?)"
                     rf"(?P<d>\d{{1,2}}|[{_CN_CHARS}]{{1,3}})(?:日|号)?(?P<after>{_AFTER})?", t)
    if m:
        mo, dd = _num(m.group("mo")), _num(m.group("d"))
        if mo is None or dd is None:
            return None
        try:
            d = date(int(m.group("y") or today.year), mo, dd)
        except ValueError:
            return None
        if m.group("y") is None and d < today:
            try:
                d = d.replace(year=d.year + 1)
            except ValueError:
                return None
        return DatePhrase(d, AFTER if m.group("after") else THROUGH)
    m = re.fullmatch(rf"(?P<next>下个?月|下月)?(?P<d>\d{{1,2}}|[{_CN_CHARS}]{{1,3}})(?:日|号)(?P<after>{_AFTER})?", t)
    if m:
        dd = _num(m.group("d"))
        if dd is None or not 1 <= dd <= 31:
            return None
        base = _add_months(today.replace(day=1), 1) if m.group("next") else today.replace(day=1)
        for _ in range(3):
            if dd <= calendar.monthrange(base.year, base.month)[1]:
                d = base.replace(day=dd)
                if d >= today or m.group("next"):
                    return DatePhrase(d, AFTER if m.group("after") else THROUGH)
            base = _add_months(base, 1)
        return None
    return None


def fmt_day(d: date) -> str:
    """A date as users read it: 5月20日 (no leading zeros; the year only when it is not this one is the
    caller's choice)."""
    return f"{d.month}月{d.day}日"


# =====================================================================================================
# Townships
_TOWN_SUFFIX = re.compile(r"(?:街道办事处|街道办|街道|办事处|民族乡|苗族乡|彝族乡|土家族乡|回族乡|镇|乡|社区|片区|管委会|开发区|园区)$")
_TOWN_FILLER_HEAD = re.compile(r"^(?:我|俺|咱|额|偶|我们|俺们|咱们|我家|俺家|家|老家)?(?:是|在|住在|住|家在|属于|归|就在|现在在|现住)?"
                               r"(?:本县|县里|咱县|我们县)?")
_TOWN_FILLER_TAIL = re.compile(r"(?:的人|人|的|那边|这边|那块|这块|那里|这里|那儿|这儿|一带|附近|那片|这片|上|里)+$")
# Ways of saying "the county town"; its township is usually 城关镇 (asked back, never stored unasked).
_COUNTY_SEAT = frozenset({"县城", "城里", "城区", "县城里", "老城", "县里", "城关"})
_FUZZY_PY = [("zh", "z"), ("ch", "c"), ("sh", "s"), ("ang", "an"), ("eng", "en"), ("ing", "in"), ("l", "n"),
             ("f", "h"), ("r", "y")]


@dataclass(frozen=True)
class TownshipMatch:
    """A township read from text: the configured ``name``, how sure (0..1) and why, and close
    ``alternatives`` (other configured names) when the reading is not unique."""

    name: str
    confidence: float
    how: str
    alternatives: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sure(self) -> bool:
        """Store without asking."""
        return self.confidence >= 0.9 and not self.alternatives


def township_core(name: str) -> str:
    """城关镇 → 城关, 竹阳街道 → 竹阳, 河东乡 → 河东 (the part people say)."""
    n = _clean(name)
    core = _TOWN_SUFFIX.sub("", n)
    return core if len(core) >= 2 else n


@lru_cache(maxsize=4096)
def _pinyin(text: str) -> tuple[str, ...]:
    from pypinyin import lazy_pinyin

    return tuple(lazy_pinyin(text))


def _fuzzy_py(syllables: tuple[str, ...]) -> str:
    out = []
    for s in syllables:
        for a, b in _FUZZY_PY:
            if s.startswith(a) and a in ("zh", "ch", "sh", "l", "f", "r"):
                s = b + s[len(a):]
            elif s.endswith(a) and a in ("ang", "eng", "ing"):
                s = s[: -len(a)] + b
        out.append(s)
    return " ".join(out)


def _strip_town_words(text: str) -> str:
    t = _PUNCT.sub("", _clean(text))
    t = _bare(t)
    prev = None
    while prev != t:
        prev = t
        t = _TOWN_FILLER_HEAD.sub("", t, count=1) or t
        t = _TOWN_FILLER_TAIL.sub("", t) or t
    return t


def match_township(text: str, names: list[str] | tuple[str, ...]) -> TownshipMatch | None:
    """Match what a user typed to the configured townships (``bot.townships``); None when nothing is close.

    俺是城关的 → 城关镇 (1.0 when unique); 竹阳 → 竹阳街道; 城關鎮 → 城关镇 (traditional); 成关 / 城官 (same pinyin)
    → 城关镇 at 0.8 — confirm; 东留 → 东柳街道 through pinyin with the initials and finals older users and
    southern accents mix up (zh/z, ch/c, sh/s, l/n, f/h, -ng/-n) at 0.7 — confirm; a name typed inside a
    longer text (我家在城关镇东街) → 0.9. When two names fit equally (城关镇 and 城关街道 for 城关) the match
    lists the others in ``alternatives`` so the flow can offer them as numbered choices.
    """
    if not names:
        return None
    t = _strip_town_words(text)
    if not t or len(t) > 30:
        return None
    canon = {n: _clean(n) for n in names}
    cores = {n: township_core(n) for n in names}
    scored: list[tuple[float, str, str]] = []
    tcore = township_core(t)
    latin = re.sub(r"[^a-z]", "", t) if t.isascii() else ""
    for n in names:
        c, core = canon[n], cores[n]
        if t == c:
            scored.append((1.0, n, "exact"))
        elif tcore == core or t == core:
            scored.append((0.97, n, "name without 镇/乡/街道"))
        elif len(c) > len(core) and c in t:
            scored.append((0.95, n, "full name in the text"))  # 高桥乡周家村: 高桥乡, not the 周家 in 周家村
        elif len(core) >= 2 and core in t:
            scored.append((0.9, n, "named in the text"))
        elif latin and latin in ("".join(_pinyin(core)), "".join(_pinyin(c))):
            scored.append((0.92, n, "typed in pinyin"))
        elif t in _COUNTY_SEAT and core.startswith("城关"):
            scored.append((0.6, n, "the county seat"))
        elif len(t) >= 2 and t in core:
            scored.append((0.6 if len(t) < len(core) else 0.9, n, "part of the name"))
        else:
            py_t, py_c = _pinyin(tcore), _pinyin(core)
            if py_t == py_c:
                scored.append((0.8, n, "same sound"))
            elif len(py_t) == len(py_c) and _fuzzy_py(py_t) == _fuzzy_py(py_c):
                scored.append((0.7, n, "similar sound"))
            else:
                from rapidfuzz import fuzz

                ratio = fuzz.ratio(" ".join(py_t), " ".join(py_c))
                if ratio >= 80 and len(core) >= 2:
                    scored.append((0.6, n, "close in sound"))
    if not scored:
        return None
    scored.sort(key=lambda x: -x[0])
    top = scored[0][0]
    tied = [] if top == 1.0 else [n for s, n, _ in scored if top - s < 0.04 and n != scored[0][1]]
    return TownshipMatch(scored[0][1], top, scored[0][2], tuple(tied[:2]))
