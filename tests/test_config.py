"""The configuration contract: unknown keys, types, env overrides, YAML errors with file:line and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from tests.conftest import ROOT

EXAMPLE = ROOT / "config.example.yaml"


def test_example_config_loads_and_is_fully_local() -> None:
    cfg = load_config(EXAMPLE, {})
    assert cfg.database.url.startswith("sqlite+aiosqlite:///")
    assert cfg.wechat.api_base.startswith("http://127.0.0.1")
    assert len(cfg.wechat.encoding_aes_key) == 43
    assert cfg.path("data/kb/policy.yaml") == ROOT / "data/kb/policy.yaml"


def test_env_overrides_every_key_and_keeps_text_as_text() -> None:
    cfg = load_config(EXAMPLE, {
        "VETBOT_WECHAT__TOKEN": "007", "VETBOT_DATABASE__URL": "postgresql+asyncpg://u:p@h:5432/db",
        "VETBOT_SERVER__PORT": "9090", "VETBOT_OUTBOX__ENABLED": "false", "VETBOT_BOT__STAFF_OPENIDS": "a,b",
        "VETBOT_QA__KB": "[x.yaml, y.yaml]",
    })
    assert cfg.wechat.token == "007"
    assert cfg.database.url == "postgresql+asyncpg://u:p@h:5432/db"
    assert cfg.server.port == 9090 and cfg.outbox.enabled is False
    assert cfg.bot.staff_openids == ["a", "b"] and cfg.qa.kb == ["x.yaml", "y.yaml"]


def test_unknown_key_names_path_line_and_nearest_name(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("server:\n  port: 8080\n  pathh: /wx\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert str(e.value) == f"{p}:3: unknown key 'server.pathh' (did you mean 'path'?)"


def test_unknown_env_key_says_which_variable() -> None:
    with pytest.raises(ConfigError, match=r"VETBOT_SERVER__PORTT.*did you mean 'port'"):
        load_config(EXAMPLE, {"VETBOT_SERVER__PORTT": "1"})


def test_wrong_type_names_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("server:\n  host: 0.0.0.0\n  port: eighty\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r":3: server.port: expected a whole number"):
        load_config(p, {})


def test_yaml_typo_gives_line_and_hint(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("server:\n  host: a\n port: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c.yaml:3: YAML syntax error.*hint"):
        load_config(p, {})


def test_bad_aes_key_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="43 characters"):
        load_config(EXAMPLE, {"VETBOT_WECHAT__ENCODING_AES_KEY": "short"})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml", {})


def test_the_example_lists_every_key_of_every_section() -> None:
    """config.example.yaml must stay the full schema: every section of Config, and every key of each
    section, appears in it (the other direction, unknown keys, is an error at load time)."""
    from dataclasses import fields

    import yaml

    from bot.config import Config

    text = EXAMPLE.read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    for f in fields(Config):
        if f.metadata.get("internal"):
            continue
        assert f"\n{f.name}:" in "\n" + text, f"section {f.name}: missing from config.example.yaml"
        section = Config.__dataclass_fields__[f.name].default_factory()  # type: ignore[misc]
        if not hasattr(section, "__dataclass_fields__"):
            continue
        missing = [k.name for k in fields(section) if not k.metadata.get("internal") and k.name not in doc[f.name]]
        assert not missing, f"{f.name}: keys missing from config.example.yaml: {missing}"


# --- dangerous values refused at start (issue 14, item 8) -----------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_negative_timestamp_window_is_refused_with_file_line_and_hint(tmp_path: Path) -> None:
    p = _write(tmp_path, "server:\n  port: 8080\n  timestamp_window_s: -5\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert str(e.value).startswith(f"{p}:3: server.timestamp_window_s: -5 is out of range (hint: use 0 (off)")


@pytest.mark.parametrize(("key", "bad"), [
    ("server.max_body_bytes", "0"), ("server.max_body_bytes", "99999999999"), ("server.port", "0"),
    ("server.reply_budget_s", "0"), ("server.reply_budget_s", "7"), ("server.header_timeout_s", "0"),
    ("server.body_timeout_s", "-1"), ("server.keepalive_timeout_s", "0"), ("server.max_connections", "0"),
    ("database.pool_size", "0"), ("wechat.timeout_s", "0"), ("bot.dedup_ttl_h", "0"),
    ("bot.conversation_timeout_min", "0"), ("bot.max_reasks", "-1"), ("bot.fuzzy_accept", "101"),
    ("outbox.kefu_window_h", "0"), ("outbox.kefu_quota_after_message", "-1"), ("scheduler.tick_s", "-5"),
    ("sms.timeout_s", "0"), ("callup.link_ttl_h", "0"), ("callup.renotify_after_min", "-10"),
    ("callup.renotify_max", "-1"), ("memorial.reminder_hour", "24"), ("memorial.page_size", "0"),
    ("memorial.messages_per_day", "0"), ("memorial.link_ttl_h", "-1"), ("jobs.page_size", "9"),
    ("jobs.digest_size", "0"), ("jobs.link_ttl_days", "0"),
])
def test_meaningless_numbers_are_refused(tmp_path: Path, key: str, bad: str) -> None:
    section, name = key.split(".")
    p = _write(tmp_path, f"{section}:\n  {name}: {bad}\n")
    with pytest.raises(ConfigError, match=rf"^{p}:2: {key}: .* is out of range \(hint: use "):
        load_config(p, {})
    env = f"VETBOT_{section.upper()}__{name.upper()}"
    with pytest.raises(ConfigError, match=rf"environment variable {env}: {key}: "):
        load_config(EXAMPLE, {env: bad})


def test_per_type_callup_timing_is_checked_too(tmp_path: Path) -> None:
    p = _write(tmp_path, "callup:\n  types:\n    地震:\n      widen_after_min: 0\n")
    with pytest.raises(ConfigError, match=rf"^{p}:4: callup.types.地震.widen_after_min: 0 is out of range"):
        load_config(p, {})


def test_zero_timestamp_window_still_means_off() -> None:
    assert load_config(EXAMPLE, {"VETBOT_SERVER__TIMESTAMP_WINDOW_S": "0"}).server.timestamp_window_s == 0


def test_unknown_time_zone_is_refused_with_the_nearest_name(tmp_path: Path) -> None:
    p = _write(tmp_path, "bot:\n  fallback_flow: help\n  timezone: Asia/Shanghi\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert str(e.value) == (f"{p}:3: bot.timezone 'Asia/Shanghi' is not a known time zone "
                            "(hint: did you mean 'Asia/Shanghai'?)")


def test_duplicate_keys_in_the_config_are_refused_with_both_lines(tmp_path: Path) -> None:
    p = _write(tmp_path, "server:\n  port: 8080\n  secret_key: a\nwechat:\n  token: t\nserver:\n  port: 9090\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert str(e.value) == (f"{p}:6: duplicate key 'server' (the first is at line 1) "
                            "(hint: remove one of the two, or merge their values into one)")
    p = _write(tmp_path, "wechat:\n  token: a\n  token: b\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: duplicate key 'token' \(the first is at line 2\)"):
        load_config(p, {})
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        load_config(EXAMPLE, {"VETBOT_JOBS__CATEGORIES": "{a: [x], a: [y]}"})


def test_wechat_mode_must_agree_with_the_aes_key(tmp_path: Path) -> None:
    assert load_config(EXAMPLE, {}).wechat_mode == "safe"
    assert load_config(EXAMPLE, {"VETBOT_WECHAT__ENCODING_AES_KEY": ""}).wechat_mode == "plain"
    assert load_config(EXAMPLE, {"VETBOT_WECHAT__MODE": "compat"}).wechat_mode == "compat"
    with pytest.raises(ConfigError, match=r"wechat.mode is safe but wechat.encoding_aes_key is empty \(hint: "):
        load_config(EXAMPLE, {"VETBOT_WECHAT__MODE": "safe", "VETBOT_WECHAT__ENCODING_AES_KEY": ""})
    with pytest.raises(ConfigError, match=r"wechat.mode is plain but wechat.encoding_aes_key is set \(hint: "):
        load_config(EXAMPLE, {"VETBOT_WECHAT__MODE": "plain"})
    p = _write(tmp_path, "wechat:\n  encoding_aes_key: \"\"\n  mode: secure\n")
    with pytest.raises(ConfigError, match=rf"^{p}:3: wechat.mode 'secure' is not a mode \(hint: safe, compat or plain"):
        load_config(p, {})


def test_empty_wechat_token_is_refused_where_the_callback_is_built(tmp_path: Path) -> None:
    from bot.config import check_callback

    p = _write(tmp_path, "wechat:\n  token: \"\"\n")
    with pytest.raises(ConfigError) as e:
        check_callback(load_config(p, {}))
    assert str(e.value).startswith(f"{p}:2: wechat.token is empty") and "hint: copy 令牌(Token)" in str(e.value)
    with pytest.raises(ConfigError, match=r"wechat.token not set\): wechat.token is empty"):
        check_callback(load_config(_write(tmp_path, "server:\n  port: 8080\n", "d.yaml"), {}))


def test_bad_logging_level_and_inverted_fuzzy_scores_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"logging.level 'verbose' is not a level"):
        load_config(EXAMPLE, {"VETBOT_LOGGING__LEVEL": "verbose"})
    with pytest.raises(ConfigError, match=r"bot.fuzzy_suggest \(90\) is above bot.fuzzy_accept \(88\)"):
        load_config(EXAMPLE, {"VETBOT_BOT__FUZZY_SUGGEST": "90"})


def test_duplicate_keys_are_refused_in_every_yaml_the_bot_loads(tmp_path: Path) -> None:
    from bot.commands.menu import MenuError, load_menu
    from bot.intents import load_intents
    from bot.yamlfile import YamlFileError, load_yaml
    from flows.policy_qa.kb import KBError, load_kb, load_synonyms

    d = tmp_path / "intents"
    d.mkdir()
    (d / "a.yaml").write_text("intents:\n  - id: hello\n    flow: help\n    examples: [你好]\n"
                              "    examples: [您好]\n", encoding="utf-8")
    with pytest.raises(YamlFileError) as e:
        load_intents(d, {"help"})
    assert str(e.value) == (f"{d / 'a.yaml'}:5: duplicate key 'examples' (the first is at line 4) "
                            "(hint: remove one of the two, or merge their values into one)")
    kb = _write(tmp_path, "entries:\n  - id: a\n    question: 问\n    answer: 答一\n    answer: 答二\n", "kb.yaml")
    with pytest.raises(KBError, match=r"kb.yaml:5: duplicate key 'answer' \(the first is at line 4\)"):
        load_kb([kb])
    syn = _write(tmp_path, "synonyms:\n  怎么: [咋]\n  什么: [啥]\n  怎么: [咋样]\n", "syn.yaml")
    with pytest.raises(KBError, match=r"syn.yaml:4: duplicate key '怎么' \(the first is at line 2\)"):
        load_synonyms(syn)
    script = _write(tmp_path, "as: u1\nas: u2\nsteps: []\n", "script.yaml")
    with pytest.raises(YamlFileError, match=r"script.yaml:2: duplicate key 'as'"):
        load_yaml(script)
    menu = _write(tmp_path, "button:\n  - {type: click, name: 甲, key: A, key: B}\n", "menu.yaml")
    with pytest.raises(MenuError, match=r"menu.yaml:2: .*duplicate key 'key'"):
        load_menu({}, menu)


def test_unknown_role_in_intents_is_refused(tmp_path: Path) -> None:
    from bot.intents import load_intents
    from bot.yamlfile import YamlFileError

    d = tmp_path / "intents"
    d.mkdir()
    (d / "a.yaml").write_text("intents:\n  - id: roster\n    flow: help\n    examples: [名单]\n"
                              "    roles: [staf]\n", encoding="utf-8")
    with pytest.raises(YamlFileError) as e:
        load_intents(d, {"help"})
    assert str(e.value) == f"{d / 'a.yaml'}:5: intent 'roster': unknown role 'staf' (hint: did you mean 'staff'?)"
    (d / "a.yaml").write_text("intents:\n  - id: roster\n    flow: help\n    examples: [名单]\n"
                              "    roles: [admin, staff]\n", encoding="utf-8")
    assert load_intents(d, {"help"})[0].roles == frozenset({"admin", "staff"})
