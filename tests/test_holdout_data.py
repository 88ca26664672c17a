"""The held-out data files load and are well-formed (they are measured on, never tuned on).

Only shape is checked here: ids that exist, kinds that are known, counts the issue asks for, and that no
question was copied from its own knowledge base. How well the bot does on them is reported elsewhere.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import unicodedata
from pathlib import Path
from typing import Any

import opencc
import pytest
import yaml

from bot.intents import load_intents
from flows.policy_qa.evaluate import KINDS, load_cases
from flows.policy_qa.kb import load_kb
from tests.conftest import ROOT

KBS = ROOT / "tests" / "qa" / "kbs"
INTENTS = ROOT / "tests" / "intents"
ANSWERS = ROOT / "tests" / "answers"
# Written for intents the catalogue does not have (yet); the routing file's header explains each.
EXTRA_INTENTS: set[str] = set()
# Every user-facing intent the routing set was written for must keep at least this many messages.
ROUTED = ("job_search", "job_subscribe", "job_mine", "job_unsubscribe", "job_pause", "job_resume", "memorial",
          "memorial_tribute", "martyr_search", "memorial_remind", "memorial_unremind", "profile", "human",
          "help", "callup_bind", "callup_my_team", "callup_leave", "callup_resume", "callup_answer",
          "callup_create", "callup_status", "callup_close", "broadcast", "policy_qa")
_T2S = opencc.OpenCC("t2s")


def _norm(text: str) -> str:
    """Width, traditional -> simplified, no punctuation or spaces: 'the same words' for copy checks."""
    return re.sub(r"[\W_]+", "", _T2S.convert(unicodedata.normalize("NFKC", text))).lower()


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _kb_dirs() -> list[Path]:
    return sorted(p for p in KBS.iterdir() if (p / "kb.yaml").is_file())


def test_there_are_at_least_a_short_and_a_large_knowledge_base() -> None:
    sizes = {p.name: len(load_kb([p / "kb.yaml"])) for p in _kb_dirs()}
    assert sizes.get("city_faq", 0) >= 120 and 20 <= sizes.get("township_short", 0) <= 30, sizes


@pytest.mark.parametrize("kb_dir", _kb_dirs(), ids=lambda p: p.name)
def test_held_out_kb_is_written_like_another_bureaus(kb_dir: Path) -> None:
    entries = load_kb([kb_dir / "kb.yaml"])
    shipped = {e.id for e in load_kb([ROOT / "data" / "kb" / "policy.yaml"])}
    shipped_texts = {_norm(t) for e in load_kb([ROOT / "data" / "kb" / "policy.yaml"]) for t in e.texts}
    for e in entries:
        assert not e.keywords, f"{e.id}: held-out KBs have no keywords"
        assert len(e.alternates) <= 2, f"{e.id}: few alternates (0-2), as a bureau would write"
        assert e.id not in shipped, f"{e.id}: do not reuse the shipped KB's ids"
        assert _norm(e.question) not in shipped_texts, f"{e.id}: question copied from data/kb/policy.yaml"


@pytest.mark.parametrize("kb_dir", _kb_dirs(), ids=lambda p: p.name)
def test_held_out_cases_cover_every_kind_and_only_name_real_entries(kb_dir: Path) -> None:
    entries = load_kb([kb_dir / "kb.yaml"])
    ids = {e.id for e in entries}
    own_texts = {_norm(t): e.id for e in entries for t in e.texts}
    cases = load_cases(kb_dir / "cases.yaml")
    kinds = collections.Counter(c.kind for c in cases)
    per_kind = 20 if len(entries) >= 100 else 6
    assert set(kinds) == set(KINDS), kinds
    for kind in KINDS:
        if kind != "out_of_scope":
            assert kinds[kind] >= per_kind, (kind, kinds[kind])
    assert kinds["out_of_scope"] >= 0.15 * len(cases), kinds
    for c in cases:
        where = f"{kb_dir.name}/cases.yaml:{c.line}"
        assert (c.expect is None) == (c.kind == "out_of_scope"), where
        assert c.expect is None or c.expect in ids, f"{where}: unknown id {c.expect}"
        assert _norm(c.q) not in own_texts, f"{where}: copied from the KB's question/alternates"
        if c.kind == "traditional":
            assert _T2S.convert(c.q) != c.q, f"{where}: no traditional characters"
        if c.kind == "keyword":
            assert 2 <= len(c.q) <= 6, f"{where}: keyword cases are 2-6 characters"
    assert len({_norm(c.q) for c in cases}) == len(cases), "duplicate questions"


def _catalogue() -> dict[str, str]:
    return {i.id: i.flow for i in load_intents(ROOT / "intents")}


def test_routing_holdout_names_real_intents_and_covers_each_one() -> None:
    flows = _catalogue()
    msgs = _yaml(INTENTS / "routing_holdout.yaml")["messages"]
    assert len(msgs) >= 200
    for m in msgs:
        assert isinstance(m["text"], str) and m["text"].strip(), m
        assert m["intent"] in flows or m["intent"] in EXTRA_INTENTS, m
        if m["intent"] in flows and m["intent"] not in EXTRA_INTENTS:
            assert m["flow"] == flows[m["intent"]], m
        assert m.get("role", "user") in ("user", "volunteer", "staff"), m
        assert m.get("context") in (None, "open_callup"), m
    counts = collections.Counter(m["intent"] for m in msgs)
    assert all(counts[i] >= 2 for i in ROUTED), {i: counts[i] for i in ROUTED if counts[i] < 2}
    assert len({m["text"] for m in msgs}) == len(msgs), "duplicate messages"


def test_smalltalk_holdout_has_both_sides() -> None:
    flows = _catalogue()
    data = _yaml(INTENTS / "smalltalk_holdout.yaml")
    small, other = data["smalltalk"], data["not_smalltalk"]
    assert len(small) >= 80 and len(other) >= 40
    assert all(isinstance(x["text"], str) and x["text"].strip() and x["kind"] for x in small)
    for m in other:
        assert m["intent"] in flows or m["intent"] in EXTRA_INTENTS, m
    texts = [x["text"] for x in small + other]
    assert len(set(texts)) == len(texts), "duplicate messages"


def test_own_words_holdout_is_consistent() -> None:
    data = _yaml(ANSWERS / "own_words_holdout.yaml")
    ref = data["reference"]["date"]
    assert isinstance(ref, dt.date)
    calls = data["callup_answers"]
    assert len(calls) >= 40 and {c["meaning"] for c in calls} == {"yes", "late", "no"}
    for c in calls:
        assert isinstance(c["text"], str)
        assert ("eta_min" in c) == (c["meaning"] == "late"), c
    yes_no = data["yes_no"]
    assert len(yes_no) >= 40 and {c["meaning"] for c in yes_no} == {"yes", "no"}
    dates = data["dates"]
    assert len(dates) >= 40
    for d in dates:
        assert isinstance(d["text"], str) and isinstance(d["date"], dt.date), d
        if "days" in d:
            assert d["date"] == ref + dt.timedelta(days=d["days"]), d
    towns = data["townships"]
    assert len(towns["mentions"]) >= 40
    for m in towns["mentions"]:
        assert isinstance(m["text"], str) and m["township"] in [*towns["list"], None], m
