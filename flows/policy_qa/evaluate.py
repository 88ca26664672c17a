"""Measure the Q&A engine on a labelled case file, and fit its fusion parameters on the dev set.

Case file::

    cases:
      - {q: 俺当兵那几年的养老保险咋转回来, expect: pension_transfer, kind: colloquial}
      - {q: 今天天气怎么样, expect: null, kind: out_of_scope}

Scoring rule (strict, what the product owner asked for): a case with an ``expect`` id is correct
only when the engine *answers* (decision "answer") with that id; "ambiguous" does not count even
when the right entry is first among the offered candidates (the user still has to pick). A case
with ``expect: null`` is correct only when the engine declines (decision "unknown"). The report
also gives the share of in-scope cases where the right entry was answered *or offered* among the
candidates, which is what the user experiences.

Fitting here (``python -m flows.policy_qa.evaluate fit --cases tests/qa/cases.yaml``) reads one dev file
of one KB (ranking weights, a logistic confidence over absolute inputs, thresholds): kept for ablations.
The shipped constants come from :mod:`flows.policy_qa.loko` (``python -m flows.policy_qa.loko fit``): KB-
relative inputs fitted on several KBs, measured leave-one-KB-out, because constants fitted to one KB did
not carry over to another bureau's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.policy_qa.engine import LEXICAL, SIGNALS, Params, QAEngine, QAResult
from flows.policy_qa.kb import KBError, _line, _read_yaml

# What the confidence is computed from (see QAEngine.confidence_inputs). Chosen by 5-fold cross-
# validation on the dev set among: top/margin/prob only, + miss/bgcov, + oov/length, + e5, all. The
# top score and softmax probability were left out at equal accuracy: both depend on how many entries
# the KB has, and the confidence must carry over to other KBs.
CONF_KEYS = ("margin", "miss", "bgcov", "oov", "loglen", "sig:e5")
KINDS = ("paraphrase", "colloquial", "typo", "keyword", "long", "traditional", "out_of_scope")


@dataclass(frozen=True)
class Case:
    q: str
    expect: str | None
    kind: str
    line: int = 0


def load_cases(path: Path, engine: QAEngine | None = None) -> list[Case]:
    """Read and check a case file (unknown expect ids are errors with the line)."""
    data = _read_yaml(Path(path))
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise KBError(path, 1, "no 'cases:' list at the top", "write 'cases:' then '- {q: …, expect: id, kind: …}'")
    out: list[Case] = []
    for raw in data["cases"]:
        line = _line(raw) or 0
        if not isinstance(raw, dict) or not isinstance(raw.get("q"), (str, int)) or not str(raw["q"]).strip():
            raise KBError(path, line, "a case needs a question 'q'", "write '- {q: 问题, expect: id, kind: paraphrase}'")
        expect = raw.get("expect")
        if expect is not None and not isinstance(expect, str):
            raise KBError(path, line, f"expect {expect!r} is not an id", "write an entry id, or null for 'not in KB'")
        if engine is not None and expect is not None and expect not in engine._by_id:
            raise KBError(path, line, f"expect '{expect}' is not an id in the knowledge base",
                          "fix the id, or use null when the KB does not answer this")
        kind = str(raw.get("kind") or ("out_of_scope" if expect is None else "paraphrase"))
        out.append(Case(str(raw["q"]), expect, kind, line))
    if not out:
        raise KBError(path, None, "no cases", "add at least one case")
    return out


# --------------------------------------------------------------------------- evaluation


def is_correct(case: Case, res: QAResult) -> bool:
    if case.expect is None:
        return res.decision == "unknown"
    return res.decision == "answer" and res.entry is not None and res.entry.id == case.expect


def _offered(case: Case, res: QAResult) -> bool:
    if case.expect is None:
        return False
    if res.decision == "answer":
        return res.entry is not None and res.entry.id == case.expect
    return res.decision == "ambiguous" and any(c.id == case.expect for c in res.candidates[:3])


@dataclass
class Report:
    rows: list[tuple[Case, QAResult, float]] = field(default_factory=list)

    def _acc(self, cases: list[tuple[Case, QAResult, float]]) -> float | None:
        return round(sum(is_correct(c, r) for c, r, _ in cases) / len(cases), 4) if cases else None

    def summary(self) -> dict[str, Any]:
        lat = sorted(ms for _, _, ms in self.rows)
        inscope = [x for x in self.rows if x[0].expect is not None]
        oos = [x for x in self.rows if x[0].expect is None]
        kinds = sorted({c.kind for c, _, _ in self.rows}, key=lambda k: (KINDS.index(k) if k in KINDS else 99, k))
        return {
            "overall": self._acc(self.rows),
            "in_scope": self._acc(inscope),
            "out_of_scope": self._acc(oos),
            "per_kind": {k: self._acc([x for x in self.rows if x[0].kind == k]) for k in kinds},
            "p50_ms": round(_pct(lat, 50), 2),
            "p95_ms": round(_pct(lat, 95), 2),
            "cases": len(self.rows),
            "answered_or_offered": (round(sum(_offered(c, r) for c, r, _ in inscope) / len(inscope), 4)
                                    if inscope else None),
            "in_scope_top1": (round(sum(bool(r.candidates) and r.candidates[0].id == c.expect
                                        for c, r, _ in inscope) / len(inscope), 4) if inscope else None),
            "decisions": {d: sum(r.decision == d for _, r, _ in self.rows) for d in ("answer", "ambiguous", "unknown")},
            "encoder_used": round(sum(r.used_encoder for _, r, _ in self.rows) / max(len(self.rows), 1), 4),
        }

    def failures(self) -> list[tuple[Case, QAResult]]:
        return [(c, r) for c, r, _ in self.rows if not is_correct(c, r)]


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    k = (len(values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run(engine: QAEngine, cases: list[Case], *, warmup: int = 3) -> Report:
    """Ask every case once (cold: per-question caches are cleared first) and time each."""
    engine.clear_caches()
    for c in cases[:warmup]:  # first calls pay one-off costs (thread pools, lazy imports)
        engine.ask(c.q + "预热")
    engine.clear_caches()
    rep = Report()
    for c in cases:
        t0 = time.perf_counter()
        res = engine.ask(c.q)
        rep.rows.append((c, res, (time.perf_counter() - t0) * 1000))
    return rep


def format_report(rep: Report, *, failures: bool = False) -> str:
    s = rep.summary()

    def pct(x: float | None) -> str:
        return "  -  " if x is None else f"{100 * x:5.1f}%"

    lines = [f"cases {s['cases']}   overall {pct(s['overall'])}   in-scope {pct(s['in_scope'])}   "
             f"out-of-scope {pct(s['out_of_scope'])}",
             f"latency p50 {s['p50_ms']:.1f} ms   p95 {s['p95_ms']:.1f} ms   "
             f"(encoder used on {100 * s['encoder_used']:.0f}% of questions)",
             f"decisions {s['decisions']}   in-scope answered or offered {pct(s['answered_or_offered'])}   "
             f"in-scope ranked first {pct(s['in_scope_top1'])}",
             "per kind:"]
    counts: dict[str, int] = {}
    for c, _, _ in rep.rows:
        counts[c.kind] = counts.get(c.kind, 0) + 1
    for k, v in s["per_kind"].items():
        lines.append(f"  {k:<13} {pct(v)}  ({counts[k]})")
    if failures:
        lines.append("failures:")
        for c, r in rep.failures():
            got = r.entry.id if r.entry else "-"
            top = ", ".join(f"{x.id}:{x.score:.2f}" for x in r.candidates[:3])
            lines.append(f"  [{c.kind}] {c.q}  expect={c.expect}  got={r.decision}/{got} "
                         f"conf={r.confidence:.2f}  top: {top}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- fitting (dev set only)


def _feature_matrix(engine: QAEngine, text: str, signals: tuple[str, ...]) -> np.ndarray:
    f = engine.features(text, signals, all_fuzz=True)
    return np.stack([f.values[s] for s in signals], axis=1)


def fit_weights(mats: list[np.ndarray], gold: list[int], *, l2: float = 0.001, steps: int = 1500,
                lr: float = 0.05) -> np.ndarray:
    """Softmax-over-entries (conditional logit) weights maximising the gold entry's likelihood.

    Features are scaled to unit spread first (the encoder's cosines live in a narrow band, the
    coverages in 0..1), optimised with Adam, and the weights mapped back to raw feature units."""
    x = np.stack(mats)                       # questions × entries × signals
    y = np.array(gold)
    sd = x.reshape(-1, x.shape[2]).std(0)
    sd[sd == 0] = 1.0
    z = x / sd
    rows = np.arange(len(y))
    w = np.ones(z.shape[2])
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t in range(1, steps + 1):
        s = z @ w
        s -= s.max(1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(1, keepdims=True)
        grad = (np.einsum("qn,qnk->k", p, z) - z[rows, y].sum(0)) / len(y) + l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        w -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return w / sd


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 0.01, steps: int = 4000) -> np.ndarray:
    xb = np.hstack([x, np.ones((len(x), 1))])
    mu, sd = xb.mean(0), xb.std(0)
    mu[-1], sd[-1] = 0.0, 1.0
    sd[sd == 0] = 1.0
    z = (xb - mu) / sd
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) / len(y) + l2 * np.r_[w[:-1], 0.0]
        w -= 0.5 * grad
    # back to raw inputs
    raw = w / sd
    raw[-1] = w[-1] - float(np.sum(w[:-1] * mu[:-1] / sd[:-1]))
    return raw


def fit(engine: QAEngine, cases: list[Case], signals: tuple[str, ...], *, verbose: bool = False,
        l2_conf: float = 0.01, conf_keys: tuple[str, ...] | None = CONF_KEYS) -> Params:
    """Fit weights, confidence and thresholds for ``signals`` on ``cases`` (the dev set)."""
    mats = [_feature_matrix(engine, c.q, signals) for c in cases]
    inscope = [(m, engine._by_id[c.expect]) for m, c in zip(mats, cases, strict=True) if c.expect]
    w = fit_weights([m for m, _ in inscope], [g for _, g in inscope])
    weights = {s: round(float(x), 4) for s, x in zip(signals, w, strict=True)}
    feats, labels, keys = [], [], None
    for m, c in zip(mats, cases, strict=True):
        sc = m @ w
        f = engine.features(c.q, signals, all_fuzz=True)
        inp = engine.confidence_inputs(sc, f)
        keys = keys or [k for k in inp if conf_keys is None or k in conf_keys]
        feats.append([inp[k] for k in keys])
        labels.append(1.0 if c.expect is not None and int(np.argmax(sc)) == engine._by_id[c.expect] else 0.0)
    xf, yl = np.array(feats), np.array(labels)
    coef = fit_logistic(xf, yl, l2=l2_conf)
    calib = {k: round(float(x), 5) for k, x in zip([*keys, "bias"], coef, strict=True)}
    conf = 1 / (1 + np.exp(-(xf @ coef[:-1] + coef[-1])))
    top_ok = yl == 1
    oos = np.array([c.expect is None for c in cases])
    # in-scope with the right entry among the top 3 (for the suggestion band)
    in_top3 = []
    for m, c in zip(mats, cases, strict=True):
        sc = m @ w
        in_top3.append(c.expect is not None and engine._by_id[c.expect] in np.argsort(-sc)[:3])
    in_top3 = np.array(in_top3)
    grid = np.round(np.arange(0.2, 0.951, 0.01), 3)
    best_a, best_acc = 0.5, -1.0
    for a in grid:
        acc = np.mean(np.where(oos, conf < a, top_ok & (conf >= a)))
        # prefer the middle of a plateau: small tie-breaker towards 0.5
        if acc > best_acc + 1e-9 or (abs(acc - best_acc) < 1e-9 and abs(a - 0.5) < abs(best_a - 0.5)):
            best_a, best_acc = float(a), float(acc)
    # suggestion band: lowest threshold below answer_at that offers at least twice as many right
    # candidate lists as it shows lists to out-of-scope questions (which then are not declined)
    best_s, best_gain = best_a, 0.0
    for sgt in grid[grid < best_a]:
        band = (conf >= sgt) & (conf < best_a)
        helped = np.sum(band & in_top3 & ~top_ok)
        hurt = np.sum(band & oos)
        gain = helped - 2 * hurt
        if gain > best_gain:
            best_s, best_gain = float(sgt), float(gain)
    params = Params(weights=weights, calib=calib, answer_at=round(best_a, 3), suggest_at=round(best_s, 3))
    if verbose:
        print(f"fit {signals}: weights={weights} calib={params.calib} answer_at={params.answer_at} "
              f"suggest_at={params.suggest_at} dev-acc={best_acc:.3f}", file=sys.stderr)
    return params


def cross_validate(engine: QAEngine, cases: list[Case], signals: tuple[str, ...], *, folds: int = 5,
                   seed: int = 7, **fit_kw: Any) -> float:
    """k-fold accuracy on the dev set: an honest estimate for choosing features without the holdout."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cases))
    right = 0
    for k in range(folds):
        test = [cases[i] for i in order[k::folds]]
        train = [cases[i] for j, i in enumerate(order) if j % folds != k]
        p = fit(engine, train, signals, **fit_kw)
        eng = engine.with_params(p, skip_encoder_at=None)
        right += sum(is_correct(c, eng.ask(c.q)) for c in test)
    return right / len(cases)


def fit_skip(engine: QAEngine, cases: list[Case], lexical: Params, *, floor: float = 0.9) -> float:
    """Lowest lexical-only confidence above which every dev answer was right (and at least ``floor``):
    above it the encoder is not needed and is skipped."""
    eng = engine.with_params(lexical, skip_encoder_at=None)
    worst = floor
    for c in cases:
        r = eng.ask(c.q)
        if r.decision == "answer" and not is_correct(c, r):
            worst = max(worst, r.confidence + 0.005)
    return round(min(worst, 0.999), 3)


ABLATIONS: dict[str, tuple[str, ...]] = {
    "e5 alone": ("e5",),
    "BM25 words alone": ("words",),
    "rapidfuzz alone": ("fuzz",),
    "BM25 char bigrams alone": ("chars",),
    "pinyin alone": ("pinyin",),
    "lexical (words+chars+pinyin+answer+fuzz)": LEXICAL,
    "e5 + words": ("e5", "words"),
    "all but pinyin": ("words", "chars", "answer", "fuzz", "e5"),
    "all but chars": ("words", "pinyin", "answer", "fuzz", "e5"),
    "all but fuzz": ("words", "chars", "pinyin", "answer", "e5"),
    "all but answer": ("words", "chars", "pinyin", "fuzz", "e5"),
    "combined (all)": SIGNALS,
}


def ablation(engine: QAEngine, dev: list[Case], holdout: list[Case] | None) -> list[dict[str, Any]]:
    """Fit each signal subset on dev and report dev and held-out accuracy (encoder never skipped)."""
    rows = []
    for name, sig in ABLATIONS.items():
        # a signal alone is judged by itself: its own top value and margin make its confidence
        keys = ("margin", f"sig:{sig[0]}") if len(sig) == 1 else CONF_KEYS
        p = fit(engine, dev, sig, conf_keys=keys)
        eng = engine.with_params(p, skip_encoder_at=None)
        row: dict[str, Any] = {"signals": name, "dev": run(eng, dev).summary()["overall"]}
        if holdout:
            hs = run(eng, holdout).summary()
            row.update(holdout=hs["overall"], holdout_in=hs["in_scope"], holdout_oos=hs["out_of_scope"],
                       holdout_rank=hs["in_scope_top1"])
        rows.append(row)
    row = {"signals": "shipped: combined, encoder skipped when lexical is sure",
           "dev": run(engine, dev).summary()["overall"]}
    if holdout:
        hs = run(engine, holdout).summary()
        row.update(holdout=hs["overall"], holdout_in=hs["in_scope"], holdout_oos=hs["out_of_scope"],
                   holdout_rank=hs["in_scope_top1"])
    rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.policy_qa.evaluate",
                                 description="fit fusion parameters on the dev set; ablation table")
    ap.add_argument("what", choices=["fit", "ablation"])
    ap.add_argument("--kb", action="append", type=Path, default=None)
    ap.add_argument("--synonyms", type=Path, default=Path("data/kb/synonyms.yaml"))
    ap.add_argument("--userdict", type=Path, default=Path("data/kb/userdict.txt"))
    ap.add_argument("--cases", type=Path, default=Path("tests/qa/cases.yaml"))
    ap.add_argument("--holdout", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    eng = QAEngine.from_files(a.kb or [Path("data/kb/policy.yaml")], a.synonyms, a.userdict,
                              cache_dir=a.cache_dir)
    dev = load_cases(a.cases, eng)
    if a.what == "fit":
        full = fit(eng, dev, SIGNALS, verbose=True)
        lex = fit(eng, dev, LEXICAL, verbose=True)
        skip = fit_skip(eng, dev, lex)
        print("# paste into flows/policy_qa/engine.py")
        print(f"DEFAULT_PARAMS = {full!r}")
        print(f"DEFAULT_LEXICAL_PARAMS = {lex!r}")
        print(f"SKIP_ENCODER_AT = {skip!r}")
        return 0
    hold = load_cases(a.holdout, eng) if a.holdout else None
    rows = ablation(eng, dev, hold)
    print("| signals | dev | held-out | held-out in-scope | held-out out-of-scope | held-out in-scope ranked first |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        def f(x: Any) -> str:
            return "-" if x is None else f"{100 * x:.1f}%"
        print(f"| {r['signals']} | {f(r['dev'])} | {f(r.get('holdout'))} | {f(r.get('holdout_in'))} | "
              f"{f(r.get('holdout_oos'))} | {f(r.get('holdout_rank'))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["KINDS", "Case", "Report", "ablation", "cross_validate", "fit", "format_report", "is_correct",
           "load_cases", "run"]
