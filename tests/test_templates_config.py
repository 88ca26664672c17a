"""templates: under WeChat's rules of today: refused fields with file, line and hint; the preview a
staff member reads before a call-up goes out; the demo's openids; a failed push in the log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from tests.conftest import ROOT

EXAMPLE = ROOT / "config.example.yaml"


@pytest.mark.parametrize(("field", "says"), [
    ("first", "no longer shows 'first'"),
    ("remark", "no longer shows 'remark'"),
    ("keyword1", "历史模板"),
    ("title", "not a WeChat keyword field"),
])
def test_old_template_fields_are_config_errors_with_line_and_hint(tmp_path: Path, field: str, says: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("templates:\n  callup:\n    template_id: T1\n    fields:\n      thing1: \"{title}\"\n"
                 f"      {field}: \"{{place}}\"\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p, {})
    assert str(e.value).startswith(f"{p}:6: templates.callup.fields.{field}: ") and says in str(e.value)


def test_subscribe_fields_kind_and_purposes_are_checked(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("templates:\n  callup:\n    subscribe:\n      template_id: S\n      fields: {remark: x}\n",
                 encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c\.yaml:5: templates\.callup\.subscribe\.fields\.remark"):
        load_config(p, {})
    with pytest.raises(ConfigError, match="one_time or long_term"):
        load_config(EXAMPLE, {"VETBOT_TEMPLATES__CALLUP__SUBSCRIBE__KIND": "forever"})
    with pytest.raises(ConfigError, match=r"templates\.callupp: not a push purpose \(did you mean 'callup'\?\)"):
        load_config(EXAMPLE, {"VETBOT_TEMPLATES__CALLUPP__TEMPLATE_ID": "x"})
    with pytest.raises(ConfigError, match="time_style must be short or full"):
        load_config(EXAMPLE, {"VETBOT_TEMPLATE_RULES__TIME_STYLE": "long"})


def test_the_example_config_obeys_the_rules() -> None:
    from bot.template_rules import field_kind

    cfg = load_config(EXAMPLE, {})
    for purpose, spec in cfg.templates.items():
        assert spec.fields and all(field_kind(n) for n in spec.fields), purpose
        assert len(spec.fields) <= 5
    # The call-up: title, place, time; the instruction lives on the answer page.
    assert set(cfg.templates["callup"].fields.values()) == {"{title}", "{place}", "{time}"}


def test_preview_shows_the_card_and_every_cut(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    with pytest.raises(SystemExit) as e:
        main(["templates", "preview", "callup", "-c", str(EXAMPLE),
              "--set", "place=城南水文站东侧二号堤坝北端集合点（沿河堤路进入）"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "应急集结通知" in out and "集合地点" in out and "城南水文站东侧二号堤坝北端集合点（沿河…" in out
    assert "! thing2:" in out and "shortened" in out and "first" not in out
    assert "subscribe (long_term)" in out and "disaster warning" in out
    with pytest.raises(SystemExit):
        main(["templates", "preview", "broadcast", "-c", str(EXAMPLE), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["template_allowed"] is False and data["cards"][0]["fields"][0]["name"] == "thing1"
    with pytest.raises(SystemExit) as e:
        main(["templates", "preview", "nosuch", "-c", str(EXAMPLE)])
    assert e.value.code == 2 and "no templates.nosuch" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["templates", "preview", "all", "-c", str(EXAMPLE), "--json"])
    assert e.value.code == 0 and len(json.loads(capsys.readouterr().out)) == 8


async def test_the_readmes_openids_reach_the_demo_fake_and_a_failure_is_logged_once(
        db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # The README's examples use short ids (my_openid, staff_demo); the fake's strict rule (16-64
    # characters) refused every push to them with 40003 and nothing in the log said so.
    from bot.clock import FakeClock
    from bot.fake_wechat import FakeWeChatServer, templates_of
    from bot.outbox import build_sender
    from storage.db import Database
    from storage.outbox import Push, enqueue
    from tests.conftest import make_config

    async with FakeWeChatServer() as fake:
        cfg = make_config(db_url, wechat__api_base=fake.base_url)
        fake.state.add_templates(templates_of(cfg))
        clock = FakeClock()
        db = Database(db_url)
        sender = build_sender(cfg, db, clock)
        try:
            async with db.session() as s:
                await enqueue(s, Push(openid="my_openid", purpose="notice", key="a", text="周五开会的秘密内容",
                                      data={"title": "通知", "content": "周五开会"}), clock.now())
            with caplog.at_level(logging.WARNING, logger="vetbot.outbox"):
                await sender.deliver_due()
            failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
            assert len(failed) == 1 and "40003" in failed[0] and "--with-fake-wechat" in failed[0]
            assert "秘密" not in failed[0] and "my_openid" not in failed[0]
            fake.state.openid_rule = "demo"  # what `vetbot serve --with-fake-wechat` sets
            async with db.session() as s:
                await enqueue(s, Push(openid="my_openid", purpose="notice", key="b", text="x",
                                      data={"title": "通知", "content": "周五开会"}), clock.now())
            report = await sender.deliver_due()
            assert report.sent == 1
        finally:
            await sender.close()
            await db.close()


@pytest.mark.slow
async def test_the_demo_serves_the_readmes_ids_with_the_configs_templates(tmp_path: Path) -> None:
    """`vetbot serve --with-fake-wechat` (what ./scripts/run.sh runs): the fake knows the config's templates
    and takes the README's short ids; the README's `vetbot chat --as my_openid` reaches it."""
    import asyncio
    import os
    import socket
    import sys

    import aiohttp

    from storage.db import upgrade

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    bot_port, api_port = free_port(), free_port()
    db = tmp_path / "demo.db"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{db}")  # Alembic's env runs its own event loop
    env = {k: v for k, v in os.environ.items() if not k.startswith("VETBOT_")}
    env.update({"PYTHONPATH": str(ROOT), "VETBOT_DATABASE__URL": f"sqlite+aiosqlite:///{db}",
                "VETBOT_WECHAT__API_BASE": f"http://127.0.0.1:{api_port}", "VETBOT_QA__USE_ENCODER": "false",
                "VETBOT_SERVER__PORT": str(bot_port)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "serve", "-c", str(EXAMPLE), "--with-fake-wechat",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=str(tmp_path))
    try:
        assert proc.stdout is not None
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
            assert line, "vetbot serve stopped"
            if "vetbot serving on" in line:
                break
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{api_port}"
            async with http.get(base + "/__fake__/config") as r:
                assert (await r.json())["openid_rule"] == "demo"
            async with http.get(base + "/__fake__/templates") as r:
                templates = (await r.json())["templates"]
            cfg = load_config(EXAMPLE, {})
            assert templates[cfg.templates["callup"].template_id]["type"] == "template"
            assert templates[cfg.templates["callup"].subscribe.template_id]["kind"] == "long_term"
            # The README's chat example talks to the bot as `my_openid`.
            chat = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "chat", "-c", str(EXAMPLE), "--url",
                f"http://127.0.0.1:{bot_port}/wechat", "--as", "my_openid",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=env, cwd=str(tmp_path))
            out, err = await asyncio.wait_for(chat.communicate("帮助\n/allow callup\n/quit\n".encode()), 60)
            assert chat.returncode == 0, err.decode()[-1000:]
            assert "回复数字" in out.decode() or "1." in out.decode()
            assert "已允许订阅通知" in out.decode()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
