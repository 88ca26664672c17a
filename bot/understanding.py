"""One understanding layer: which intent a message means, how sure we are, and what to do about it.

Order (cheap first; exact rules never pay for the sentence encoder):

1. exact rules of the catalogue (:meth:`bot.intents.IntentMatcher.exact`): global commands (the whole
   text is one: 帮助, 取消 …) and regexes (找工作 保安, 绑定 3927 …) — confidence 1;
2. meaning: every intent's examples and keywords, and the policy knowledge base's questions and
   alternates (one more class, "kb", that means "a policy question: let the Q&A answer"), are matched
   with the Q&A engine's own machinery (normalisation, synonyms, jieba words, character-bigram and
   pinyin BM25, rapidfuzz, the e5 sentence encoder). Per class the best unit counts; keyword hits and
   negatives are two more signals. A linear score ranks the classes;
3. one calibrated confidence (logistic over the top score, its margin and the top class's signals)
   decides: ``route`` (start the intent), ``suggest`` (a numbered list of 2–3 intents) or ``fallback``
   (the fallback flow, the policy Q&A).

Calibration is done on the catalogue itself when it loads, leave-one-out: every example (and every KB
question) is matched against all the *other* units, the ranking weights are fitted as a softmax over
classes, the confidence as a logistic regression of "the top class was right". Nothing is fitted to a
held-out set, and no constant here knows an intent id: another county's catalogue calibrates itself.

The query is encoded once: the encoder is the Q&A engine's own instance, given the very text the Q&A
gives it, so the Q&A's ask() finds the vector in the encoder's query cache.

The Q&A engine is reached through :class:`QAParts` only (its public TextProcessor, BM25Index, Encoder
and entries) — the one place to change when the engine changes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from rapidfuzz import fuzz, process

from bot.intents import Intent, IntentMatcher
from bot.text import normalize

log = logging.getLogger("vetbot.understanding")

#: Class id of "a policy question" (units: the knowledge base's questions and alternates).
KB = "kb"
SIGNALS = ("e5", "chars", "pinyin", "words", "fuzz", "same", "kw")
LEXICAL = tuple(s for s in SIGNALS if s != "e5")
#: Confidence at or above which the top intent is started.
ROUTE_AT = 0.5
#: Between this and ROUTE_AT the user gets a numbered "您是想…" list.
SUGGEST_AT = 0.2
#: A list is offered only when the top intent has at least this share of the probability.
SUGGEST_TOP_P = 0.2
#: The lexical signals alone decide (no encoder) when their confidence reaches this.
SKIP_ENCODER_AT = 0.97

Decision = Literal["route", "suggest", "fallback"]
#: Flows of the dispatcher's own commands (取消, 返回): by meaning only inside a flow (outside one they do
#: nothing, and a short text such as 开始 must not be read as 重新开始).
COMMAND_FLOWS = frozenset({"cancel", "back"})
#: The flow of small talk (intents/smalltalk.yaml): a clause of it is not the request; flows never let go for it.
SMALLTALK_FLOW = "smalltalk"
_PARTICLES = "的了吗呢啊吧呀嘛哈哦噢啦咧嘞呗哇喽"
_CLAUSE = re.compile(r"[，,。.！!？?；;~～\s]+")


# --------------------------------------------------------------------------- the Q&A adapter


@dataclass
class QAParts:
    """What the understanding layer borrows from the policy Q&A engine (public API only)."""

    text: Any                     # flows.policy_qa.engine.TextProcessor
    encoder: Any | None           # flows.policy_qa.engine.Encoder (shared: one query cache)
    kb_texts: list[str]           # questions and alternates of the knowledge base
    encoder_max_chars: int = 18   # what the Q&A gives the encoder (QAEngine.ENCODER_MAX_CHARS)

    kb_vecs: Any | None = None    # the engine's own embeddings of kb_texts (not computed twice)

    @classmethod
    def of_engine(cls, engine: Any) -> QAParts:
        texts = [t for e in engine.entries for t in e.texts]
        # The engine embeds exactly these texts, in this order, when it loads; reading its matrix saves
        # embedding them again (seconds). A private attribute, read here only: if the engine changes it,
        # the shape check fails and the texts are embedded anew.
        vecs = getattr(engine, "_kb_vecs", None)
        if vecs is None or getattr(vecs, "shape", (0,))[0] != len(texts):
            vecs = None
        return cls(engine.text, engine.encoder, texts, int(getattr(engine, "ENCODER_MAX_CHARS", 18)), vecs)

    def embed_units(self, texts: list[str], kb_from: int) -> np.ndarray:
        """Embeddings of the catalogue's units; ``texts[kb_from:]`` are :attr:`kb_texts`."""
        assert self.encoder is not None
        enc = [self.text.encoder_text(t, 10_000) or t for t in texts]
        if self.kb_vecs is None:
            return np.asarray(self.encoder.embed_kb(enc), dtype=np.float32)
        head = np.asarray(self.encoder.embed_kb(enc[:kb_from]), dtype=np.float32) if kb_from else None
        tail = np.asarray(self.kb_vecs, dtype=np.float32)
        return tail if head is None else np.vstack([head, tail])

    @classmethod
    def bare(cls) -> QAParts:
        """No knowledge base, no encoder (tests of the catalogue alone, a bot without Q&A)."""
        from flows.policy_qa.engine import TextProcessor

        return cls(TextProcessor(), None, [])

    def bm25(self, docs: Sequence[Sequence[str]]) -> Any:
        from flows.policy_qa.engine import BM25Index

        return BM25Index(docs)

    def query_text(self, text: str) -> str:
        """Exactly the text the Q&A engine encodes for ``text`` (so the vector is cached once)."""
        return self.text.encoder_text(text, self.encoder_max_chars) or self.text.clean(text)


# --------------------------------------------------------------------------- results


@dataclass
class Understood:
    """The decision for one message (what the dispatcher does, what ``vetbot intents match`` shows)."""

    decision: Decision
    intent: Intent | None
    confidence: float
    how: str  # global, regex, meaning, lexical, none
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (class id, probability), best first
    slots: dict[str, str] = field(default_factory=dict)
    suggestions: list[Intent] = field(default_factory=list)
    used_encoder: bool = False
    signals: dict[str, float] = field(default_factory=dict)  # the top class's signals

    @property
    def flow(self) -> str | None:
        return self.intent.flow if self.intent is not None else None

    def as_json(self, fallback_flow: str) -> dict[str, Any]:
        return {"intent": self.intent.id if self.intent else None,
                "flow": self.intent.flow if self.intent else (fallback_flow if self.decision == "fallback" else None),
                "decision": self.decision, "confidence": round(self.confidence, 4),
                "candidates": [{"id": c, "p": round(p, 4)} for c, p in self.candidates],
                "suggestions": [i.id for i in self.suggestions], "how": self.how, "slots": self.slots,
                "signals": {k: round(v, 4) for k, v in self.signals.items()}, "used_encoder": self.used_encoder}


@dataclass
class Params:
    weights: np.ndarray  # per signal
    calib: np.ndarray    # bias, top, margin, prob


# --------------------------------------------------------------------------- the layer


class Understanding:
    """Intent understanding over one catalogue (and one knowledge base), calibrated on itself."""

    def __init__(self, matcher: IntentMatcher, parts: QAParts) -> None:
        self.matcher = matcher
        self.parts = parts
        self.classes: list[str] = [i.id for i in matcher.intents] + [KB]
        self._cls_index = {c: k for k, c in enumerate(self.classes)}
        self.intents = list(matcher.intents)
        #: normalised example → the intents that list it (see :meth:`by_example`); own-words commands left out.
        self._example_index: dict[str, list[Intent]] = {}
        for i in self.intents:
            if i.flow in COMMAND_FLOWS:
                continue
            for e in i.examples:
                key = normalize(e)
                if key and i not in self._example_index.setdefault(key, []):
                    self._example_index[key].append(i)
        units: list[tuple[int, str, bool]] = []  # (class, raw text, is an example)
        for k, intent in enumerate(self.intents):
            for e in intent.examples:
                units.append((k, e, True))
            for kw in intent.keywords:
                units.append((k, kw, False))
        for t in parts.kb_texts:
            units.append((len(self.intents), t, True))
        units.sort(key=lambda u: u[0])  # stable: grouped by class for reduceat
        self.unit_class = np.array([u[0] for u in units], dtype=np.int64)
        self.unit_raw = [u[1] for u in units]
        self.unit_is_example = [u[2] for u in units]
        an = [self._analyse(t) for t in self.unit_raw]
        self.unit_clean = [a["clean"] for a in an]
        self._idx = {"chars": parts.bm25([a["chars"] for a in an]),
                     "pinyin": parts.bm25([a["pinyin"] for a in an]),
                     "words": parts.bm25([a["words"] for a in an])}
        # every class has at least one unit (an intent needs an example); the KB class may be empty
        present = sorted(set(self.unit_class.tolist()))
        self._present = np.array(present, dtype=np.int64)
        self._starts = np.searchsorted(self.unit_class, self._present)
        self._neg = [i.negative for i in self.intents]
        self._kw = [i.keywords for i in self.intents]
        self.unit_vecs: np.ndarray | None = None
        if parts.encoder is not None:
            kb_from = int((self.unit_class < len(self.intents)).sum())  # KB units come last, in KB order
            self.unit_vecs = parts.embed_units(self.unit_raw, kb_from)
        self._lock = threading.Lock()
        self.params, self.lexical_params, self.report = self._calibrate()

    # ------------------------------------------------------------------ signals

    def _signals(self, text: str, qvec: np.ndarray | None, exclude: str | None = None) -> np.ndarray:
        """Signals per class (rows: classes in ``self.classes``; columns: SIGNALS). ``exclude``: the
        cleaned text of a held-out unit (calibration): units with that text do not count."""
        a = self._analyse(text)
        clean = a["clean"]
        n_units = len(self.unit_raw)
        per_unit = np.zeros((n_units, 6), dtype=np.float64)
        per_unit[:, 1] = self._idx["chars"].coverage(a["chars"])
        per_unit[:, 2] = self._idx["pinyin"].coverage(a["pinyin"])
        per_unit[:, 3] = self._idx["words"].coverage(a["words"])
        if clean:
            per_unit[:, 4] = process.cdist([clean], self.unit_clean, scorer=fuzz.ratio)[0] / 100.0
            per_unit[:, 5] = np.fromiter((u == clean for u in self.unit_clean), dtype=np.float64, count=n_units)
        if qvec is not None and self.unit_vecs is not None:
            per_unit[:, 0] = np.einsum("ij,j->i", self.unit_vecs, qvec)
        if exclude is not None:
            mask = np.fromiter((u == exclude for u in self.unit_clean), dtype=bool, count=n_units)
            per_unit[mask] = -1.0
        out = np.zeros((len(self.classes), len(SIGNALS)), dtype=np.float64)
        red = np.maximum.reduceat(per_unit, self._starts, axis=0)
        out[self._present, :6] = red
        missing = np.setdiff1d(np.arange(len(self.classes)), self._present)
        out[missing, :6] = -1.0
        norm = normalize(text)
        for k in range(len(self.intents)):
            kws = self._kw[k]
            if kws and any(w in norm for w in kws if w != exclude):
                out[k, 6] = 1.0
        return np.maximum(out, -1.0)

    def _open(self, text: str, roles: set[str] | None) -> np.ndarray:
        """Which classes may win for this text: the user's roles allow the intent and none of its
        ``negative`` words is in the text (the catalogue's rule: 退订 is never 订阅)."""
        norm = normalize(text)
        ok = [(roles is None or i.allowed(roles)) and not any(n in norm for n in self._neg[k])
              for k, i in enumerate(self.intents)]
        return np.array([*ok, True])

    def _analyse(self, text: str) -> dict[str, Any]:
        """The Q&A's views of ``text``; when its courtesy fillers are the whole message (你好呀 → 呀), the
        message itself without its particles (small talk is made of such words)."""
        tp = self.parts.text
        a = tp.analyse(text)
        if len(a["clean"]) < 2:
            bare = normalize(text).rstrip(_PARTICLES)
            if len(bare) >= 2 and bare != text:
                a = tp.analyse(bare)
        return a

    @staticmethod
    def _scores(sig: np.ndarray, p: Params, signals: Sequence[str]) -> np.ndarray:
        cols = [SIGNALS.index(s) for s in signals]
        return sig[:, cols] @ p.weights

    @staticmethod
    def _conf_inputs(scores: np.ndarray, allowed: np.ndarray) -> tuple[int, np.ndarray]:
        s = np.where(allowed, scores, -np.inf)
        order = np.argsort(-s)
        top = int(order[0])
        second = float(s[order[1]]) if np.isfinite(s[order[1]]) else float(s[top]) - 10.0
        z = s - s[top]
        prob = float(1.0 / np.exp(z[np.isfinite(z)]).sum())
        return top, np.array([1.0, float(s[top]), float(s[top]) - second, prob])

    @staticmethod
    def _confidence(x: np.ndarray, p: Params) -> float:
        z = float(x @ p.calib)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    # ------------------------------------------------------------------ calibration

    def _calibrate(self) -> tuple[Params, Params, dict[str, Any]]:
        samples: list[tuple[np.ndarray, int]] = []
        for u, raw in enumerate(self.unit_raw):
            if not self.unit_is_example[u] or not self.unit_clean[u]:
                continue
            qvec = self.unit_vecs[u] if self.unit_vecs is not None else None
            sig = self._signals(raw, qvec, exclude=self.unit_clean[u])
            sig[~self._open(raw, None)] = -50.0  # negatives rule these classes out (a large negative score)
            samples.append((sig, int(self.unit_class[u])))
        report: dict[str, Any] = {"samples": len(samples)}
        full = self._fit(samples, SIGNALS if self.unit_vecs is not None else LEXICAL, report, "full")
        lexical = self._fit(samples, LEXICAL, report, "lexical")
        return full, lexical, report

    def _fit(self, samples: list[tuple[np.ndarray, int]], signals: Sequence[str], report: dict[str, Any],
             name: str) -> Params:
        cols = [SIGNALS.index(s) for s in signals]
        X = np.stack([s[:, cols] for s, _ in samples])  # (n, classes, f)
        y = np.array([c for _, c in samples])
        n, _, f = X.shape
        X = np.maximum(X, -1.0)  # ruled-out classes: masked below, not a feature value
        ruled_out = (np.stack([s[:, 0] for s, _ in samples]) <= -50.0)
        ruled_out[np.arange(n), y] = False
        onehot = np.zeros(X.shape[:2])
        onehot[np.arange(n), y] = 1.0
        w = np.full(f, 2.0)
        m, v = np.zeros(f), np.zeros(f)
        for t in range(1, 1501):  # softmax over classes, Adam (a tiny convex problem)
            z = X @ w
            z[ruled_out] = -1e9
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            grad = np.einsum("nc,ncf->f", p - onehot, X) / n + 1e-3 * w
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            w -= 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        params = Params(w, np.zeros(4))
        feats, labels = [], []
        for i in range(n):
            top, x = self._conf_inputs(X[i] @ w, ~ruled_out[i])
            feats.append(x)
            labels.append(1.0 if top == y[i] else 0.0)
        F, L = np.stack(feats), np.array(labels)
        mu, sd = F[:, 1:].mean(axis=0), F[:, 1:].std(axis=0) + 1e-9
        Z = np.column_stack([np.ones(n), (F[:, 1:] - mu) / sd])
        c = np.zeros(4)
        for _ in range(2000):  # logistic regression of "the top class was right"
            pz = 1.0 / (1.0 + np.exp(-(Z @ c)))
            c -= 0.5 * (Z.T @ (pz - L) / n + 1e-2 * np.r_[0.0, c[1:]])
        calib = np.r_[c[0] - float((c[1:] * mu / sd).sum()), c[1:] / sd]
        params.calib = calib
        conf = 1.0 / (1.0 + np.exp(-(F @ calib)))
        routed = conf >= ROUTE_AT
        report[name] = {"weights": dict(zip(signals, np.round(w, 3).tolist(), strict=True)),
                        "top1": float(L.mean()), "routed": float(routed.mean()),
                        "routed_right": float(L[routed].mean()) if routed.any() else 0.0}
        return params

    # ------------------------------------------------------------------ deciding

    def exact(self, text: str, roles: set[str]) -> Understood | None:
        """Global commands and regexes: certain, cheap, no encoder."""
        m = self.matcher.exact(text, roles)
        if m is None or m.intent is None:
            return None
        return Understood("route", m.intent, 1.0, m.how, [(m.intent.id, 1.0)], dict(m.slots))

    def by_example(self, text: str, roles: set[str]) -> Understood | None:
        """A message that is, normalised, an example of one intent the user may use (我的信息, 英烈名录):
        that intent, certain, without scoring or the encoder. Own-words commands (取消 / 返回 in a flow's
        words) are left to :meth:`decide`, which knows whether the user is in a flow."""
        found = [i for i in self._example_index.get(normalize(text), ()) if i.allowed(roles)]
        if len({i.id for i in found}) != 1:
            return None
        return Understood("route", found[0], 1.0, "example", [(found[0].id, 1.0)])

    def decide(self, text: str, roles: set[str] | None = None, *, exact: bool = True,
               use_encoder: bool = True, in_flow: bool = False, examples: bool = True) -> Understood:
        """The decision for ``text`` from a user with ``roles``. Blocking (may run the encoder): call it
        from a worker thread on a server (:meth:`decide_async`). ``in_flow``: the user is inside a flow
        (取消 / 返回 in own words count only there). ``examples=False`` skips :meth:`by_example` (``intents
        check`` runs each example through the scoring itself)."""
        roles = roles or set()
        text = (text or "")[:1000]
        if exact:
            hit = self.exact(text, roles)
            if hit is not None:
                return hit
        if examples:
            hit = self.by_example(text, roles)
            if hit is not None:
                return hit
        if not normalize(text):
            return self._symbols(text, roles)
        core = self._without_smalltalk(text, roles)
        if core != text:  # 早上好，帮我查一下烈士黄继光: the greeting is not the request
            if exact:
                hit = self.exact(core, roles)
                if hit is not None:
                    return hit
            text = core
        if not self.parts.text.clean(text).strip():
            return Understood("fallback", None, 0.0, "none")
        allowed = self._open(text, roles)
        if not in_flow:
            allowed[:-1] &= np.array([i.flow not in COMMAND_FLOWS for i in self.intents])
        sig = self._signals(text, None)
        res = self._judge(sig, allowed, self.lexical_params, LEXICAL, "lexical")
        if (self.parts.encoder is None or self.unit_vecs is None or not use_encoder
                or (res.decision == "route" and res.confidence >= SKIP_ENCODER_AT)):
            return res
        qvec = self.parts.encoder.embed_query(self.parts.query_text(text))
        sig[:, 0] = self._signals_e5(qvec)
        out = self._judge(sig, allowed, self.params, SIGNALS, "meaning")
        out.used_encoder = True
        return out

    def _symbols(self, text: str, roles: set[str]) -> Understood:
        """A message of symbols only (😊, 👍, ？): the intent with that very example, else the intent whose
        examples are symbols too (emoji), else the fallback."""
        raw = text.strip()
        if not raw:
            return Understood("fallback", None, 0.0, "none")
        best: Intent | None = None
        most = 0
        for i in self.intents:
            if not i.allowed(roles):
                continue
            symbolic = [e for e in i.examples if not normalize(e)]
            if raw in symbolic:
                return Understood("route", i, 1.0, "symbols", [(i.id, 1.0)])
            if len(symbolic) > most:
                best, most = i, len(symbolic)
        if best is not None:
            return Understood("route", best, 0.9, "symbols", [(best.id, 0.9)])
        return Understood("fallback", None, 0.0, "none")

    def _without_smalltalk(self, text: str, roles: set[str]) -> str:
        """``text`` without its small-talk clauses (你好， · ，谢谢) when something else remains."""
        clauses = [c for c in _CLAUSE.split(text) if c.strip()]
        if len(clauses) < 2:
            return text
        kept = []
        for c in clauses:
            if not normalize(c):
                continue
            got = self._judge(self._signals(c, None), self._open(c, roles), self.lexical_params, LEXICAL, "lexical")
            if not (got.decision == "route" and got.intent is not None and got.intent.flow == SMALLTALK_FLOW
                    and got.confidence >= 0.8):
                kept.append(c)
        if not kept or len(kept) == len(clauses):
            return text
        return "，".join(kept)

    async def decide_async(self, text: str, roles: set[str] | None = None, *, in_flow: bool = False) -> Understood:
        """:meth:`decide` with the exact rules on the loop and the rest in a worker thread."""
        import asyncio

        hit = self.exact(text, roles or set()) or self.by_example(text, roles or set())
        if hit is not None:
            return hit
        return await asyncio.to_thread(lambda: self.decide(text, roles, exact=False, in_flow=in_flow,
                                                           examples=False))

    def _signals_e5(self, qvec: np.ndarray) -> np.ndarray:
        assert self.unit_vecs is not None
        cos = np.einsum("ij,j->i", self.unit_vecs, qvec)
        out = np.full(len(self.classes), -1.0)
        out[self._present] = np.maximum.reduceat(cos, self._starts)
        return out

    def _judge(self, sig: np.ndarray, allowed: np.ndarray, p: Params, signals: Sequence[str],
               how: str) -> Understood:
        scores = self._scores(sig, p, signals)
        top, x = self._conf_inputs(scores, allowed)
        conf = self._confidence(x, p)
        s = np.where(allowed, scores, -np.inf)
        z = np.exp(s - s[top])
        prob = z / z.sum()
        order = [int(i) for i in np.argsort(-s)[:5] if np.isfinite(s[i])]
        cands = [(self.classes[i], float(prob[i])) for i in order]
        signals_top = {name: float(sig[top, SIGNALS.index(name)]) for name in signals}
        if self.classes[top] == KB:
            return Understood("fallback", None, conf, how, cands, signals=signals_top)
        intent = self.intents[top]
        if conf >= ROUTE_AT:
            return Understood("route", intent, conf, how, cands, signals=signals_top)
        lexical_evidence = any(sig[top, SIGNALS.index(n)] > 0 for n in ("chars", "words", "pinyin"))
        if conf >= SUGGEST_AT and prob[top] >= SUGGEST_TOP_P and lexical_evidence:
            # (the encoder alone on a word or two is noise: 开始 is not 找工作 nor 提醒我)
            # a list only where the first ones are close: each offered intent at least a third as likely
            sugg = [self.intents[i] for i in order[:3] if self.classes[i] != KB and prob[i] >= prob[top] / 3]
            if len(sugg) >= 2:
                return Understood("suggest", None, conf, how, cands, suggestions=sugg, signals=signals_top)
        return Understood("fallback", None, conf, how, cands, signals=signals_top)

    # ------------------------------------------------------------------ checking the catalogue

    def misrouted_examples(self) -> list[tuple[Intent, str, Understood]]:
        """Every intent example run through :meth:`decide` as a user with the intent's roles: those that
        do not route to their own intent (another intent, a list, or the fallback)."""
        out = []
        for intent in self.intents:
            roles = set(intent.roles)
            for e in intent.examples:
                got = self.decide(e, roles, in_flow=intent.flow in COMMAND_FLOWS, examples=False)
                if got.intent is None or got.intent.id != intent.id:
                    if got.intent is not None and got.intent.flow == intent.flow and not intent.is_global:
                        continue  # same flow (memorial vs memorial_tribute): the user lands right
                    out.append((intent, e, got))
        return out


# --------------------------------------------------------------------------- per process

_CACHE: dict[tuple[Any, ...], Understanding] = {}
_CACHE_LOCK = threading.Lock()


def _fingerprint(matcher: IntentMatcher) -> str:
    h = hashlib.sha256()
    for i in matcher.intents:
        h.update(repr((i.id, i.flow, i.examples, i.keywords, i.negative, sorted(i.roles))).encode())
    return h.hexdigest()[:16]


def understanding_for(matcher: IntentMatcher, engine: Any | None) -> Understanding:
    """The layer for this catalogue and Q&A engine, built (and calibrated) once per process."""
    key = (_fingerprint(matcher), id(engine))
    with _CACHE_LOCK:
        got = _CACHE.get(key)
        if got is None or got.matcher is not matcher:
            parts = QAParts.of_engine(engine) if engine is not None else QAParts.bare()
            base = got if got is not None else Understanding(matcher, parts)
            if got is not None:  # same catalogue, new matcher object: share the calibrated layer
                base = object.__new__(Understanding)
                base.__dict__.update(got.__dict__)
                base.matcher = matcher
            _CACHE[key] = got = base
        return got


# --------------------------------------------------------------------------- measuring


def routed_flow(und: Understanding, text: str, role: str = "user", context: str | None = None,
                fallback_flow: str = "policy_qa", expected: str = "") -> tuple[str, Understood | None]:
    """The flow the dispatcher starts for a first message (nothing open), as measured on held-out sets:
    an open call-up reads own words first (flows/callup/member.py), then :meth:`Understanding.decide`.
    A "suggest" is the string "suggest" (not a route). 取消 / 返回 (``expected`` a command) are read as
    inside a flow, the only place they mean something."""
    roles = {role} if role != "user" else set()
    if context == "open_callup" and role == "volunteer":
        from bot.answers import parse_callup_answer

        r = parse_callup_answer(text)
        if r is not None and r.confidence >= 0.5:
            return "callup_answer", None
    got = und.decide(text, roles, in_flow=expected in COMMAND_FLOWS)
    if got.decision == "route" and got.intent is not None:
        return got.intent.flow, got
    if got.decision == "suggest":
        return "suggest", got
    return fallback_flow, got


def evaluate_routing(und: Understanding, messages: list[dict[str, Any]],
                     fallback_flow: str = "policy_qa") -> dict[str, Any]:
    """Share of messages routed to their flow, overall and per expected flow, with the misses."""
    per: dict[str, list[int]] = {}
    misses = []
    for m in messages:
        flow, got = routed_flow(und, str(m["text"]), m.get("role", "user"), m.get("context"), fallback_flow,
                                m["flow"])
        ok = flow == m["flow"]
        per.setdefault(m["flow"], [0, 0])
        per[m["flow"]][0] += ok
        per[m["flow"]][1] += 1
        if not ok:
            misses.append({"text": m["text"], "want": m["flow"], "got": flow,
                           "confidence": round(got.confidence, 3) if got else None,
                           "candidates": got.candidates[:3] if got else []})
    right = sum(v[0] for v in per.values())
    total = sum(v[1] for v in per.values())
    return {"accuracy": right / total if total else 0.0, "right": right, "total": total,
            "per_flow": {k: f"{v[0]}/{v[1]}" for k, v in sorted(per.items())}, "misses": misses}
