"""Policy Q&A engine: the public API, odd input, a KB it was never tuned on, the encoder cache, the
CLI, and accuracy floors on the dev and held-out case sets (a drop below them fails the build)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from flows.policy_qa.engine import Candidate, Params, QAEngine, QAResult
from flows.policy_qa.evaluate import Case, is_correct, load_cases, run
from flows.policy_qa.kb import KBError

ROOT = Path(__file__).resolve().parents[2]
KB = ROOT / "data/kb/policy.yaml"
SYN = ROOT / "data/kb/synonyms.yaml"
UD = ROOT / "data/kb/userdict.txt"
DEV = ROOT / "tests/qa/cases.yaml"
HOLDOUT = ROOT / "tests/qa/holdout.yaml"

# Measured with the shipped KB and parameters (see README / commit messages); the floors sit a
# little under the measured figures so that noise does not fail the build but a real drop does.
DEV_FLOOR = {"overall": 0.92, "in_scope": 0.93, "out_of_scope": 0.85}
HOLDOUT_FLOOR = {"overall": 0.90, "in_scope": 0.90, "out_of_scope": 0.80}


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> QAEngine:
    return QAEngine.from_files([KB], SYN, UD, cache_dir=tmp_path_factory.mktemp("qa-cache"))


@pytest.fixture(scope="session")
def lexical_engine() -> QAEngine:
    return QAEngine.from_files([KB], SYN, UD, use_encoder=False)


# --------------------------------------------------------------------------- API


@pytest.mark.parametrize(("q", "expect"), [
    ("俺当兵那几年的养老保险咋转回来", "pension_transfer"),   # colloquial + dialect
    ("優待證怎麼申領", "youdaizheng_apply"),                 # traditional
    ("优代证怎么办理", "youdaizheng_apply"),                 # homophone typo
    ("请问一下，残疾军人坐火车能打折吗？", "disabled_transport_discount"),  # fillers + punctuation
    ("ＰＬＥＡＳＥ 光荣牌怎么申请", "honor_plaque"),          # full-width letters
])
def test_answers(engine: QAEngine, q: str, expect: str) -> None:
    r = engine.ask(q)
    assert isinstance(r, QAResult)
    assert r.decision == "answer" and r.entry is not None and r.entry.id == expect, r
    assert 0.0 <= r.confidence <= 1.0
    assert r.candidates[0] == Candidate(expect, engine.entry(expect).question, r.candidates[0].score)
    assert len(r.candidates) == 3


@pytest.mark.parametrize("q", ["今天天气怎么样", "给我讲个笑话", "护照去哪里办", "股票明天会涨吗"])
def test_declines_what_the_kb_does_not_cover(engine: QAEngine, q: str) -> None:
    r = engine.ask(q)
    assert r.decision == "unknown" and r.entry is None


@pytest.mark.parametrize("q", ["", "   ", "？？？", "😀👍", "a" * 5000, "优待证" * 400, "\x00\n\t"])
def test_odd_input_never_raises(engine: QAEngine, q: str) -> None:
    r = engine.ask(q)
    assert r.decision in ("answer", "ambiguous", "unknown")


def test_entry_and_related(engine: QAEngine) -> None:
    e = engine.entry("pension_transfer")
    assert e.question.startswith("退役后养老保险")
    with pytest.raises(KeyError):
        engine.entry("no_such_entry")
    rel = engine.related("pension_transfer", 3)
    assert len(rel) == 3 and "pension_transfer" not in {r.id for r in rel}
    assert {r.id for r in rel} & {"service_years_as_contribution", "flexible_social_insurance",
                                 "military_medical_insurance_transfer", "spouse_insurance"}
    assert len(engine.related("youdaizheng_apply", 1)) == 1


def test_decision_bands_follow_the_thresholds(engine: QAEngine) -> None:
    q = "优待证怎么申领"
    base = engine.params
    conf = engine.with_params(base, skip_encoder_at=None).ask(q).confidence
    amb = engine.with_params(Params(base.weights, base.calib, answer_at=min(1.0, conf + 0.01),
                                    suggest_at=max(0.0, conf - 0.01)), skip_encoder_at=None)
    r = amb.ask(q)
    assert r.decision == "ambiguous" and r.entry is None and r.candidates[0].id == "youdaizheng_apply"
    none = engine.with_params(Params(base.weights, base.calib, answer_at=1.01, suggest_at=1.01),
                              skip_encoder_at=None)
    assert none.ask(q).decision == "unknown"


def test_lexical_only_engine_works(lexical_engine: QAEngine) -> None:
    r = lexical_engine.ask("优待证丢了怎么补办")
    assert r.decision == "answer" and r.entry is not None and r.entry.id == "youdaizheng_lost"
    assert not r.used_encoder
    assert lexical_engine.ask("今天天气怎么样").decision == "unknown"


def test_encoder_is_skipped_only_when_lexical_is_sure(engine: QAEngine) -> None:
    sure = engine.ask("一次性退役金是多少？怎么算？")     # the KB question itself
    assert sure.decision == "answer" and not sure.used_encoder
    unsure = engine.ask("退役后心里头憋得慌找谁聊聊")
    assert unsure.used_encoder


def test_concurrent_questions_give_the_same_answers(engine: QAEngine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    qs = ["优待证怎么办", "退伍费能给多少", "光荣牌坏了咋整", "今天天气怎么样", "评残要什么材料"] * 8
    engine.clear_caches()
    alone = {q: engine.ask(q) for q in set(qs)}
    engine.clear_caches()
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(engine.ask, qs))
    for q, r in zip(qs, together, strict=True):
        assert (r.decision, r.entry and r.entry.id) == (alone[q].decision, alone[q].entry and alone[q].entry.id)


# --------------------------------------------------------------------------- any KB in the schema


OTHER_KB = """entries:
  - id: library_card
    question: 借书证怎么办理？
    alternates: [图书馆借书证在哪里办]
    answer: 带身份证到图书馆一楼服务台办理。
    tags: [图书馆]
  - id: library_hours
    question: 图书馆几点开门？
    alternates: [图书馆开放时间]
    answer: 每天上午九点到晚上九点。
    tags: [图书馆]
  - id: book_renewal
    question: 借的书到期了怎么续借？
    alternates: [图书怎么续借]
    answer: 在公众号“我的借阅”里续借一次，或到服务台办理。
    tags: [借阅]
  - id: lost_book
    question: 借的书弄丢了要赔多少？
    alternates: [图书丢失怎么赔偿]
    answer: 按书价赔偿，绝版书按规定加收。
    tags: [借阅]
"""


@pytest.mark.parametrize("use_encoder", [False, pytest.param(True, marks=pytest.mark.xfail(strict=True, reason=(
    "known gap: on this 4-entry KB (8 pseudo-questions for its profile) 优待证怎么办理 is answered with "
    "借书证 (confidence 0.73); a veto when the encoder sees a near miss and a telling word is unmatched "
    "declined it but cost 11 points of in-scope accuracy in leave-one-KB-out, so it was not shipped")))])
def test_works_on_a_kb_it_was_never_tuned_on(tmp_path: Path, use_encoder: bool) -> None:
    kb = tmp_path / "library.yaml"
    kb.write_text(OTHER_KB, encoding="utf-8")
    eng = QAEngine.from_files([kb], use_encoder=use_encoder, cache_dir=tmp_path / "cache")
    assert eng.ask("借書證怎麼辦").entry.id == "library_card"  # type: ignore[union-attr]
    assert eng.ask("图书馆啥时候开门").candidates[0].id == "library_hours"
    assert eng.ask("书丢了赔多少钱").candidates[0].id == "lost_book"
    assert eng.ask("今天天气怎么样").decision == "unknown"
    if use_encoder:
        # Same words, other domain. Lexical signals alone cannot tell 优待证 from 借书证 in a KB with
        # no competing entries; the encoder can (the lexical-only mode is a documented fallback).
        assert eng.ask("优待证怎么办理").decision != "answer"


def test_kb_errors_surface_from_from_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("entries:\n  - id: x\n    question: 问\n", encoding="utf-8")
    with pytest.raises(KBError, match=r"bad\.yaml:2: entry 'x': answer is missing"):
        QAEngine.from_files([bad], use_encoder=False)


# --------------------------------------------------------------------------- encoder cache


def test_embedding_cache_is_used_and_optional(tmp_path: Path) -> None:
    kb = tmp_path / "library.yaml"
    kb.write_text(OTHER_KB, encoding="utf-8")
    cache = tmp_path / "cache"
    a = QAEngine.from_files([kb], cache_dir=cache)
    files = list(cache.glob("qa-e5-*.npy"))
    assert len(files) == 1
    b = QAEngine.from_files([kb], cache_dir=cache)
    assert np.allclose(a._kb_vecs, b._kb_vecs)
    files[0].write_bytes(b"not a numpy file")           # a broken cache is recomputed, not fatal
    c = QAEngine.from_files([kb], cache_dir=cache)
    assert np.allclose(a._kb_vecs, c._kb_vecs)
    d = QAEngine.from_files([kb])                        # no cache at all
    assert np.allclose(a._kb_vecs, d._kb_vecs, atol=1e-5)
    kb.write_text(OTHER_KB.replace("几点开门", "几点关门"), encoding="utf-8")
    QAEngine.from_files([kb], cache_dir=cache)           # new content → new key
    assert len(list(cache.glob("qa-e5-*.npy"))) == 2


# --------------------------------------------------------------------------- evaluation and CLI


def test_scoring_rule() -> None:
    res = QAResult("ambiguous", None, 0.4, [Candidate("a", "A", 1.0)])
    assert not is_correct(Case("q", "a", "paraphrase"), res)       # ambiguous is not an answer
    assert not is_correct(Case("q", None, "out_of_scope"), res)    # …nor a decline
    assert is_correct(Case("q", None, "out_of_scope"), QAResult("unknown", None, 0.1, []))


def test_eval_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.commands import qa

    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - {q: 优待证怎么申领, expect: youdaizheng_apply, kind: colloquial}\n"
                     "  - {q: 今天天气怎么样, expect: null, kind: out_of_scope}\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    qa.register(parser.add_subparsers())
    args = parser.parse_args(["qa", "eval", "--kb", str(KB), "--cases", str(cases), "--json", "--no-encoder"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out)[:6] == ["overall", "in_scope", "out_of_scope", "per_kind", "p50_ms", "p95_ms"]
    assert out["overall"] == 1.0 and set(out["per_kind"]) == {"colloquial", "out_of_scope"}
    args = parser.parse_args(["qa", "ask", "--kb", str(KB), "--no-encoder", "--json", "光荣牌怎么申请"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decision"] == "answer" and out["id"] == "honor_plaque" and len(out["candidates"]) == 3
    bad_cases = tmp_path / "bad_cases.yaml"
    bad_cases.write_text("cases:\n  - {q: 问, expect: no_such_id}\n", encoding="utf-8")
    args = parser.parse_args(["qa", "eval", "--kb", str(KB), "--cases", str(bad_cases), "--no-encoder"])
    assert args.func(args) == 2
    assert "bad_cases.yaml:2: expect 'no_such_id' is not an id" in capsys.readouterr().err


def test_case_files_are_well_formed(engine: QAEngine) -> None:
    dev, hold = load_cases(DEV, engine), load_cases(HOLDOUT, engine)
    assert len(dev) + len(hold) >= 300
    kinds = {"paraphrase", "colloquial", "typo", "keyword", "long", "traditional", "out_of_scope"}
    assert {c.kind for c in dev} == kinds and {c.kind for c in hold} == kinds
    assert not {c.q for c in dev} & {c.q for c in hold}       # the halves do not overlap


@pytest.mark.parametrize(("path", "floor"), [(DEV, DEV_FLOOR), (HOLDOUT, HOLDOUT_FLOOR)], ids=["dev", "holdout"])
def test_accuracy_does_not_drop(engine: QAEngine, path: Path, floor: dict[str, float]) -> None:
    s = run(engine, load_cases(path, engine)).summary()
    for key, minimum in floor.items():
        assert s[key] >= minimum, f"{path.name}: {key} {s[key]:.3f} < {minimum} — per kind: {s['per_kind']}"
