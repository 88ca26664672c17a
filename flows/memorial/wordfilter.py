"""Sensitive-word filter for memorial messages (寄语): Aho-Corasick over text normalised against evasion.

People who want an insult or an advert to get through write it so a naive substring test misses it:
``傻 逼``, ``傻*逼``, ``加 ＶＸ``, ``代開發票``, ``捌玖陆肆``. Both the word list and the message go through
:func:`fold` before matching, so all of these meet the same canonical form:

* :func:`bot.text.normalize` — NFKC (full-width → half-width, ① → 1), lower case, traditional →
  simplified (OpenCC), and every space, punctuation mark, symbol, emoji and invisible character
  (zero-width space, …) removed: characters separated by anything come together again;
* digit variants — 〇零一二三四五六七八九, 壹贰叁肆伍陆柒捌玖 and 两/幺 become 0-9.

The list is one word or phrase per line in a UTF-8 file (``memorial.wordlist``), ``#`` starts a comment.
Staff edit it while the bot runs: :meth:`WordFilter.current` reloads it when the file changes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import ahocorasick

from flows.api import YamlFileError, normalize

log = logging.getLogger("vetbot.memorial.words")

_DIGITS = str.maketrans({
    "〇": "0", "零": "0", "一": "1", "壹": "1", "幺": "1", "二": "2", "贰": "2", "两": "2", "三": "3", "叁": "3",
    "四": "4", "肆": "4", "五": "5", "伍": "5", "六": "6", "陆": "6", "七": "7", "柒": "7", "八": "8", "捌": "8",
    "九": "9", "玖": "9",
})


def fold(text: str) -> str:
    """The canonical form both words and messages are matched in (see the module docstring)."""
    return normalize(text).translate(_DIGITS)


@dataclass
class WordFilter:
    """An Aho-Corasick automaton over the folded word list; ``hits(text)`` lists the words found."""

    words: dict[str, str] = field(default_factory=dict)  # folded -> as written in the list
    path: Path | None = None
    mtime: float = 0.0
    _auto: ahocorasick.Automaton | None = None
    _checked: float = 0.0

    @classmethod
    def from_file(cls, path: Path) -> WordFilter:
        """Load a word list; YamlFileError (file, line, hint) for an entry that folds to nothing."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise YamlFileError(path, None, "word list not found",
                                "set memorial.wordlist in the config to an existing file") from None
        except UnicodeDecodeError:
            raise YamlFileError(path, None, "word list is not UTF-8 text", "save the file as UTF-8") from None
        wf = cls(path=path, mtime=os.stat(path).st_mtime)
        for no, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            f = fold(line)
            if not f:
                raise YamlFileError(path, no, f"'{line}' has no letters, digits or characters left to match",
                                    "write the word itself; spaces and symbols are ignored when matching")
            wf.words.setdefault(f, line)
        wf._build()
        return wf

    def _build(self) -> None:
        auto = ahocorasick.Automaton()
        for f, original in self.words.items():
            auto.add_word(f, original)
        if self.words:
            auto.make_automaton()
        self._auto = auto

    def hits(self, text: str) -> list[str]:
        """The list entries found in ``text`` (as written in the list, in order of appearance)."""
        if not self.words or self._auto is None:
            return []
        seen: list[str] = []
        for _, original in self._auto.iter(fold(text)):
            if original not in seen:
                seen.append(original)
        return seen

    def current(self, every_s: float = 5.0) -> WordFilter:
        """This filter, or a freshly loaded one when the list file changed (checked every ``every_s``).

        A broken edit keeps the previous list working and logs the problem (staff see it in the log
        and in ``vetbot memorial words check``)."""
        if self.path is None:
            return self
        now = time.monotonic()
        if now - self._checked < every_s:
            return self
        self._checked = now
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError:
            return self
        if mtime == self.mtime:
            return self
        try:
            fresh = WordFilter.from_file(self.path)
        except YamlFileError as e:
            log.error("word list not reloaded: %s", e)
            self.mtime = mtime
            return self
        fresh._checked = now
        log.info("word list reloaded: %d entries", len(fresh.words))
        return fresh
