"""Leave-one-KB-out: does the confidence transfer to a knowledge base it was never tuned on?

A *unit* is one knowledge base with its labelled cases (``tests/qa/kbs/<name>/kb.yaml`` and
``cases.yaml``; the shipped ``data/kb/policy.yaml`` with ``tests/qa/holdout.yaml``). For every unit in
turn, the global knobs — the coefficients of the logistic confidence over the KB-relative inputs (see
:class:`flows.policy_qa.engine.KBProfile`), the answer and list thresholds and the point above which the
encoder is skipped — are fitted on the *other* units' cases only, then the unit left out is measured with
the strict rule of :mod:`flows.policy_qa.evaluate` (its own KB profile is measured from its KB alone,
as when a county loads its KB). The ranking weights stay the shipped ones.

    vetbot qa eval --loko tests/qa/kbs --kb data/kb/policy.yaml --cases tests/qa/holdout.yaml
    python -m flows.policy_qa.loko fit       # the shipped constants, fitted on every unit

Knobs fitted on all units are what ships (``DEFAULT_PARAMS`` …): a county's KB is never among them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flows.policy_qa.engine import CLOSE_MARGIN, QAEngine, _Features
from flows.policy_qa.evaluate import KINDS, Case, Report, fit_logistic, load_cases, run
from flows.policy_qa.kb import KBError

# What the transferable confidence reads: scores relative to the KB's own profile, plus inputs that mean
# the same on every KB (how much of the question the top entry covers, words the KB never uses, length).
FULL_KEYS = ("rel_top", "rel_margin", "rel_e5", "sig:e5", "miss", "bgcov", "oov", "loglen")
LEX_KEYS = ("rel_top", "rel_margin", "miss", "bgcov", "oov", "loglen")
SKIP_FLOOR = 0.9
# How much more a wrong answer to an out-of-scope question weighs than a right answer missed, when the
# thresholds are chosen (the product wants ≥ 95 % of them declined on a new KB).
OOS_WEIGHT = 2.0


@dataclass
class Unit:
    """One knowledge base and its labelled cases: ``measure`` is reported, ``train`` used for fitting."""

    name: str
    kb: list[Path]
    measure: list[Path]
    train: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.train:
            self.train = list(self.measure)


def discover(folder: Path) -> list[Unit]:
    """Every ``<folder>/<name>/`` holding ``kb.yaml`` and ``cases.yaml``, by name."""
    units = [Unit(d.name, [d / "kb.yaml"], [d / "cases.yaml"]) for d in sorted(Path(folder).iterdir())
             if (d / "kb.yaml").is_file() and (d / "cases.yaml").is_file()]
    if not units:
        raise KBError(Path(folder), None, "no knowledge bases here",
                      "put each one in its own folder as kb.yaml with its cases.yaml")
    return units


@dataclass
class Row:
    """One case's confidence inputs, computed once (encoder always on) for both parameter sets."""

    case: Case
    full: dict[str, float]
    lex: dict[str, float]
    full_top1: bool
    lex_top1: bool
    full_top3: bool
    lex_top3: bool
    feats: _Features | None = None  # every signal for every entry, to refit the ranking weights


def rows_of(engine: QAEngine, cases: list[Case]) -> list[Row]:
    out = []
    signals = tuple(dict.fromkeys((*engine.params.signals, *engine.lexical_params.signals)))
    eng = engine.with_params(engine.params, engine.lexical_params, skip_encoder_at=None)
    for c in cases:
        f = eng.features(c.q, signals)
        lex_f = _Features({k: v for k, v in f.values.items() if k != "e5"}, False, f.oov, f.length, f.words)
        res = []
        for prm, ff in ((eng.params, f), (eng.lexical_params, lex_f)):
            sc = eng.score(ff, prm)
            order = np.argsort(-sc)[:3]
            gold = eng._by_id.get(c.expect) if c.expect else None
            res.append((eng.confidence_inputs(sc, ff, eng.profile_for(prm)),
                        gold is not None and int(order[0]) == gold, gold is not None and gold in order))
        out.append(Row(c, res[0][0], res[1][0], res[0][1], res[1][1], res[0][2], res[1][2], f))
    return out


def rescore(engine: QAEngine, rows: list[Row]) -> list[Row]:
    """The same cases' inputs under ``engine``'s (other) ranking weights, without asking again."""
    out = []
    for r in rows:
        assert r.feats is not None
        f = r.feats
        lex_f = _Features({k: v for k, v in f.values.items() if k != "e5"}, False, f.oov, f.length, f.words)
        res = []
        for prm, ff in ((engine.params, f), (engine.lexical_params, lex_f)):
            sc = engine.score(ff, prm)
            order = np.argsort(-sc)[:3]
            gold = engine._by_id.get(r.case.expect) if r.case.expect else None
            res.append((engine.confidence_inputs(sc, ff, engine.profile_for(prm)),
                        gold is not None and int(order[0]) == gold, gold is not None and gold in order))
        out.append(Row(r.case, res[0][0], res[1][0], res[0][1], res[1][1], res[0][2], res[1][2], f))
    return out


def fit_ranking(pairs: list[tuple[QAEngine, list[Row]]], signals: tuple[str, ...], *, l2: float = 0.001,
                steps: int = 1500, lr: float = 0.05) -> dict[str, float]:
    """Ranking weights as a softmax over each question's own KB entries (KBs of any size pooled)."""
    mats, gold = [], []
    for eng, rows in pairs:
        for r in rows:
            if r.case.expect and r.feats is not None:
                mats.append(np.stack([r.feats.values[s] for s in signals], axis=1))
                gold.append(eng._by_id[r.case.expect])
    n = max(m.shape[0] for m in mats)
    x = np.zeros((len(mats), n, len(signals)))
    mask = np.zeros((len(mats), n), dtype=bool)
    for q, m in enumerate(mats):
        x[q, : m.shape[0]] = m
        mask[q, : m.shape[0]] = True
    sd = np.concatenate(mats).std(0)
    sd[sd == 0] = 1.0
    z = x / sd
    y = np.array(gold)
    rows_ix = np.arange(len(y))
    w = np.ones(len(signals))
    m1 = np.zeros_like(w)
    v1 = np.zeros_like(w)
    for t in range(1, steps + 1):
        s = np.where(mask, z @ w, -np.inf)
        s -= s.max(1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(1, keepdims=True)
        grad = (np.einsum("qn,qnk->k", p, z) - z[rows_ix, y].sum(0)) / len(y) + l2 * w
        m1 = 0.9 * m1 + 0.1 * grad
        v1 = 0.999 * v1 + 0.001 * grad * grad
        w -= lr * (m1 / (1 - 0.9 ** t)) / (np.sqrt(v1 / (1 - 0.999 ** t)) + 1e-8)
    return {s: round(float(x), 4) for s, x in zip(signals, w / sd, strict=True)}


def fit_confidence(rows: list[Row], which: str, l2: float = 0.01,
                   oos_weight: float = OOS_WEIGHT) -> tuple[dict[str, float], float, float]:
    """Logistic confidence (right answer first vs anything else) and the answer / list thresholds
    that maximise strict accuracy on ``rows``."""
    keys = FULL_KEYS if which == "full" else LEX_KEYS
    x = np.array([[getattr(r, which).get(k, 0.0) for k in keys] for r in rows])
    top1 = np.array([getattr(r, f"{which}_top1") for r in rows])
    top3 = np.array([getattr(r, f"{which}_top3") for r in rows])
    oos = np.array([r.case.expect is None for r in rows])
    coef = fit_logistic(x, top1.astype(float), l2=l2)
    calib = {k: round(float(v), 5) for k, v in zip([*keys, "bias"], coef, strict=True)}
    conf = 1 / (1 + np.exp(-(x @ coef[:-1] + coef[-1])))
    grid = np.round(np.arange(0.2, 0.951, 0.01), 3)
    best_a, best_acc = 0.95, -1.0
    weight = np.where(oos, oos_weight, 1.0)  # a wrong answer to what the KB lacks costs more than a decline
    for a in grid:
        acc = float(np.sum(weight * np.where(oos, conf < a, top1 & (conf >= a))) / np.sum(weight))
        if acc > best_acc + 1e-9:
            best_a, best_acc = float(a), acc
    # the numbered list (您是想问): the band under answer_at where lists holding the right entry most
    # outnumber twice the lists shown to out-of-scope questions (each of those is a question not declined)
    best_s, best_gain = best_a, 0
    for s in grid[grid < best_a]:
        band = (conf >= s) & (conf < best_a)
        gain = int(np.sum(band & top3 & ~oos)) - 2 * int(np.sum(band & oos))
        if gain > best_gain:
            best_s, best_gain = float(s), gain
    return calib, round(best_a, 3), round(best_s, 3)


def fit_skip(rows: list[Row], calib: dict[str, float], answer_at: float) -> float:
    """Lexical confidence above which every lexical answer in ``rows`` was right: there the encoder
    is skipped (latency) at no cost in accuracy."""
    worst = SKIP_FLOOR
    for r in rows:
        conf = QAEngine.calibrated(r.lex, calib)
        if conf >= answer_at and not r.lex_top1:
            worst = max(worst, conf + 0.005)
    return round(min(worst, 0.999), 3)


@dataclass
class Knobs:
    """The global knobs, fitted on some units' rows."""

    full: dict[str, float]
    answer_at: float
    suggest_at: float
    lex: dict[str, float]
    lex_answer_at: float
    lex_suggest_at: float
    skip_at: float
    weights: dict[str, float] | None = None  # ranking weights, when refitted too

    def apply(self, engine: QAEngine) -> QAEngine:
        from flows.policy_qa.engine import Params

        p = Params(self.weights or engine.params.weights, self.full, self.answer_at, self.suggest_at, CLOSE_MARGIN)
        lp = Params(engine.lexical_params.weights, self.lex, self.lex_answer_at, self.lex_suggest_at, CLOSE_MARGIN)
        return engine.with_params(p, lp, skip_encoder_at=self.skip_at)


def fit_knobs(rows: list[Row], weights: dict[str, float] | None = None) -> Knobs:
    full, a, s = fit_confidence(rows, "full")
    lex, la, ls = fit_confidence(rows, "lex")
    return Knobs(full, a, s, lex, la, ls, fit_skip(rows, lex, la), weights)


def fit_all(loaded: list[Loaded], *, refit_ranking: bool = True) -> Knobs:
    """Every knob on ``loaded``'s training cases: ranking weights first (each KB profiled again
    with them), then the confidence and thresholds."""
    if not refit_ranking:
        return fit_knobs([r for x in loaded for r in x.train_rows])
    from flows.policy_qa.engine import Params

    have = loaded[0].train_rows[0].feats.values if loaded[0].train_rows and loaded[0].train_rows[0].feats else {}
    signals = tuple(s for s in loaded[0].engine.params.signals if s in have)  # no encoder: lexical ones
    w = fit_ranking([(x.engine, x.train_rows) for x in loaded], signals)
    rows = []
    for x in loaded:
        p = x.engine.params
        eng = x.engine.with_params(Params(w, p.calib, p.answer_at, p.suggest_at), x.engine.lexical_params)
        rows += rescore(eng, x.train_rows)
    return fit_knobs(rows, w)


@dataclass
class Loaded:
    unit: Unit
    engine: QAEngine
    measure: list[Case]
    train_rows: list[Row]


def load_units(units: list[Unit], synonyms: Path | None, userdict: Path | None,
               cache_dir: Path | None, log: Any = None, *, use_encoder: bool = True) -> list[Loaded]:
    """Load each unit's KB (profiled from the KB alone) and its training cases' inputs."""
    out = []
    for u in units:
        if log:
            log(f"loading {u.name} …")
        eng = QAEngine.from_files(u.kb, synonyms, userdict, cache_dir=cache_dir, use_encoder=use_encoder)
        measure = [c for p in u.measure for c in load_cases(p, eng)]
        train = [c for p in u.train for c in load_cases(p, eng)]
        out.append(Loaded(u, eng, measure, rows_of(eng, train)))
    return out


def leave_one_out(loaded: list[Loaded], *, refit_ranking: bool = True) -> list[tuple[str, Knobs, Report]]:
    """For each unit: knobs fitted on the others, the unit measured with them (the real ``ask`` path)."""
    out = []
    for k, held in enumerate(loaded):
        knobs = fit_all([x for j, x in enumerate(loaded) if j != k], refit_ranking=refit_ranking)
        out.append((held.unit.name, knobs, run(knobs.apply(held.engine), held.measure)))
    return out


def format_loko(results: list[tuple[str, Knobs, Report]]) -> str:
    kinds = [k for k in KINDS if any(c.kind == k for _, _, r in results for c, _, _ in r.rows)]

    def pct(x: float | None) -> str:
        return "   -  " if x is None else f"{100 * x:5.1f}%"

    head = f"{'left out':<16}{'cases':>6} {'overall':>8} {'in-scope':>9} {'declined':>9}  " + " ".join(
        f"{k[:10]:>10}" for k in kinds) + f" {'lists':>6} {'p95 ms':>7}"
    lines = ["leave-one-KB-out (knobs fitted on the other KBs, strict rule; declined = out-of-scope declined)", head]
    for name, _, rep in results:
        s = rep.summary()
        lines.append(f"{name:<16}{s['cases']:>6} {pct(s['overall']):>8} {pct(s['in_scope']):>9} "
                     f"{pct(s['out_of_scope']):>9}  " + " ".join(f"{pct(s['per_kind'].get(k)):>10}" for k in kinds)
                     + f" {s['decisions']['ambiguous']:>6} {s['p95_ms']:>7.1f}")
    pooled = Report([x for _, _, r in results for x in r.rows])
    s = pooled.summary()
    lines.append(f"{'all (pooled)':<16}{s['cases']:>6} {pct(s['overall']):>8} {pct(s['in_scope']):>9} "
                 f"{pct(s['out_of_scope']):>9}  " + " ".join(f"{pct(s['per_kind'].get(k)):>10}" for k in kinds)
                 + f" {s['decisions']['ambiguous']:>6} {s['p95_ms']:>7.1f}")
    lines.append("lists = questions answered with the numbered 您是想问 list (not counted right by the strict rule)")
    return "\n".join(lines)


def loko_json(results: list[tuple[str, Knobs, Report]]) -> dict[str, Any]:
    return {name: {k: v for k, v in rep.summary().items()} | {"knobs": knobs.__dict__}
            for name, knobs, rep in results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.policy_qa.loko",
                                 description="fit the shipped global knobs on every unit")
    ap.add_argument("what", choices=["fit"])
    ap.add_argument("--dir", type=Path, default=Path("tests/qa/kbs"))
    ap.add_argument("--cache-dir", type=Path, default=None)
    a = ap.parse_args(argv)
    units = [*discover(a.dir), Unit("shipped", [Path("data/kb/policy.yaml")], [Path("tests/qa/holdout.yaml")],
                                    [Path("tests/qa/cases.yaml"), Path("tests/qa/holdout.yaml")])]
    loaded = load_units(units, Path("data/kb/synonyms.yaml"), Path("data/kb/userdict.txt"), a.cache_dir,
                        log=lambda m: print(m, file=sys.stderr))
    knobs = fit_all(loaded)
    base = loaded[-1].engine
    print("# paste into flows/policy_qa/engine.py (fitted on every unit by python -m flows.policy_qa.loko fit)")
    print(f"DEFAULT_PARAMS = Params(weights={knobs.weights or base.params.weights!r}, calib={knobs.full!r}, "
          f"answer_at={knobs.answer_at}, suggest_at={knobs.suggest_at}, close_margin=CLOSE_MARGIN)")
    print(f"DEFAULT_LEXICAL_PARAMS = Params(weights={base.lexical_params.weights!r}, calib={knobs.lex!r}, "
          f"answer_at={knobs.lex_answer_at}, suggest_at={knobs.lex_suggest_at}, close_margin=CLOSE_MARGIN)")
    print(f"SKIP_ENCODER_AT = {knobs.skip_at!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Knobs", "Unit", "discover", "fit_knobs", "format_loko", "leave_one_out", "load_units", "rows_of"]
