"""Conversation scripts (tests/scripts/*.yaml and tests/*/scripts/*.yaml) run against the in-process bot
through real signed, encrypted XML, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_config
from tests.helpers import run_chat_script

SCRIPTS = sorted((ROOT / "tests").glob("scripts/*.yaml"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
async def test_script(db_url: str, script: Path) -> None:
    cfg = make_config(db_url, bot__fallback_flow="help")
    assert await run_chat_script(cfg, script) > 0


def test_the_cli_runs_the_same_scripts(tmp_path: Path) -> None:
    """`vetbot chat --script` in a fresh process: nothing the test process imported (the core ticks, say)
    may be what makes a script pass."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VETBOT_")}
    env.update(PYTHONPATH=str(ROOT), VETBOT_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
               VETBOT_BOT__FALLBACK_FLOW="help")
    cfg = str(ROOT / "config.example.yaml")

    def vetbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, cwd=str(tmp_path),
                              capture_output=True, text=True, timeout=120)

    assert vetbot("db", "upgrade", "-c", cfg).returncode == 0
    done = vetbot("chat", "-c", cfg, "--script", str(ROOT / "tests" / "scripts" / "core_commands.yaml"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("steps") and "ok:" in done.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("as: u_cli\nsteps:\n  - send: 帮助\n    expect: 这句话不会出现\n", encoding="utf-8")
    failed = vetbot("chat", "-c", cfg, "--script", str(broken))
    assert failed.returncode == 1 and "broken.yaml:3:" in failed.stderr
