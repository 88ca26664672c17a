"""The understanding layer (bot/understanding.py): exact rules first and without the encoder, meaning with
one calibrated confidence, small talk that is never a knowledge gap, `vetbot intents check` / `match`,
and a regression guard on the held-out routing sets (measured, never tuned on)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from bot.app import load_matcher, understanding_of
from bot.intents import check_intents
from bot.understanding import Understanding, evaluate_routing
from flows.api import Services
from flows.jobs.browse import word_groups
from flows.jobs.matching import related_job_words
from storage.models import Ticket
from storage.qa import QAGap
from tests.conftest import ROOT, make_config
from tests.helpers import chat_session

HOLDOUT = ROOT / "tests" / "intents"
#: Measured when the layer landed (issue 15): 220/267 = 82.4 % of held-out routing messages to the right
#: flow (42.3 % before), small talk 100/103. The guard keeps a margin for encoder noise across machines;
#: raise it when the figure goes up, never lower it to make a change pass.
ROUTING_AT_LEAST = 0.78
SMALLTALK_AT_LEAST = 0.93


@pytest.fixture(scope="module")
def und() -> Understanding:
    cfg = make_config("sqlite+aiosqlite:///:memory:")
    matcher = load_matcher(cfg)
    return asyncio.run(understanding_of(matcher, Services(config=cfg, clock=None)))  # type: ignore[arg-type]


def test_exact_commands_and_regexes_do_not_pay_for_the_encoder(und: Understanding) -> None:
    calls: list[str] = []
    enc = und.parts.encoder
    assert enc is not None
    real = enc.embed_query
    enc.embed_query = lambda t: calls.append(t) or real(t)  # type: ignore[method-assign]
    try:
        for text, how, intent in (("帮助", "global", "help"), ("找工作 保安", "regex", "job_search"),
                                  ("取消", "global", "cancel")):
            got = und.decide(text)
            assert (got.decision, got.how, got.intent.id if got.intent else None) == ("route", how, intent)
        assert calls == []
    finally:
        enc.embed_query = real  # type: ignore[method-assign]


def test_a_question_is_encoded_once_for_routing_and_the_qa(und: Understanding) -> None:
    from flows.policy_qa.flow import _ENGINES

    _digest, engine = next(iter(_ENGINES.values()))  # (overlay digest, engine)
    enc = und.parts.encoder
    assert enc is engine.encoder  # one encoder, one query cache
    model = enc._model  # counting the model's own calls (private: test only)

    class Counting:
        def __init__(self) -> None:
            self.n = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(model, name)

        def query(self, text: Any) -> Any:
            self.n += 1
            return model.query(text)

    counting = Counting()
    enc._model = counting
    try:
        text = "俺家老爷子的抚恤金这个月咋还没发下来呀"
        got = und.decide(text)
        assert got.used_encoder and got.decision == "fallback"
        engine.ask(text)
        assert counting.n == 1
    finally:
        enc._model = model


def test_decisions_route_suggest_fallback_and_roles(und: Understanding) -> None:
    assert und.decide("优待证怎么办理").decision == "fallback"  # a policy question: the Q&A answers it
    assert und.decide("谢谢您").intent.flow == "smalltalk"  # type: ignore[union-attr]
    # a staff intent is not offered to a member of the public, and it is to staff
    assert "callup_status" not in [c for c, _ in und.decide("集结状态").candidates]
    staff = und.decide("集结状态", {"staff"})
    assert staff.decision == "route" and staff.intent.id == "callup_status"  # type: ignore[union-attr]
    # negatives rule an intent out: 退订 never lands on 订阅
    assert und.decide("关掉招聘提醒").intent is None or und.decide("关掉招聘提醒").intent.id != "job_subscribe"  # type: ignore[union-attr]
    for got in (und.decide(t) for t in ("岗位推送不想收了", "先别推送")):
        assert got.intent is None or got.intent.id != "job_subscribe"
    assert und.decide("先别推送").intent.id == "job_pause"  # type: ignore[union-attr]


def test_confidence_is_calibrated_on_the_catalogue_itself(und: Understanding) -> None:
    rep = und.report
    assert rep["samples"] > 500
    # leave-one-out: of the examples routed at the threshold, most are right; the confidence means something
    assert rep["full"]["routed_right"] > 0.8 and rep["full"]["routed"] > 0.6


def test_every_example_routes_to_its_own_intent(und: Understanding) -> None:
    bad = [(i.id, e, got.decision, got.intent.id if got.intent else None) for i, e, got in und.misrouted_examples()]
    assert bad == []


def test_check_reports_all_problems_with_file_line_and_hint(tmp_path: Path) -> None:
    d = tmp_path / "intents"
    d.mkdir()
    (d / "a.yaml").write_text("intents:\n  - id: a\n    flow: nosuch\n    examples: [x]\n"
                              "  - id: b\n    flow: help\n    examples: [共用的话]\n", encoding="utf-8")
    (d / "b.yaml").write_text("intents:\n  - id: c\n    flow: help\n    exampels: [y]\n"
                              "  - id: d\n    flow: help\n    examples: [共用的话]\n", encoding="utf-8")
    intents, errors = check_intents(d, {"help"})
    text = "\n".join(str(e) for e in errors)
    assert f"{d / 'a.yaml'}:3: intent 'a': unknown flow 'nosuch'" in text
    assert f"{d / 'b.yaml'}:4: unknown key 'exampels'" in text and "did you mean 'examples'" in text
    assert "example '共用的话' is also an example of 'b'" in text
    assert [i.id for i in intents] == ["b", "d"]


def test_cli_match_json_is_the_dispatchers_decision(und: Understanding, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.commands.core import _intents_match

    cfg_path = ROOT / "config.example.yaml"
    for text, roles in (("俺想找个开车的活", []), ("集结状态", ["staff"]), ("优待证怎么办理", [])):
        rc = _intents_match(argparse.Namespace(config=str(cfg_path), text=text, role=roles, json=True))
        out = json.loads(capsys.readouterr().out)
        assert rc == 0 and set(out) >= {"intent", "flow", "decision", "confidence", "candidates"}
        want = und.decide(text, set(roles))
        assert (out["decision"], out["intent"]) == (want.decision, want.intent.id if want.intent else None)
    assert out["decision"] == "fallback" and out["flow"] == "policy_qa"


def test_job_words_by_meaning() -> None:
    assert {"司机", "驾驶"} <= set(related_job_words("开车"))
    assert {"司机", "驾驶"} <= set(related_job_words("会开车的"))
    groups = word_groups("開車", {})
    assert "司机" in groups[0] and "驾驶" in groups[0]
    assert related_job_words("宇航员") == ()


async def test_small_talk_is_never_a_gap_nor_a_ticket_offer(db_url: str) -> None:
    cfg = make_config(db_url)  # the policy Q&A is the fallback here, as in production
    async with chat_session(cfg) as chat:
        for text in ("你好", "谢谢", "好的", "今天天气咋样", "在吗", "再见"):
            reply = await chat.send("u_small", text) or ""
            assert "政策库" not in reply and "人工）" not in reply, (text, reply)
        async with chat.runtime.db.session() as s:
            assert (await s.execute(select(func.count()).select_from(QAGap))).scalar_one() == 0
            assert (await s.execute(select(func.count()).select_from(Ticket))).scalar_one() == 0


def test_held_out_routing_stays_above_the_guard(und: Understanding) -> None:
    msgs = yaml.safe_load((HOLDOUT / "routing_holdout.yaml").read_text(encoding="utf-8"))["messages"]
    res = evaluate_routing(und, msgs)
    assert res["accuracy"] >= ROUTING_AT_LEAST, json.dumps(res["per_flow"], ensure_ascii=False)
    doc = yaml.safe_load((HOLDOUT / "smalltalk_holdout.yaml").read_text(encoding="utf-8"))
    small = [und.decide(str(m["text"])) for m in doc["smalltalk"]]
    ok = sum(1 for g in small if g.decision == "route" and g.intent is not None and g.intent.flow == "smalltalk")
    assert ok / len(small) >= SMALLTALK_AT_LEAST


def test_intents_eval_reports_a_labelled_file_and_refuses_a_malformed_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main as cli

    def main(argv: list[str]) -> int:
        try:
            return int(cli(argv) or 0)
        except SystemExit as e:
            return int(e.code or 0)

    bad = tmp_path / "bad.yaml"
    bad.write_text("messages:\n  - {text: 你好}\n", encoding="utf-8")  # no flow label
    assert main(["intents", "eval", "-c", str(ROOT / "config.example.yaml"), str(bad)]) == 2
    assert "expected a top-level 'messages' list" in capsys.readouterr().err
    assert main(["intents", "eval", "-c", str(ROOT / "config.example.yaml"), str(tmp_path / "none.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("messages:\n  - {text: 帮助, flow: help}\n  - {text: 英烈名录, flow: martyr_search}\n"
                    "  - {text: 帮助, flow: jobs_search}\n", encoding="utf-8")
    assert main(["intents", "eval", "-c", str(ROOT / "config.example.yaml"), "--misses", str(good)]) == 0
    out = capsys.readouterr().out
    assert "routed to the right flow: 2/3 = 66.7%" in out and "miss: '帮助' want jobs_search got help" in out


def test_a_message_that_is_an_example_routes_without_scoring_or_the_encoder(und: Understanding) -> None:
    # 我的信息 (a menu item's name) paid for the encoder on every message; the webhook mix halved.
    got = und.decide("我的信息")
    assert got.decision == "route" and got.intent is not None and got.intent.flow == "profile"
    assert got.how == "example" and not got.used_encoder
    # intents check still scores every example itself, and own-words commands stay with decide()
    assert und.decide("我的信息", examples=False).how != "example"
    assert und.by_example("不办了", set()) is None
