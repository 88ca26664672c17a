"""`vetbot qa …`: policy Q&A from the command line — ask one question, evaluate on a case file, list
the questions the bot could not answer.

    vetbot qa ask --kb data/kb/policy.yaml "优待证怎么办"
    vetbot qa eval --kb data/kb/policy.yaml --cases tests/qa/cases.yaml [--json] [--failures]
    vetbot qa eval --loko tests/qa/kbs [--kb data/kb/policy.yaml --cases tests/qa/holdout.yaml] [--json]
    vetbot qa gaps -c vetbot.yaml [--limit 50] [--kind unknown|ambiguous] [--json]
    vetbot qa export -c vetbot.yaml [-o kb.yaml]

Synonyms and the user dictionary default to ``synonyms.yaml`` / ``userdict.txt`` beside the first
``--kb`` file. KB embeddings are cached under ``--cache-dir`` (default ``$XDG_CACHE_HOME/vetbot/qa``
or ``~/.cache/vetbot/qa``). A bad KB file prints ``file:line: problem (hint: …)`` and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bot.commands.common import add_config, config_of, database, emit, run


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vetbot" / "qa"


def _common(p: argparse.ArgumentParser, kb_required: bool = True) -> None:
    p.add_argument("--kb", action="append", type=Path, required=kb_required, metavar="FILE",
                   help="knowledge-base YAML (repeat for several files)")
    p.add_argument("--synonyms", type=Path, default=None, metavar="FILE",
                   help="synonyms YAML (default: synonyms.yaml beside the first --kb, if present)")
    p.add_argument("--userdict", type=Path, default=None, metavar="FILE",
                   help="jieba user dictionary (default: userdict.txt beside the first --kb, if present)")
    p.add_argument("--no-encoder", action="store_true", help="lexical signals only (no sentence encoder)")
    p.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                   help=f"cache for KB embeddings (default: {_default_cache()})")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qa", help="政策问答：查询、评测、知识库缺口",
                       description="Policy Q&A: ask the engine a question, or measure it on a labelled case file.")
    qsub = p.add_subparsers(dest="qa_cmd", required=True, metavar="SUBCOMMAND")

    a = qsub.add_parser("ask", help="问一个问题：显示答案条目、置信度和候选",
                        description="Ask one question: prints the decision (answer / ambiguous / unknown), "
                                    "the answer id, the confidence and the top candidates.")
    _common(a)
    a.add_argument("question", nargs="+", help="the question (quote it, or several words are joined)")
    a.set_defaults(func=_ask)

    e = qsub.add_parser("eval", help="在评测集上测准确率和延迟",
                        description="Evaluate on a case file: accuracy overall, in-scope, out-of-scope and per "
                                    "kind, latency p50/p95. A case is right when the engine answers with the "
                                    "expected id; for expect: null, when it declines. With --loko DIR: "
                                    "leave-one-KB-out over DIR/<name>/kb.yaml + cases.yaml (and --kb/--cases "
                                    "as one more unit): the global knobs (ranking weights, confidence, "
                                    "thresholds) are fitted on the other KBs and the one left out is measured, "
                                    "per KB and per kind.")
    _common(e, kb_required=False)
    e.add_argument("--cases", type=Path, metavar="FILE", help="labelled cases YAML (required without --loko)")
    e.add_argument("--train-cases", type=Path, action="append", default=None, metavar="FILE",
                   help="with --loko: cases of the --kb unit used for fitting when it is not the one left out "
                        "(default: --cases; e.g. tests/qa/cases.yaml and tests/qa/holdout.yaml)")
    e.add_argument("--loko", type=Path, default=None, metavar="DIR",
                   help="leave-one-KB-out over the knowledge bases in DIR (each DIR/<name>/kb.yaml + cases.yaml); "
                        "synonyms and user dictionary: the shipped data/kb ones unless given")
    e.add_argument("--failures", action="store_true", help="also list the cases it got wrong")
    e.set_defaults(func=_eval)

    g = qsub.add_parser("gaps", help="知识库缺口：没答上或没把握的问题，问得最多的在前",
                        description="Questions the bot could not answer (unknown) or only offered a list for "
                                    "(ambiguous), counted per normalised question, most-asked first: what to "
                                    "add to the knowledge base next.")
    add_config(g)
    g.add_argument("--limit", type=int, default=50, help="show at most this many (default 50)")
    g.add_argument("--kind", choices=("unknown", "ambiguous"), help="only this kind")
    g.add_argument("--json", action="store_true", help="machine-readable output")
    g.set_defaults(func=_gaps)

    x = qsub.add_parser("export", help="导出知识库：种子 YAML 加上后台的修改，写成一个 YAML 文件",
                        description="Write the effective knowledge base — the YAML seed (qa.kb) with the edits "
                                    "staff saved in the console laid over it — as one YAML file in the seed's "
                                    "schema: to review it, or to make it the new seed.")
    add_config(x)
    x.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                   help="write to FILE (default: standard output)")
    x.set_defaults(func=_export)


def _engine(args: argparse.Namespace) -> Any:
    from flows.policy_qa.engine import QAEngine

    first = args.kb[0]
    syn = args.synonyms if args.synonyms is not None else _beside(first, "synonyms.yaml")
    ud = args.userdict if args.userdict is not None else _beside(first, "userdict.txt")
    cache = None if args.no_cache else (args.cache_dir or _default_cache())
    return QAEngine.from_files(args.kb, syn, ud, use_encoder=not args.no_encoder, cache_dir=cache)


def _beside(kb: Path, name: str) -> Path | None:
    p = kb.parent / name
    return p if p.exists() else None


def _fail(e: Exception) -> int:
    print(f"vetbot: {e}", file=sys.stderr)
    return 2


def _ask(args: argparse.Namespace) -> int:
    from flows.policy_qa.kb import KBError

    question = " ".join(args.question).strip()
    if not question:
        return _fail(ValueError("empty question"))
    try:
        eng = _engine(args)
    except KBError as e:
        return _fail(e)
    res = eng.ask(question)
    out = {
        "question": question,
        "decision": res.decision,
        "id": res.entry.id if res.entry else None,
        "confidence": round(res.confidence, 3),
        "candidates": [{"id": c.id, "question": c.question, "score": round(c.score, 3)} for c in res.candidates],
        "answer": res.entry.answer if res.entry else None,
        "source": res.entry.source if res.entry else None,
    }
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    label = {"answer": "回答", "ambiguous": "不确定，给出候选", "unknown": "知识库没有，拒答"}[res.decision]
    print(f"decision: {res.decision} ({label})   id: {out['id'] or '-'}   confidence: {out['confidence']:.3f}")
    for i, c in enumerate(res.candidates, 1):
        print(f"  {i}. {c.id:<36} {c.score:8.3f}  {c.question}")
    if res.entry:
        print()
        print(res.entry.answer)
        if res.entry.source:
            print(f"（依据：{res.entry.source}）")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from flows.policy_qa.evaluate import format_report, load_cases, run
    from flows.policy_qa.kb import KBError

    if args.loko is not None:
        return _loko(args)
    if not args.kb or not args.cases:
        return _fail(ValueError("qa eval needs --kb and --cases (or --loko DIR)"))
    try:
        eng = _engine(args)
        cases = load_cases(args.cases, eng)
    except KBError as e:
        return _fail(e)
    rep = run(eng, cases)
    if args.json:
        s = rep.summary()
        keys = ("overall", "in_scope", "out_of_scope", "per_kind", "p50_ms", "p95_ms")
        out = {k: s[k] for k in keys} | {k: v for k, v in s.items() if k not in keys}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_report(rep, failures=args.failures))
    return 0


def _loko(args: argparse.Namespace) -> int:
    from flows.policy_qa.evaluate import format_report
    from flows.policy_qa.kb import KBError
    from flows.policy_qa.loko import Unit, discover, format_loko, leave_one_out, load_units, loko_json

    if not args.loko.is_dir():
        return _fail(ValueError(f"--loko {args.loko}: not a folder"))
    if bool(args.kb) != bool(args.cases):
        return _fail(ValueError("with --loko, give --kb and --cases together (one more unit) or neither"))
    shipped = Path(__file__).resolve().parents[2] / "data" / "kb"
    syn = args.synonyms if args.synonyms is not None else _beside(shipped / "policy.yaml", "synonyms.yaml")
    ud = args.userdict if args.userdict is not None else _beside(shipped / "policy.yaml", "userdict.txt")
    cache = None if args.no_cache else (args.cache_dir or _default_cache())
    try:
        units = discover(args.loko)
        if args.kb:
            units.append(Unit(args.kb[0].parent.name + "/" + args.kb[0].stem, list(args.kb), [args.cases],
                              list(args.train_cases or [args.cases])))
        if len(units) < 2:
            return _fail(ValueError("leave-one-KB-out needs at least two knowledge bases"))
        loaded = load_units(units, syn, ud, cache, log=lambda m: print(m, file=sys.stderr),
                            use_encoder=not args.no_encoder)
    except KBError as e:
        return _fail(e)
    results = leave_one_out(loaded)
    if args.json:
        print(json.dumps(loko_json(results), ensure_ascii=False))
        return 0
    print(format_loko(results))
    if args.failures:
        for name, _, rep in results:
            print(f"\n== {name}")
            print(format_report(rep, failures=True))
    return 0


def _gaps(args: argparse.Namespace) -> int:
    from bot.clock import fmt_local
    from storage.qa import top_gaps

    if args.limit < 1:
        return _fail(ValueError("--limit must be at least 1"))
    cfg = config_of(args)

    async def go() -> list[dict[str, Any]]:
        async with database(cfg) as db, db.session() as s:
            tz = cfg.bot.timezone
            return [{"question": g.example, "kind": g.kind, "count": g.count, "best_id": g.best_id,
                     "first_at": fmt_local(g.first_at, tz, "%Y-%m-%d %H:%M"),
                     "last_at": fmt_local(g.last_at, tz, "%Y-%m-%d %H:%M")}
                    for g in await top_gaps(s, args.limit, args.kind)]

    rows = run(go())

    def render(rs: list[dict[str, Any]]) -> str:
        if not rs:
            return "没有记录到答不上的问题。"
        label = {"unknown": "没收录", "ambiguous": "没把握"}
        lines = [f"{'次数':>4}  {'类型':<4}  {'最近一次':<16}  问题（没把握时：最接近的条目）"]
        for r in rs:
            near = f"  → {r['best_id']}" if r["best_id"] else ""
            lines.append(f"{r['count']:>6}  {label.get(r['kind'], r['kind']):<4}  "
                         f"{r['last_at']}  {r['question']}{near}")
        return "\n".join(lines)

    emit(rows, args.json, render)
    return 0


def _export(args: argparse.Namespace) -> int:
    from flows.policy_qa import overlay
    from flows.policy_qa.kb import KBError

    cfg = config_of(args)

    async def go() -> list[Any]:
        async with database(cfg) as db:
            return await overlay.load_rows(db)

    rows = run(go())
    try:
        entries = overlay.effective(overlay.seed(cfg), rows)
    except KBError as e:
        return _fail(e)
    text = overlay.to_yaml(entries)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        edited = sum(1 for e in entries if e.file == overlay.CONSOLE_FILE)
        print(f"wrote {len(entries)} entries ({edited} from the console) to {args.output}", file=sys.stderr)
    return 0
