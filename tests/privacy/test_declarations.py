"""Every table declares its personal data: a table or text column added on another branch without saying
what it holds (and what erasure does with it) fails here, so erasure can never silently forget it."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text

from bot.config import PrivacyConfig
from storage.base import Base
from storage.models import import_all
from storage.privacy import DELETE, Declaration, Retention, check, declarations
from tests.conftest import ROOT


def _copy_schema() -> MetaData:
    import_all()
    md = MetaData()
    for t in Base.metadata.tables.values():
        t.to_metadata(md)
    return md


def test_every_table_and_text_column_of_the_schema_is_declared() -> None:
    import_all()
    assert check() == []
    assert set(declarations()) == set(Base.metadata.tables)


def test_a_new_table_without_a_declaration_breaks_the_suite() -> None:
    """What a parallel branch adding e.g. staff console sessions or a nonce cache must do: declare."""
    md = _copy_schema()
    Table("staff_notes", md, Column("id", Integer, primary_key=True), Column("staff_openid", String(64)),
          Column("created_at", DateTime))
    problems = check(md)
    assert len(problems) == 1 and "staff_notes" in problems[0] and "no personal-data declaration" in problems[0]


def test_a_new_column_in_a_declared_table_must_be_classified() -> None:
    md = _copy_schema()
    md.tables["users"].append_column(Column("wechat_nickname", String(64)))
    md.tables["callup_members"].append_column(Column("emergency_contact_phone", Integer))  # not text, but named so
    md.tables["tickets"].append_column(Column("attachment_note", Text))
    problems = check(md)
    assert {p.split(" ")[0] for p in problems} == {"users.wechat_nickname", "callup_members.emergency_contact_phone",
                                                   "tickets.attachment_note"}


def test_an_openid_column_cannot_be_waved_through_as_plain() -> None:
    md = _copy_schema()
    Table("voice_counters", md, Column("openid", String(64), primary_key=True), Column("n", Integer))
    decls = {**declarations(), "voice_counters": Declaration("voice_counters", label="语音次数", plain=("openid",))}
    assert any("looks like an openid" in p for p in check(md, decls))
    ok = {**declarations(), "voice_counters": Declaration("voice_counters", label="语音次数", subject="openid",
                                                          on_erase=DELETE)}
    assert check(md, ok) == []


def test_a_declaration_naming_a_missing_column_or_table_is_reported() -> None:
    md = _copy_schema()
    bad = dataclasses.replace(declarations()["tickets"], personal=("text", "context", "staff_reply", "gone"))
    decls = {**declarations(), "tickets": bad,
             "old_table": Declaration("old_table", label="x", no_personal_data="removed")}
    problems = check(md, decls)
    assert any("tickets.gone" in p for p in problems) and any("'old_table'" in p for p in problems)


def test_retention_rules_name_privacy_config_keys_documented_in_the_example() -> None:
    keys = {f.name for f in dataclasses.fields(PrivacyConfig)}
    example = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))["privacy"]
    used = set()
    for d in declarations().values():
        for r in d.retention:
            if r.key is not None:
                assert r.key in keys, f"{d.table}: retention key privacy.{r.key} is not in PrivacyConfig"
                assert r.key in example, f"privacy.{r.key} missing from config.example.yaml"
                used.add(r.key)
            assert r.note, f"{d.table}: every retention rule needs a note for the README and 我的数据"
    assert used == {k for k in keys if k.endswith("_days") and k != "unfollow_erase_days"}, "a *_days key no rule uses"


def test_every_table_with_personal_data_says_how_long_it_is_kept() -> None:
    for name, d in declarations().items():
        if d.no_personal_data:
            continue
        assert d.retention or d.kept, f"{name}: no retention rule and no `kept` sentence"
        assert d.purpose and d.basis, f"{name}: purpose and legal basis are needed for the README table"


@pytest.mark.parametrize("bad", [{"on_erase": "forget"}, {"mention_action": "hide"}])
def test_declare_refuses_unknown_actions(bad: dict[str, str]) -> None:
    from storage.privacy import declare

    with pytest.raises(ValueError):
        declare(Declaration("x", label="x", subject="openid", **bad))  # type: ignore[arg-type]


def test_retention_describe_says_when_a_rule_is_off() -> None:
    r = Retention("ticket_days", "closed_at", note="回复并关闭 {days} 天后删除")
    assert r.describe({"ticket_days": 365}) == "回复并关闭 365 天后删除"
    assert "不自动删除" in r.describe({"ticket_days": 0})
