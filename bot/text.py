"""Chinese text normalisation shared by intent matching, policy Q&A, the memorial word filter and
phone numbers.

Users type on phones: full-width letters and digits, traditional characters (relatives in Taiwan and
Hong Kong, or an input method left in 繁體), stray punctuation and emoji. Everything that compares
text compares the output of :func:`normalize`, so that 「優待證，怎麼辦？」 and 优待证怎么办 match.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

import opencc

_T2S = opencc.OpenCC("t2s")

# Punctuation, symbols and whitespace: every Unicode category P*, S*, Z* plus control characters.
_DROP_CATEGORIES = ("P", "S", "Z", "C")

# Chinese numerals users write for menu choices ("选二", "第三个").
_CN_DIGITS = {"零": "0", "〇": "0", "一": "1", "二": "2", "两": "2", "三": "3", "四": "4", "五": "5",
              "六": "6", "七": "7", "八": "8", "九": "9", "十": "10"}

# Courtesy and filler phrases that carry no meaning for matching. Longest first so that
# 我想问一下 is removed whole rather than leaving 一下 behind.
FILLERS = sorted(
    [
        "请问一下", "请问", "问一下", "我想问一下", "我想问问", "我想问", "想问一下", "想问", "我想咨询一下",
        "我想咨询", "咨询一下", "咨询", "你好", "您好", "麻烦问一下", "麻烦", "打扰一下", "同志", "领导",
        "谢谢", "谢谢了", "请教一下", "请教", "我想了解一下", "想了解一下", "了解一下", "帮我查一下",
        "帮忙问一下", "俺想问", "俺", "咱", "那个", "就是", "一下子", "老师",
    ],
    key=len,
    reverse=True,
)
_FILLER_RE = re.compile("|".join(map(re.escape, FILLERS)))


def to_simplified(text: str) -> str:
    """Convert traditional characters to simplified (OpenCC t2s, phrase-aware)."""
    return _T2S.convert(text)


def _keep(ch: str) -> bool:
    return not unicodedata.category(ch).startswith(_DROP_CATEGORIES)


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Canonical form for comparisons.

    NFKC (full-width → half-width, compatibility forms), lower case, traditional → simplified,
    punctuation, symbols, emoji and all whitespace removed. Letters, digits and CJK stay.
    Cached: the same short messages ("1", "帮助", "献花") arrive again and again.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = to_simplified(text)
    return "".join(ch for ch in text if _keep(ch))


def strip_fillers(normalized: str) -> str:
    """Remove courtesy/filler phrases (请问, 我想问一下, 俺 …) from an already normalised text.

    Returns the input unchanged when removing them would leave nothing (a user who only says 你好).
    """
    stripped = _FILLER_RE.sub("", normalized)
    return stripped or normalized


def parse_choice(text: str, upper: int) -> int | None:
    """Read a numbered choice (1-based) from a reply such as "2", "２", "二", "第2个", "选3".

    Returns None when the text is not a choice in ``1..upper``.
    """
    t = normalize(text)
    for prefix in ("第", "选", "选择"):
        if t.startswith(prefix):
            t = t[len(prefix):]
    for suffix in ("个", "项", "条", "号"):
        if t.endswith(suffix):
            t = t[: -len(suffix)]
    if t in _CN_DIGITS:
        t = _CN_DIGITS[t]
    if not t.isdigit() or len(t) > 3:
        return None
    n = int(t)
    return n if 1 <= n <= upper else None


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to at most ``limit`` characters, ending with … when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


#: A mainland mobile number after :func:`clean_phone`: ASCII digits only.
PHONE_RE = re.compile(r"^1[3-9][0-9]{9}$")


def clean_phone(text: str) -> str:
    """The digits of a phone number as typed: full-width digits (Chinese input methods) made ASCII;
    spaces, dashes and a +86 prefix removed. Validate the result with :data:`PHONE_RE`."""
    digits = re.sub(r"[^0-9]", "", unicodedata.normalize("NFKC", text))
    if digits.startswith("86") and len(digits) == 13:
        digits = digits[2:]
    return digits


def ascii_uint(v: object, max_digits: int) -> int | None:
    """A whole number written in 1..``max_digits`` ASCII digits and nothing else; None for anything else:
    spaces, signs, other scripts' digits, superscripts (``str.isdigit`` is True for '²', ``int`` fails),
    and numbers too long for the column or the comparison they are meant for."""
    text = "" if v is None else str(v)
    if not (text.isascii() and text.isdigit() and len(text) <= max_digits):
        return None
    return int(text)


# --- markup in stored and user text ----------------------------------------------------------------
#
# WeChat shows an ``<a href="…">label</a>`` inside a text message as a live link with only the label
# visible, so a CSV field or a user's text that carries one becomes a phishing link sent by the official
# account. Two defences: imports keep the text and drop the tags (:func:`strip_markup`), and every reply
# that puts stored or user text into a chat message passes it through :func:`plain_text`, whatever the
# database holds. Links the bot builds itself (its own pages) are added around that text, never from it.

#: HTML element names whose tags are dropped. Anything else in angle brackets (``<Java工程师>``,
#: ``年龄<45岁``) is text, not markup: it stays, and :func:`plain_text` makes its brackets harmless.
_HTML_TAGS = frozenset("""
a abbr address area article aside audio b base bdi bdo big blink blockquote body br button canvas caption
center cite code col colgroup data dd del details dfn dialog dir div dl dt em embed fieldset figcaption figure
font footer form frame frameset h1 h2 h3 h4 h5 h6 head header hr html i iframe img input ins kbd label legend
li link main map mark marquee menu meta meter nav noscript object ol optgroup option output p param picture
pre progress q rp rt ruby s samp script section select small source span strike strong style sub summary sup
svg table tbody td template textarea tfoot th thead time title tr track tt u ul var video wbr xml math
""".split())
# Possessive quantifiers: no backtracking on a long run of spaces or an unclosed tag.
_ATTRS = r"""(?:\s(?:[^<>"']++|"[^"]*+"|'[^']*+')*+)?+"""
_TAG_RE = re.compile(r"<\s*+/?\s*+([A-Za-z][A-Za-z0-9]*+)" + _ATTRS + r"/?>")
_BLOCK_OPEN_RE = re.compile(r"<\s*+(script|style|iframe|object|noscript|template)\b[^>]*+>", re.IGNORECASE)
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|$)|<![A-Za-z][^<>]*+>|<\?[^<>]*+>", re.DOTALL)
_LINE_BREAK_TAGS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})
#: ``&name;`` / ``&#123;`` / ``&#x1F;`` (and the forms without ';' browsers accept).
_ENTITY_START_RE = re.compile(r"&(?=#?[A-Za-z0-9]+)")


def _drop_blocks(text: str) -> str:
    """``<script>…</script>`` and the like go whole (their content is code, not text); linear time."""
    low = text.lower()
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()  # names with no closing tag further on (keeps many open tags linear)
    while True:
        m = _BLOCK_OPEN_RE.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:m.start()])
        name = m.group(1).lower()
        close = -1 if name in unclosed else low.find(f"</{name}", m.end())
        if close < 0:  # never closed: drop the opening tag only
            unclosed.add(name)
            pos = m.end()
            continue
        end = low.find(">", close)
        pos = len(text) if end < 0 else end + 1


def _drop_tags(text: str) -> str:
    text = _drop_blocks(text)
    text = _COMMENT_RE.sub("", text)

    def tag(m: re.Match[str]) -> str:
        name = m.group(1).lower()
        if name not in _HTML_TAGS:
            return m.group(0)
        return "\n" if name in _LINE_BREAK_TAGS and not m.group(0).startswith("</") else ""

    return _TAG_RE.sub(tag, text)


def strip_markup(text: str) -> str:
    """The text of ``text`` without HTML: tags of HTML elements dropped (their content kept; ``<br>`` and
    ``<p>`` become line breaks; ``<script>``/``<style>`` go whole), comments dropped, entities decoded
    (``&amp;`` → ``&``). Entity-encoded tags (``&lt;a href…&gt;``) are decoded and dropped too. Text
    that only looks like a bracket (``年龄<45岁``, ``<Java工程师>``) stays as it is.

    For imported fields (CSV): what staff see in the chat and on the page is the text, never markup."""
    if not text or ("<" not in text and "&" not in text):
        return text
    for _ in range(4):  # decoding may reveal new tags (&lt;b&gt;); a few rounds reach a fixed point
        new = _drop_tags(html.unescape(_drop_tags(text)))
        if new == text:
            break
        text = new
    # Whitespace left where tags were: no trailing spaces, no runs of blank lines.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def plain_text(text: str | None) -> str:
    """``text`` made safe to put into a chat reply or push: no live markup, whatever it holds.

    Use it wherever text from the database or from users goes into a reply (job and martyr cards, a
    寄语 shown back, a staff reply, a broadcast …). Tags are dropped as :func:`strip_markup` does; any
    ``<`` or ``>`` left becomes its full-width twin (＜ ＞) and an ``&`` that could start an entity
    becomes ＆, so WeChat can never build a link (``<a href>``) out of it. Text without ``<``, ``>`` or
    ``&`` is returned unchanged (the common case costs one scan)."""
    if not text:
        return ""
    if "<" not in text and ">" not in text and "&" not in text:
        return text
    t = strip_markup(text).replace("<", "＜").replace(">", "＞")
    return _ENTITY_START_RE.sub("＆", t)
