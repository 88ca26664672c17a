"""Per-KB calibration (KBProfile), leave-one-KB-out evaluation (`vetbot qa eval --loko`), and the Q&A
running off the event loop (flows.policy_qa.flow.off_loop / reload_engine)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bot.cli import main
from flows.policy_qa import flow as qa_flow
from flows.policy_qa.engine import Params, QAEngine
from flows.policy_qa.kb import Entry

ROOT = Path(__file__).resolve().parents[2]
SYN = ROOT / "data/kb/synonyms.yaml"
UD = ROOT / "data/kb/userdict.txt"


def _entry(id: str, q: str, alts: list[str], answer: str = "答复内容。") -> Entry:
    return Entry(id=id, question=q, alternates=tuple(alts), answer=answer, tags=(), keywords=())


SHARED = _entry("card_apply", "优待证怎么申请办理", ["在哪里申请优待证", "申领优待证要带什么材料"],
                "带身份证和退伍证到服务站申请优待证。")
# Other entries far from the shared one: a near miss scores low on this KB.
SPREAD = [SHARED,
          _entry("pension", "养老保险关系怎么转移接续", ["当兵的养老保险怎么转回地方", "退伍后社保怎么接上"]),
          _entry("tomb", "烈士陵园在哪里祭扫", ["清明节去哪里给烈士扫墓", "烈士墓地怎么找"]),
          _entry("loan", "创业贷款怎么申请贴息", ["开店能贷款吗", "自主创业有没有贷款扶持"])]
# Other entries on the same subject in nearly the same words: a near miss scores high on this KB.
CROWDED = [SHARED,
           _entry("card_lost", "优待证丢了怎么申请补办", ["优待证遗失去哪里申请补领", "补办优待证要带什么材料"]),
           _entry("card_progress", "优待证申请办理进度怎么查", ["申请的优待证在哪里查进度", "优待证办理要多久"]),
           _entry("card_fix", "优待证信息错了怎么申请更正", ["优待证上名字错了在哪里改", "更正优待证要带什么材料"])]


def test_profile_pseudo_questions_leave_their_own_text_out() -> None:
    eng = QAEngine(SPREAD, use_encoder=False)
    j = eng._raw_texts.index("在哪里申请优待证")
    own = int(eng._owner[j])
    with_text = eng.features("在哪里申请优待证", eng.lexical_params.signals)
    without = eng.features("在哪里申请优待证", eng.lexical_params.signals, exclude_text=j)
    assert with_text.values["fuzz"][own] == pytest.approx(1.0)
    assert without.values["fuzz"][own] < 1.0
    for s in ("words", "chars", "pinyin", "words_r", "chars_r"):
        assert without.values[s][own] <= with_text.values[s][own]
    assert without.values["chars"][own] < with_text.values["chars"][own]
    # other entries are scored as usual
    other = [i for i in range(len(SPREAD)) if i != own]
    assert (without.values["chars"][other] == with_text.values["chars"][other]).all()


def test_same_question_same_params_decision_follows_the_kb_distribution() -> None:
    """One question, one set of parameters, the same entry first: on a KB whose near misses score low the
    engine answers, on a KB full of look-alike entries it does not — decided by each KB's own profile."""
    spread = QAEngine(SPREAD, use_encoder=False)
    crowded = QAEngine(CROWDED, use_encoder=False)
    assert spread.lexical_profile is not None and crowded.lexical_profile is not None
    assert crowded.lexical_profile.neg > spread.lexical_profile.neg  # near misses score higher there

    calib = {"rel_top": 3.0, "bias": -1.0}
    q = "申领优待证带啥"
    confs = {}
    for name, eng in (("spread", spread), ("crowded", crowded)):
        lp = Params(eng.lexical_params.weights, calib, answer_at=0.5, suggest_at=0.5)
        e = eng.with_params(lp, lp, skip_encoder_at=None)
        f = e.features(q, lp.signals)
        sc = e.score(f, lp)
        assert e.entries[int(sc.argmax())].id == "card_apply"
        confs[name] = e.decide(f, lp).confidence
    assert confs["spread"] > confs["crowded"]
    mid = (confs["spread"] + confs["crowded"]) / 2
    for name, eng, want in (("spread", spread, "answer"), ("crowded", crowded, "unknown")):
        lp = Params(eng.lexical_params.weights, calib, answer_at=mid, suggest_at=mid)
        r = eng.with_params(lp, lp, skip_encoder_at=None).ask(q)
        assert r.decision == want, (name, r)


def test_middling_confidence_offers_a_numbered_list() -> None:
    eng = QAEngine(CROWDED, use_encoder=False)
    lp = eng.lexical_params
    conf = eng.with_params(lp, lp, skip_encoder_at=None).ask("优待证在哪申请").confidence
    band = Params(lp.weights, lp.calib, answer_at=min(conf + 0.01, 1.0), suggest_at=max(conf - 0.01, 0.0))
    r = eng.with_params(band, band, skip_encoder_at=None).ask("优待证在哪申请")
    assert r.decision == "ambiguous" and 2 <= len(r.candidates) <= 3 and r.entry is None


def _write_unit(folder: Path, entries: list[Entry], cases: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "kb.yaml").write_text(yaml.safe_dump({"entries": [
        {"id": e.id, "question": e.question, "alternates": list(e.alternates), "answer": e.answer}
        for e in entries]}, allow_unicode=True), encoding="utf-8")
    (folder / "cases.yaml").write_text(yaml.safe_dump({"cases": cases}, allow_unicode=True), encoding="utf-8")


def test_eval_loko_reports_each_kb_left_out_per_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_unit(tmp_path / "kbs/spread", SPREAD, [
        {"q": "优待证咋申请", "expect": "card_apply", "kind": "colloquial"},
        {"q": "养老保险咋转", "expect": "pension", "kind": "colloquial"},
        {"q": "贷款创业", "expect": "loan", "kind": "keyword"},
        {"q": "今天天气怎么样", "expect": None, "kind": "out_of_scope"}])
    _write_unit(tmp_path / "kbs/crowded", CROWDED, [
        {"q": "优待证掉了咋补", "expect": "card_lost", "kind": "colloquial"},
        {"q": "优待证进度", "expect": "card_progress", "kind": "keyword"},
        {"q": "护照怎么办", "expect": None, "kind": "out_of_scope"}])
    with pytest.raises(SystemExit) as e:
        main(["qa", "eval", "--loko", str(tmp_path / "kbs"), "--no-encoder", "--no-cache", "--json",
              "--synonyms", str(SYN), "--userdict", str(UD)])
    assert e.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"spread", "crowded"}
    assert out["spread"]["cases"] == 4 and out["crowded"]["cases"] == 3
    assert set(out["spread"]["per_kind"]) == {"colloquial", "keyword", "out_of_scope"}
    for r in out.values():
        assert 0.0 <= r["overall"] <= 1.0 and "answer_at" in r["knobs"] and r["knobs"]["weights"]

    with pytest.raises(SystemExit) as e:
        main(["qa", "eval", "--loko", str(tmp_path / "kbs"), "--no-encoder", "--no-cache",
              "--synonyms", str(SYN), "--userdict", str(UD)])
    text = capsys.readouterr().out
    assert "leave-one-KB-out" in text and "spread" in text and "crowded" in text and "all (pooled)" in text


def test_eval_loko_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["qa", "eval", "--loko", str(tmp_path / "empty"), "--no-encoder"])
    assert e.value.code == 2 and "kb.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["qa", "eval", "--kb", str(ROOT / "data/kb/policy.yaml")])
    assert e.value.code == 2 and "--cases" in capsys.readouterr().err


class _SlowEngine:
    """Stands in for QAEngine: asking holds its thread for a while (as the encoder does)."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def ask(self, text: str) -> str:
        self.threads.append(threading.current_thread().name)
        time.sleep(0.3)  # releases the GIL, like the encoder's C code
        return f"answer:{text}"


async def test_questions_are_matched_off_the_event_loop() -> None:
    eng = _SlowEngine()
    services = SimpleNamespace(qa_engine=eng, qa_engine_seen=None, db=None)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    try:
        t0 = time.perf_counter()
        results = await asyncio.gather(qa_flow.ask(services, "一"), qa_flow.ask(services, "二"))
        elapsed = time.perf_counter() - t0
    finally:
        t.cancel()
    assert results == ["answer:一", "answer:二"]
    assert all(n.startswith("vetbot-qa") for n in eng.threads) and threading.current_thread().name not in eng.threads
    assert elapsed >= 0.55  # one worker: questions queue instead of piling up threads
    assert ticks >= 20      # meanwhile the loop kept running (blocked, it would tick about once)


async def test_reload_engine_takes_a_kb_edit_without_restart(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    kb.write_text(yaml.safe_dump({"entries": [
        {"id": e.id, "question": e.question, "alternates": list(e.alternates), "answer": e.answer}
        for e in SPREAD]}, allow_unicode=True), encoding="utf-8")
    cfg = SimpleNamespace(qa=SimpleNamespace(kb=[str(kb)], synonyms=None, userdict=None, use_encoder=False,
                                             cache_dir=None),
                          path=lambda p: Path(p))
    services = SimpleNamespace(config=cfg, db=None, qa_engine=None, qa_engine_seen=None)
    eng = await qa_flow.engine_of(services)
    assert "flag" not in eng._by_id
    data = yaml.safe_load(kb.read_text(encoding="utf-8"))
    data["entries"].append({"id": "flag", "question": "光荣牌怎么申请悬挂", "alternates": ["家门口挂光荣牌找谁"],
                            "answer": "到服务站登记。"})
    kb.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    new = await qa_flow.reload_engine(services)
    assert new is not eng and "flag" in new._by_id
    assert await qa_flow.engine_of(services) is new
    # a broken edit keeps the engine that works
    kb.write_text("entries: [oops", encoding="utf-8")
    from flows.policy_qa.kb import KBError
    with pytest.raises(KBError):
        await qa_flow.reload_engine(services)
    assert await qa_flow.engine_of(services) is new


async def test_prefetch_matches_free_text_before_the_turn_and_leaves_commands_alone() -> None:
    eng = _SlowEngine()
    # an exact rule's command (献花 + a name) is not a question: no match is spent on it
    matcher = SimpleNamespace(exact=lambda text, roles: object() if text.startswith("献花") else None)
    services = SimpleNamespace(qa_engine=eng, qa_engine_seen=None, db=None, matcher=matcher)
    pre = qa_flow.Prefetch(services)
    for short in ("帮助", "取消", "12345", "  1 ", "请问", "献花 示例烈士0012"):
        assert pre(short) is None
    fut = pre("优待证怎么办理呢")
    assert fut is not None and pre("优待证怎么办理呢") is fut  # asked twice before the turn: one match
    assert await fut == "answer:优待证怎么办理呢" and eng.threads[0].startswith("vetbot-qa")
    assert pre.take(" 优待证怎么办理呢") is fut and pre.take("优待证怎么办理呢") is None  # used once
    assert len(eng.threads) == 1
