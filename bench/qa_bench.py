"""Policy Q&A latency with a 1,000-entry knowledge base.

The big KB is generated from ours: every entry is kept and copied with distinct ids and
paraphrased questions (synonym swaps, other question frames, topic prefixes) until there are
``--entries`` entries, so the indexes and the embedding matrix have the size of a large county KB.
Every question of the dev and held-out case files is asked once, cold (query caches cleared),
after a short warm-up; p50/p95/max per question are printed, with the time to build the engine.

    python bench/qa_bench.py                      # 1,000 entries, encoder on
    python bench/qa_bench.py --entries 2000 --no-encoder --json

KB embeddings are cached under --cache-dir (default: a temporary folder, so the first build pays
for encoding ~3,500 texts; pass a folder to reuse it between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flows.policy_qa.engine import QAEngine  # noqa: E402
from flows.policy_qa.evaluate import load_cases, run  # noqa: E402
from flows.policy_qa.kb import load_kb, load_synonyms  # noqa: E402

FRAMES = ["{t}", "请问{t}", "关于{t}", "{t}需要什么材料", "{t}去哪里办理", "{t}有什么规定", "{t}的政策是什么",
          "想了解{t}", "{t}怎么申请", "{t}由哪个部门负责"]
TOPICS = ["县里", "乡镇", "城区", "农村", "外地", "本市", "本省", "社区", "街道", "村里"]


def big_kb(kb_path: Path, synonyms_path: Path, n: int, seed: int = 1) -> dict:
    """Entries for a KB of ``n`` entries grown from ``kb_path`` (distinct ids and questions)."""
    rnd = random.Random(seed)
    entries = load_kb([kb_path])
    variants: dict[str, list[str]] = {}
    for v, canon in load_synonyms(synonyms_path).items():
        variants.setdefault(canon, []).append(v)
    out = [_entry(e.id, e.question, list(e.alternates), e.answer, list(e.tags)) for e in entries]
    seen = {q for e in entries for q in e.texts}
    k = 0
    while len(out) < n:
        e = entries[k % len(entries)]
        k += 1
        texts = []
        for base in e.texts:
            t = base.rstrip("？?")
            for canon, vs in variants.items():
                if canon in t and rnd.random() < 0.5:
                    t = t.replace(canon, rnd.choice(vs), 1)
            t = rnd.choice(TOPICS) + rnd.choice(FRAMES).format(t=t)
            if t not in seen:
                seen.add(t)
                texts.append(t)
        if not texts:
            continue
        out.append(_entry(f"{e.id}_v{k}", texts[0], texts[1:], e.answer + f"（第{k}号）", list(e.tags)))
    return {"entries": out}


def _entry(eid: str, q: str, alts: list[str], answer: str, tags: list[str]) -> dict:
    return {"id": eid, "question": q, "alternates": alts, "answer": answer, "tags": tags}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", type=Path, default=ROOT / "data/kb/policy.yaml")
    ap.add_argument("--synonyms", type=Path, default=ROOT / "data/kb/synonyms.yaml")
    ap.add_argument("--userdict", type=Path, default=ROOT / "data/kb/userdict.txt")
    ap.add_argument("--cases", type=Path, action="append",
                    default=None, help="question files (default: tests/qa/cases.yaml and holdout.yaml)")
    ap.add_argument("--entries", type=int, default=1000)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--no-encoder", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="ask every question this many times (cold each time)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        kb_file = Path(tmp) / "big.yaml"
        kb_file.write_text(yaml.safe_dump(big_kb(a.kb, a.synonyms, a.entries), allow_unicode=True), encoding="utf-8")
        cache = a.cache_dir or Path(tmp) / "cache"
        t0 = time.perf_counter()
        eng = QAEngine.from_files([kb_file], a.synonyms, a.userdict, use_encoder=not a.no_encoder, cache_dir=cache)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        QAEngine.from_files([kb_file], a.synonyms, a.userdict, use_encoder=not a.no_encoder, cache_dir=cache)
        cached_s = time.perf_counter() - t0
        files = a.cases or [ROOT / "tests/qa/cases.yaml", ROOT / "tests/qa/holdout.yaml"]
        cases = [c for f in files for c in load_cases(f)]
        lat: list[float] = []
        enc = 0.0
        runs = []
        for _ in range(a.repeat):
            s = run(eng, cases)
            lat += [ms for _, _, ms in s.rows]
            summ = s.summary()
            enc = summ["encoder_used"]
            runs.append((summ["p50_ms"], summ["p95_ms"]))
        lat.sort()

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, round((len(lat) - 1) * p / 100))], 2)

        res = {"entries": len(eng.entries), "texts": len(eng._texts), "questions": len(lat),
               "build_s": round(build_s, 1), "build_cached_s": round(cached_s, 1), "p50_ms": pct(50),
               "p95_ms": pct(95), "max_ms": round(lat[-1], 2), "encoder_used": enc, "encoder": not a.no_encoder,
               "runs": [{"p50_ms": p50, "p95_ms": p95} for p50, p95 in runs], "load_avg": os.getloadavg()[0]}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{res['entries']} entries ({res['texts']} questions/alternates), encoder {'on' if res['encoder'] else 'off'}")
        print(f"build {res['build_s']} s (with warm cache {res['build_cached_s']} s)")
        print(f"{res['questions']} questions: p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms, max {res['max_ms']} ms "
              f"(encoder used on {100 * enc:.0f}%)")
        if len(runs) > 1:
            print("per run (p50/p95 ms): " + ", ".join(f"{p50}/{p95}" for p50, p95 in runs))
        print(f"load average when done: {res['load_avg']:.2f} (other processes on this machine skew the tail)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
