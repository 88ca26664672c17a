"""Knowledge-base loading and validation: the shipped KB is sound, and every mistake a staff member
can make in the YAML is reported with file, line and a hint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flows.policy_qa.kb import KBError, load_kb, load_synonyms, load_userdict

ROOT = Path(__file__).resolve().parents[2]
KB = ROOT / "data/kb/policy.yaml"
SYN = ROOT / "data/kb/synonyms.yaml"
UD = ROOT / "data/kb/userdict.txt"


def write(tmp_path: Path, text: str, name: str = "kb.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --------------------------------------------------------------------------- the shipped files


def test_shipped_kb_is_valid_and_phone_sized() -> None:
    entries = load_kb([KB])
    assert len(entries) >= 80
    for e in entries:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", e.id)
        assert e.question and e.answer and e.tags, e.id
        assert e.source, f"{e.id}: every entry names its legal/policy source"
        assert len(e.answer) <= 300, f"{e.id}: answer is {len(e.answer)} characters"
        assert e.updated


def test_shipped_kb_covers_the_topics_asked_for() -> None:
    tags = {t for e in load_kb([KB]) for t in e.tags}
    for topic in ("优待证", "优待目录", "退役金", "自主就业", "安排工作", "退休", "伤残", "评残", "抚恤补助", "医疗",
                  "养老保险", "住房", "创业", "税收", "培训", "教育", "招录招聘", "光荣牌", "立功喜报", "烈士",
                  "祭扫", "寻亲", "安葬", "档案", "户口", "随军家属", "子女教育", "交通", "景区", "帮扶", "法律援助",
                  "信访", "心理服务", "志愿服务", "服务站", "报到"):
        assert topic in tags, topic


def test_shipped_kb_never_invents_article_numbers_for_unsure_sources() -> None:
    # Article numbers are only given where the text is certain; everything else names the document.
    cited = [e for e in load_kb([KB]) if re.search(r"第[一二三四五六七八九十百0-9]+条", e.source)]
    assert {e.id for e in cited} <= {"lump_sum_tax_free"}


def test_shipped_synonyms_and_userdict_load() -> None:
    syn = load_synonyms(SYN)
    assert syn["咋"] == "怎么" and syn["优待卡"] == "优待证"
    words = {w for w, _, _ in load_userdict(UD)}
    assert {"优待证", "一次性退役金", "光荣牌"} <= words


# --------------------------------------------------------------------------- errors with file, line and hint

GOOD = """entries:
  - id: pension_transfer
    question: 养老保险怎么转？
    answer: 到社保经办机构办理。
"""


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + """  - id: other
    question: 别的问题
    answer: 别的回答
  - id: pension_transfer
    question: 另一个问题
    answer: 另一个回答
""")
    with pytest.raises(KBError) as ei:
        load_kb([p])
    assert str(ei.value) == (f"{p}:8: duplicate id 'pension_transfer' "
                             "(hint: ids must be unique; the first is at line 2)")
    assert ei.value.line == 8 and ei.value.hint


def test_duplicate_id_across_files_names_the_other_file(tmp_path: Path) -> None:
    a = write(tmp_path, GOOD, "a.yaml")
    b = write(tmp_path, GOOD.replace("养老保险怎么转", "另一个"), "b.yaml")
    with pytest.raises(KBError, match=r"b\.yaml:2: duplicate id .*first is at .*a\.yaml:2"):
        load_kb([a, b])


@pytest.mark.parametrize(("text", "line", "pattern"), [
    ("entries:\n  - id: x\n    question: 问\n    answer: ''\n", 4, r"answer is empty"),
    ("entries:\n  - id: x\n    question: 问\n    answer:\n", 4, r"answer is missing"),
    ("entries:\n  - id: x\n    answer: 答\n", 2, r"question is missing"),
    ("entries:\n  - id: Pension-Transfer\n    question: 问\n    answer: 答\n", 2, r"not snake_case"),
    ("entries:\n  - id: x\n    question: 问\n    answer: 答\n    anwser: 答\n", 5, r"unknown key 'anwser'.*did you mean 'answer'"),
    ("entries:\n  - id: x\n    question: 问\n    answer: 答\n    updated: 明天\n", 5, r"not a date"),
    ("entries:\n  - id: x\n    question: 问\n    answer: 答\n    links: [ftp://x]\n", 5, r"not a web address"),
    ("entries:\n  - id: x\n    question: 问\n    answer: 答\n    alternates: {a: b}\n", 5, r"must be a list"),
    ("entries:\n  - id: x\n    question: 问\n    answer: 答\n  - id: y\n    question: 问？\n    answer: 答\n", 5,
     r"also a question of 'x'"),
    ("entries:\n  - id: x\n    question: [问\n", 4, r"YAML syntax error"),
    ("questions:\n  - id: x\n", 1, r"no 'entries:' list"),
    ("entries:\n  - just text\n", 2, r"entry 1 is not a mapping"),
])
def test_mistakes_are_reported_with_line_and_hint(tmp_path: Path, text: str, line: int, pattern: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(KBError) as ei:
        load_kb([p])
    assert ei.value.line == line, str(ei.value)
    assert re.search(pattern, str(ei.value)), str(ei.value)
    assert str(ei.value).startswith(f"{p}:{line}: ")
    assert "(hint: " in str(ei.value)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(KBError, match="file not found"):
        load_kb([tmp_path / "nope.yaml"])
    with pytest.raises(KBError, match="file is empty"):
        load_kb([write(tmp_path, "")])
    with pytest.raises(KBError, match="no entries"):
        load_kb([write(tmp_path, "entries: []\n")])


def test_overlong_answer_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, f"entries:\n  - id: x\n    question: 问\n    answer: {'长' * 700}\n")
    with pytest.raises(KBError, match=r":4: .*700 characters.*phone-sized"):
        load_kb([p])


def test_optional_fields_are_read(tmp_path: Path) -> None:
    p = write(tmp_path, """entries:
  - id: x
    question: 问题？
    alternates: [另一种问法, 问题？]
    answer: 回答
    tags: 社保
    keywords: [关键词]
    source: 某某条例
    updated: 2025-01-31
    links: [{title: 指南, url: 'https://example.org/a'}, 'https://example.org/b']
""")
    (e,) = load_kb([p])
    assert e.alternates == ("另一种问法",)  # the question itself is not repeated
    assert e.tags == ("社保",) and e.keywords == ("关键词",) and e.source == "某某条例"
    assert e.updated == "2025-01-31"
    assert e.links == (("指南", "https://example.org/a"), ("https://example.org/b", "https://example.org/b"))
    assert e.texts == ("问题？", "另一种问法") and e.line == 2 and e.file == str(p)


def test_synonym_conflicts_and_bad_userdict(tmp_path: Path) -> None:
    p = write(tmp_path, "synonyms:\n  怎么: [咋, 如何]\n  办理: [咋]\n", "syn.yaml")
    with pytest.raises(KBError, match=r"syn\.yaml:3: '咋' is a synonym of both '怎么' and '办理'.*line 2"):
        load_synonyms(p)
    with pytest.raises(KBError, match="no 'synonyms:' mapping"):
        load_synonyms(write(tmp_path, "- a\n", "syn2.yaml"))
    u = write(tmp_path, "# comment\n优待证 20 n\n光荣牌\n一 二 三 四\n", "ud.txt")
    with pytest.raises(KBError, match=r"ud\.txt:4: too many fields"):
        load_userdict(u)
    assert load_userdict(write(tmp_path, "优待证 20 n\n光荣牌\n", "ud2.txt")) == [("优待证", 20, "n"), ("光荣牌", None, None)]


# --------------------------------------------------------------------------- CLI: one line, exit 2


def test_cli_reports_a_bad_kb_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from bot.commands import qa

    bad = write(tmp_path, GOOD + GOOD.split("\n", 1)[1])
    parser = argparse.ArgumentParser()
    qa.register(parser.add_subparsers())
    for argv in (["qa", "ask", "--kb", str(bad), "--no-encoder", "问题"],
                 ["qa", "eval", "--kb", str(bad), "--no-encoder", "--cases", str(bad)]):
        args = parser.parse_args(argv)
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0
        assert f"{bad}:5: duplicate id 'pension_transfer'" in err and "Traceback" not in err
