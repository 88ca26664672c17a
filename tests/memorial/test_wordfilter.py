"""The sensitive-word filter: evasions are caught, ordinary tributes are not, staff edits apply live."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.yamlfile import YamlFileError
from flows.memorial.wordfilter import WordFilter, fold
from tests.conftest import ROOT

LIST = ROOT / "data" / "memorial" / "sensitive_words.txt"


@pytest.fixture(scope="module")
def wf() -> WordFilter:
    return WordFilter.from_file(LIST)


@pytest.mark.parametrize(("text", "hit"), [
    ("傻逼", "傻逼"),
    ("傻 逼", "傻逼"),                 # spaces between characters
    ("傻*逼", "傻逼"),                 # symbols between characters
    ("傻.逼!", "傻逼"),
    ("傻\u200b逼", "傻逼"),            # zero-width space
    ("傻\u3000逼", "傻逼"),            # full-width space
    ("加 ＶＸ 有好礼", "加vx"),         # full-width letters
    ("加微信 abc123", "加微信"),
    ("代開發票", "代开发票"),            # traditional characters
    ("專業代 開 發 票", "代开发票"),
    ("捌玖陆肆", "8964"),               # digit variants: 大写
    ("八九六四", "8964"),               # Chinese numerals
    ("８９６４", "8964"),               # full-width digits
    ("⑧⑨⑥④", "8964"),                 # circled digits
    ("法 轮 功", "法轮功"),
    ("英雄是假的吧", "英雄是假的"),
])
def test_evasions_are_caught(wf: WordFilter, text: str, hit: str) -> None:
    assert hit in wf.hits(text), (text, fold(text), wf.hits(text))


@pytest.mark.parametrize("text", [
    "英雄永垂不朽", "致敬英烈，缅怀先烈！", "您为祖国献出了生命，我们永远怀念您。", "一路走好，英雄安息",
    "1951年牺牲于上甘岭，年仅二十一岁", "在节日你们守护着我们", "向东突围时壮烈牺牲", "为国捐躯，死而后已",
    "开发区的孩子们来看您了", "山河无恙，家国安宁", "尼玛次仁烈士千古",
])
def test_ordinary_tributes_pass(wf: WordFilter, text: str) -> None:
    assert wf.hits(text) == []


def test_fold_is_what_both_sides_meet_in() -> None:
    assert fold("代開發票 ８９６４") == "代开发票8964"
    assert fold("Ｓ Ｂ") == "sb"


def test_staff_edits_apply_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# comment\n坏词\n", encoding="utf-8")
    wf = WordFilter.from_file(path)
    assert wf.hits("这是坏 词") == ["坏词"]
    assert wf.current(every_s=0) is wf  # unchanged file: the same filter
    path.write_text("坏词\n新词  # added by staff\n", encoding="utf-8")
    os.utime(path, (time.time() + 5, time.time() + 5))
    fresh = wf.current(every_s=0)
    assert fresh is not wf and fresh.hits("新·词") == ["新词"]
    # A broken edit keeps the working list (and logs); the next good edit applies.
    path.write_text("坏词\n***\n", encoding="utf-8")
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert fresh.current(every_s=0) is fresh


def test_bad_entry_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("好词\n\n  ！！  \n", encoding="utf-8")
    with pytest.raises(YamlFileError) as e:
        WordFilter.from_file(path)
    assert e.value.line == 3 and "no letters" in str(e.value)


def test_missing_list_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(YamlFileError, match="word list not found"):
        WordFilter.from_file(tmp_path / "nope.txt")
