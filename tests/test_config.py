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
