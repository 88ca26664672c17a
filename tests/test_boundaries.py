"""The layers hold: ``lint-imports`` checks the import-linter contracts in ``pyproject.toml`` (bot above
flows above storage, flows reach the runtime only through ``flows.api``, a flow never sees aiohttp or
the WeChat client, storage imports nothing of ours), and a copy of the tree with a forbidden import in it
fails them — so the check can fail. ``scripts/fix_imports.py`` rewrites what a merge brings back."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "flows", "storage")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports is not installed: pip install -e '.[test]'"
    # PYTHONPATH first: the checked tree's packages win over the editable install of the real ones.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([exe, "--no-cache", "--config", str(cwd / "pyproject.toml")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold() -> None:
    r = _lint_imports(ROOT)
    assert r.returncode == 0, (
        f"{r.stdout}\n{r.stderr}\nA forbidden import (see the broken contract above). A flow importing bot.*: "
        "run `python scripts/fix_imports.py`, or add the helper to flows/api.py and its contract line.")
    assert "0 broken" in r.stdout


def _copy_tree(dst: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    for pkg in PACKAGES:
        for src in (ROOT / pkg).rglob("*.py"):
            if "__pycache__" in src.parts:
                continue
            target = dst / src.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)


@pytest.mark.parametrize(("module", "line", "contract"), [
    # a flow reaching past flows.api into the runtime
    ("flows/core.py", "from bot.text import normalize", "flows reach the runtime only through flows.api"),
    ("flows/memorial/roll.py", "from bot.dispatcher import Dispatcher", "flows reach the runtime only through"),
    # a helper handed on by flows.api that starts to pull in the transport
    ("bot/text.py", "import aiohttp", "a flow never sees aiohttp"),
    # storage reaching up
    ("storage/models.py", "from flows.api import Flow", "storage imports neither bot nor flows"),
    ("storage/outbox.py", "from bot.clock import to_local", "storage imports neither bot nor flows"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    _copy_tree(tmp_path)
    path = tmp_path / module
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition("from __future__ import annotations\n")
    path.write_text(head + sep + line + "\n" + rest if sep else line + "\n" + text, encoding="utf-8")
    r = _lint_imports(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    broken = r.stdout[r.stdout.index("Broken contracts"):]
    assert contract in broken, r.stdout
    assert module.removesuffix(".py").replace("/", ".") in broken or "flows" in broken


def _fix_imports():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fix_imports", ROOT / "scripts" / "fix_imports.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fix_imports"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_fix_imports_reads_the_surface_from_the_contract() -> None:
    fix = _fix_imports()
    surface = fix.read_surface(ROOT)
    assert (surface.runtime, surface.flows, surface.module) == ("bot", "flows", "flows.api")
    assert {"bot.text", "bot.clock", "bot.links", "bot.config", "bot.yamlfile"} <= surface.allowed
    import flows.api

    assert surface.exports == set(flows.api.__all__)
    assert all(hasattr(flows.api, name) for name in flows.api.__all__)


def test_fix_imports_rewrites_a_merged_flow_and_lists_what_it_cannot() -> None:
    fix = _fix_imports()
    surface = fix.read_surface(ROOT)
    x = ".".join(("services", "extra"))  # spelled apart, so that the check of the whole tree below does not read it here
    src = (
        "from __future__ import annotations\n\n"
        "from bot.clock import fmt_local\n"
        "from bot.text import (\n    clip,\n    plain_text as _p,\n)  # why\n"
        "from bot.dispatcher import Dispatcher\n"
        "from bot.text import not_a_helper\n"
        "import bot.links\n"
        "from flows.api import Context\n\n\n"
        "def f(ctx: Context) -> None:\n"
        "    from bot.intents import light_normalize\n"
        f"    m = ctx.{x}.get(\"matcher\")\n"
        f"    q = ctx.{x}[\"qa_engine\"]\n"
        f"    w = ctx.{x}[WORDS]\n"
        "    v = ctx.inbound.extra[\"voice\"]\n"
    )
    r = fix.rewrite(src, surface, "flows/x.py")
    assert "from flows.api import fmt_local\n" in r.text
    assert "from flows.api import clip, plain_text as _p  # why\n" in r.text
    assert "    from flows.api import light_normalize\n" in r.text
    assert "m = ctx.services.matcher\n" in r.text and "q = ctx.services.qa_engine\n" in r.text
    assert 'ctx.inbound.extra["voice"]' in r.text  # a message's fields are not services
    for kept in ("from bot.dispatcher import Dispatcher", "from bot.text import not_a_helper", "import bot.links",
                 f"ctx.{x}[WORDS]"):
        assert kept in r.text
    problems = "\n".join(r.problems)
    assert "flows/x.py:8: bot.dispatcher is not part of flows.api" in problems
    assert "flows/x.py:9: not_a_helper from bot.text not exported by flows.api" in problems
    assert "flows/x.py:10: `import bot.links`" in problems
    assert "flows/x.py:18: Services has no string-keyed extras" in problems
    assert len(r.problems) == 4
    # outside the flows layer only the service lookups change: the runtime imports its own modules
    r = fix.rewrite(src, surface, "bot/x.py", imports=False)
    assert "from bot.clock import fmt_local" in r.text and "ctx.services.matcher" in r.text


def test_no_flow_is_left_to_rewrite() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fix_imports.py"), "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
