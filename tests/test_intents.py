"""Intent catalogue: validation errors name file, line and a hint; matching order and negatives."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.intents import IntentMatcher, load_intents
from bot.yamlfile import YamlFileError
from tests.conftest import ROOT

FLOWS = {"profile", "help", "human", "cancel", "back", "jobs_subscribe", "jobs_unsubscribe", "jobs_search"}


def write(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "intents"
    d.mkdir(exist_ok=True)
    (d / "a.yaml").write_text(text, encoding="utf-8")
    return d


@pytest.mark.parametrize("text,line,needle", [
    ("intents:\n  - id: a\n    flow: nosuch\n    examples: [x]\n", 3, "unknown flow 'nosuch'"),
    ("intents:\n  - id: a\n    flow: profile\n    examples: [x]\n  - id: a\n    flow: help\n    examples: [y]\n", 5,
     "duplicate id 'a'"),
    ("intents:\n  - id: a\n    flow: profile\n    examples: [x]\n    regex: ['(unclosed']\n", 5, "bad regex"),
    ("intents:\n  - id: a\n    flow: profile\n    examples: []\n", 4, "has no examples"),
    ("intents:\n  - id: a\n    flow: profile\n    exampels: [x]\n", 4, "did you mean 'examples'"),
    ("intents:\n  - id: a\n    flow: profle\n    examples: [x]\n", 3, "did you mean 'profile'"),
    ("intents:\n  - id: a\n   flow: profile\n", 3, "YAML syntax error"),
])
def test_validation_errors_name_file_line_and_hint(tmp_path: Path, text: str, line: int, needle: str) -> None:
    d = write(tmp_path, text)
    with pytest.raises(YamlFileError) as e:
        load_intents(d, FLOWS)
    assert e.value.line == line, str(e.value)
    assert needle in str(e.value)
    assert str(e.value).startswith(f"{d / 'a.yaml'}:{line}:")


def matcher(tmp_path: Path) -> IntentMatcher:
    d = write(tmp_path, """
intents:
  - id: job_sub
    flow: jobs_subscribe
    examples: [订阅招聘, 有新岗位通知我]
    keywords: [订阅招聘, 订阅岗位, 招聘提醒]
    negative: [退订, 取消订阅, 不要]
  - id: job_unsub
    flow: jobs_unsubscribe
    examples: [退订招聘, 取消订阅招聘]
    keywords: [退订, 取消订阅]
  - id: job_search
    flow: jobs_search
    examples: [找工作]
    regex: ['^找工作\\s*(?P<words>.*)$']
    menu_keys: [JOB_SEARCH]
  - id: staff_only
    flow: profile
    roles: [staff]
    examples: [发起集结]
    keywords: [发起集结]
""")
    (d / "core.yaml").write_text((ROOT / "intents" / "core.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    return IntentMatcher(load_intents(d, FLOWS))


def test_unsubscribe_never_lands_on_subscribe(tmp_path: Path) -> None:
    m = matcher(tmp_path)
    for text in ("退订招聘", "取消订阅招聘信息", "我不要招聘提醒了，退订", "退订岗位"):
        got = m.match(text)
        assert got.intent is not None and got.intent.id == "job_unsub", (text, got)
    assert m.match("订阅招聘").intent.id == "job_sub"  # type: ignore[union-attr]


def test_order_menu_key_global_regex_keyword_fuzzy(tmp_path: Path) -> None:
    m = matcher(tmp_path)
    assert m.by_menu_key("JOB_SEARCH").id == "job_search"  # type: ignore[union-attr]
    assert m.match("帮助").how == "global"
    r = m.match("找工作 保安 大竹")
    assert (r.intent.id, r.how, r.slots) == ("job_search", "regex", {"words": "保安 大竹"})  # type: ignore[union-attr]
    assert m.match("我想订阅招聘").how == "keyword"
    fuzzy = m.match("有新岗位通知")  # one character off an example
    assert fuzzy.intent is not None and fuzzy.intent.id == "job_sub" and fuzzy.how == "fuzzy"


def test_normalisation_traditional_fullwidth_punctuation(tmp_path: Path) -> None:
    m = matcher(tmp_path)
    assert m.match("訂閱招聘！！").intent.id == "job_sub"  # type: ignore[union-attr]
    assert m.match("幫助").how == "global"
    assert m.match("ｈｅｌｐ").how == "global"


def test_roles_hide_staff_intents(tmp_path: Path) -> None:
    m = matcher(tmp_path)
    assert m.match("发起集结").intent is None or m.match("发起集结").intent.id != "staff_only"  # type: ignore[union-attr]
    assert m.match("发起集结", {"staff"}).intent.id == "staff_only"  # type: ignore[union-attr]


def test_shipped_catalogue_is_valid() -> None:
    from bot.app import load_matcher
    from bot.config import load_config

    m = load_matcher(load_config(ROOT / "config.example.yaml", {}))
    assert len(m.intents) >= 5
    menu = load_config(ROOT / "config.example.yaml", {}).menu
    keys = [b["key"] for top in menu["button"] for b in top.get("sub_button", [top]) if b.get("type") == "click"]
    missing = [k for k in keys if m.by_menu_key(k) is None]
    assert not missing, f"menu keys in config.example.yaml with no intent: {missing}"



@pytest.mark.parametrize(("text", "intent"), [
    ("我要转人工", "human"),              # a global intent's keyword inside a sentence
    ("我想联系工作人员问优待证", "human"),
    ("帮我找工作人员", "human"),          # 找工作 is in it, but a person is asked for
    ("我要找工作人员", "human"),
    ("人工", "human"),
    ("我要找工作 保安", "job_search"),
    ("有什么工作岗位", "job_search"),
    ("有没有社区工作人员的招聘信息", "job_search"),  # 工作人员 as a job title is still a job search
    ("社区工作人员招聘会", "job_search"),
])
def test_shipped_catalogue_routes_requests_for_a_person_to_human(text: str, intent: str) -> None:
    from bot.app import load_matcher
    from bot.config import load_config

    got = load_matcher(load_config(ROOT / "config.example.yaml", {})).match(text)
    assert got.intent is not None and got.intent.id == intent, (text, got.how)

@pytest.mark.parametrize(("typed", "digits", "valid"), [
    ("13800001234", "13800001234", True),
    ("+86 138-0000-1234", "13800001234", True),
    ("１３８００００１２３４", "13800001234", True),       # full-width, as Chinese input methods type it
    ("138０000１２３４", "13800001234", True),            # mixed widths: stored ASCII, usable for SMS
    ("١٣٨٠٠٠٠١٢٣٤", "", False),                         # other scripts' digits are not a phone number
    ("12345", "12345", False),
])
def test_phone_numbers_are_stored_as_ascii_digits(typed: str, digits: str, valid: bool) -> None:
    from bot.text import PHONE_RE, clean_phone

    assert clean_phone(typed) == digits
    assert bool(PHONE_RE.match(clean_phone(typed))) is valid
